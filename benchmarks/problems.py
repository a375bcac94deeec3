r"""Classic smooth unconstrained test problems as torch functions.

Most are from Moré, Garbow & Hillstrom, "Testing unconstrained optimization software",
ACM TOMS 7(1), 1981 (MGH; the number is the problem's number there), written as in the
paper: residuals :math:`r_i(x)` and :math:`f(x) = \sum_i r_i(x)^2`, with the paper's
standard starting point :math:`x_0` and its published minimum :math:`f^*` (and minimiser
:math:`x^*` where the paper gives one). The chained Rosenbrock function is the other usual
n-dimensional generalisation of Rosenbrock's (consecutive instead of disjoint pairs; e.g.
scipy's ``rosen``): besides x* = (1, …, 1) it has a local minimiser near (−1, 1, …, 1)
for 4 ≤ n ≤ 7 (Kok & Sandrock, J. Phys. Chem. A 2009) and, numerically, beyond.

Each problem is a :class:`Problem`; ``problem.f(x)`` is differentiable with autograd, so
the gradient comes from ``backward()`` like a training loss. Use float64.
:func:`run_trust_region` drives :class:`~apts.optim.TrustRegion` on one through its
closure API (used by ``tests/test_classic.py`` and ``benchmarks/bench_classic.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from apts.optim import TrustRegion

__all__ = ["PROBLEMS", "Problem", "RunResult", "problem", "run_trust_region"]

F64 = torch.float64


@dataclass(frozen=True)
class Problem:
    """A test problem: ``f(x) = Σ residuals(x)²`` from ``x0``, published minimum ``f_star``.

    Attributes:
        name: short name (``"rosenbrock"``, ...). n: dimension. ref: where it comes from.
        residuals: ``x -> r(x)`` (1-D tensor), differentiable.
        start: ``n -> x0`` for the standard start (or another named start).
        f_star: the published minimum value. x_star: the published minimiser (None where
            the paper gives none, or the minimiser is not unique).
        note: anything a reader of a result must know (other minimisers, ...).
        local_minima: (f, rtol) of known other (local) minimisers, rtol the relative
            precision of the published value.

    Convergence (:meth:`converged`): f − f* ≤ 1e-12 when f* = 0, else ≤ 1e-5·f* (the paper
    gives nonzero minima to about 6 digits); a listed local minimum (f_l, rtol) when
    |f − f_l| ≤ rtol·f_l.
    """

    name: str
    n: int
    ref: str
    residuals: Callable[[Tensor], Tensor]
    start: Callable[[int], list[float]]
    f_star: float
    x_star: Callable[[int], list[float]] | None = None
    note: str = ""
    local_minima: tuple[tuple[float, float], ...] = ()

    def f(self, x: Tensor) -> Tensor:
        """The objective Σ rᵢ(x)² (a 0-d tensor)."""
        r = self.residuals(x)
        return torch.dot(r, r)

    def x0(self, dtype: torch.dtype = F64) -> Tensor:
        return torch.tensor(self.start(self.n), dtype=dtype)

    def xstar(self, dtype: torch.dtype = F64) -> Tensor | None:
        return None if self.x_star is None else torch.tensor(self.x_star(self.n), dtype=dtype)

    def with_start(self, label: str, start: Callable[[int], list[float]]) -> Problem:
        """The same problem from another starting point (its name gets ``@label``)."""
        return replace(self, name=f"{self.name}@{label}", start=start)

    def converged(self, f: float) -> str | None:
        """``"global"`` at the published minimum, ``"local"`` at a listed local one, else None."""
        if f - self.f_star <= (1e-12 if self.f_star == 0.0 else 1e-5 * self.f_star):
            return "global"
        if any(abs(f - fl) <= rtol * fl for fl, rtol in self.local_minima):
            return "local"
        return None


def _stack(*parts: Tensor) -> Tensor:
    return torch.stack(parts) if parts[0].dim() == 0 else torch.cat(parts)


# -------------------------------------------------------------------------- residuals
def _rosenbrock(x: Tensor) -> Tensor:  # MGH 1 (n = 2) and 21 (extended, n even)
    odd, even = x[0::2], x[1::2]
    return torch.stack([10.0 * (even - odd**2), 1.0 - odd], dim=1).reshape(-1)


def _chained_rosenbrock(x: Tensor) -> Tensor:
    return torch.cat([10.0 * (x[1:] - x[:-1] ** 2), 1.0 - x[:-1]])


def _freudenstein_roth(x: Tensor) -> Tensor:  # MGH 2
    x1, x2 = x[0], x[1]
    return _stack(
        -13.0 + x1 + ((5.0 - x2) * x2 - 2.0) * x2,
        -29.0 + x1 + ((x2 + 1.0) * x2 - 14.0) * x2,
    )


def _brown_badly_scaled(x: Tensor) -> Tensor:  # MGH 4
    x1, x2 = x[0], x[1]
    return _stack(x1 - 1e6, x2 - 2e-6, x1 * x2 - 2.0)


def _beale(x: Tensor) -> Tensor:  # MGH 5
    x1, x2 = x[0], x[1]
    return _stack(1.5 - x1 * (1 - x2), 2.25 - x1 * (1 - x2**2), 2.625 - x1 * (1 - x2**3))


def _helical_valley(x: Tensor) -> Tensor:  # MGH 7
    x1, x2, x3 = x[0], x[1], x[2]
    # θ = arctan(x2/x1)/(2π), plus 1/2 for x1 < 0 (the paper's branch, not atan2's)
    theta = torch.atan(x2 / x1) / (2 * math.pi) + 0.5 * (x1 < 0).to(x.dtype)
    return _stack(10.0 * (x3 - 10.0 * theta), 10.0 * (torch.sqrt(x1**2 + x2**2) - 1.0), x3)


def _box3d(x: Tensor) -> Tensor:  # MGH 12, m = 10
    t = 0.1 * torch.arange(1, 11, dtype=x.dtype, device=x.device)
    return torch.exp(-t * x[0]) - torch.exp(-t * x[1]) - x[2] * (torch.exp(-t) - torch.exp(-10 * t))


def _powell_singular(x: Tensor) -> Tensor:  # MGH 13 (n = 4) and 22 (extended, n % 4 == 0)
    a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
    r = [a + 10.0 * b, math.sqrt(5.0) * (c - d), (b - 2.0 * c) ** 2, math.sqrt(10.0) * (a - d) ** 2]
    return torch.stack(r, dim=1).reshape(-1)


def _wood(x: Tensor) -> Tensor:  # MGH 14
    x1, x2, x3, x4 = x[0], x[1], x[2], x[3]
    return _stack(
        10.0 * (x2 - x1**2),
        1.0 - x1,
        math.sqrt(90.0) * (x4 - x3**2),
        1.0 - x3,
        math.sqrt(10.0) * (x2 + x4 - 2.0),
        (x2 - x4) / math.sqrt(10.0),
    )


def _penalty1(x: Tensor) -> Tensor:  # MGH 23
    return torch.cat([math.sqrt(1e-5) * (x - 1.0), (torch.dot(x, x) - 0.25).reshape(1)])


def _variably_dimensioned(x: Tensor) -> Tensor:  # MGH 25
    j = torch.arange(1, x.numel() + 1, dtype=x.dtype, device=x.device)
    s = torch.dot(j, x - 1.0).reshape(1)
    return torch.cat([x - 1.0, s, s**2])


def _trigonometric(x: Tensor) -> Tensor:  # MGH 26
    n = x.numel()
    i = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    c = torch.cos(x)
    return n - c.sum() + i * (1.0 - c) - torch.sin(x)


def _discrete_boundary_value(x: Tensor) -> Tensor:  # MGH 28
    n = x.numel()
    h = 1.0 / (n + 1)
    t = h * torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    z = x.new_zeros(1)
    left, right = torch.cat([z, x[:-1]]), torch.cat([x[1:], z])
    return 2.0 * x - left - right + 0.5 * h**2 * (x + t + 1.0) ** 3


def _broyden_tridiagonal(x: Tensor) -> Tensor:  # MGH 30
    z = x.new_zeros(1)
    left, right = torch.cat([z, x[:-1]]), torch.cat([x[1:], z])
    return (3.0 - 2.0 * x) * x - left - 2.0 * right + 1.0


# ----------------------------------------------------------------------------- starts
def _repeat(*values: float) -> Callable[[int], list[float]]:
    return lambda n: [values[i % len(values)] for i in range(n)]


PROBLEMS: tuple[Problem, ...] = (
    Problem("rosenbrock", 2, "MGH 1", _rosenbrock, _repeat(-1.2, 1.0), 0.0, _repeat(1.0)),
    Problem(
        "freudenstein_roth", 2, "MGH 2", _freudenstein_roth, _repeat(0.5, -2.0), 0.0,
        _repeat(5.0, 4.0),
        note="local minimiser (11.41..., -0.8968...) with f = 48.9842...",
        local_minima=((48.98425367924, 1e-11),),
    ),
    Problem(
        "brown_badly_scaled", 2, "MGH 4", _brown_badly_scaled, _repeat(1.0), 0.0,
        _repeat(1e6, 2e-6),
    ),
    Problem("beale", 2, "MGH 5", _beale, _repeat(1.0), 0.0, _repeat(3.0, 0.5)),
    Problem(
        "helical_valley", 3, "MGH 7", _helical_valley, _repeat(-1.0, 0.0, 0.0), 0.0,
        _repeat(1.0, 0.0, 0.0),
    ),
    Problem(
        "box3d", 3, "MGH 12, m = 10", _box3d, _repeat(0.0, 10.0, 20.0), 0.0, None,
        note="f = 0 at (1, 10, 1), (10, 1, -1) and on the line x1 = x2, x3 = 0",
    ),
    Problem(
        "powell_singular", 4, "MGH 13", _powell_singular, _repeat(3.0, -1.0, 0.0, 1.0), 0.0,
        _repeat(0.0), note="singular Hessian at x*: linear convergence",
    ),
    Problem("wood", 4, "MGH 14", _wood, _repeat(-3.0, -1.0), 0.0, _repeat(1.0)),
    Problem(
        "penalty1", 10, "MGH 23", _penalty1, lambda n: [float(j) for j in range(1, n + 1)],
        7.08765e-5, None,
    ),
    Problem(
        "variably_dimensioned", 10, "MGH 25", _variably_dimensioned,
        lambda n: [1.0 - j / n for j in range(1, n + 1)], 0.0, _repeat(1.0),
    ),
    Problem(
        "trigonometric", 10, "MGH 26", _trigonometric, lambda n: [1.0 / n] * n, 0.0, None,
        note="other local minimisers, e.g. f = 2.79506e-5 for n = 10",
        local_minima=((2.79506e-5, 1e-5),),
    ),
    Problem(
        "discrete_boundary_value", 10, "MGH 28", _discrete_boundary_value,
        lambda n: [(j / (n + 1)) * (j / (n + 1) - 1.0) for j in range(1, n + 1)], 0.0,
    ),
    Problem(
        "broyden_tridiagonal", 10, "MGH 30", _broyden_tridiagonal, _repeat(-1.0), 0.0
    ),
    Problem(
        "extended_rosenbrock", 100, "MGH 21", _rosenbrock, _repeat(-1.2, 1.0), 0.0,
        _repeat(1.0),
    ),
    Problem(
        "extended_powell", 100, "MGH 22", _powell_singular, _repeat(3.0, -1.0, 0.0, 1.0), 0.0,
        _repeat(0.0), note="singular Hessian at x*: linear convergence",
    ),
    Problem(
        "chained_rosenbrock", 100, "not in MGH", _chained_rosenbrock,
        _repeat(-1.2, 1.0), 0.0, _repeat(1.0),
        note="also a local minimiser near (-1, 1, ..., 1)",
    ),
)  # fmt: skip


def problem(name: str) -> Problem:
    """The problem called ``name`` (a name of :data:`PROBLEMS`, optionally ``@zero``: the
    same problem started from the origin)."""
    base, _, start = name.partition("@")
    found = {p.name: p for p in PROBLEMS}.get(base)
    if found is None:
        raise ValueError(f"unknown problem {base!r}; choose one of: {', '.join(_names())}")
    if start == "zero":
        return found.with_start("zero", _repeat(0.0))
    if start:
        raise ValueError(f"unknown start {start!r} of {base!r}; only '@zero' is defined")
    return found


def _names() -> list[str]:
    return [p.name for p in PROBLEMS]


@dataclass
class RunResult:
    """``iterations`` optimizer steps, ``evaluations`` closure calls (f and ∇f), the final
    ``f`` and ``x``, and ``converged`` (see :meth:`Problem.converged`; None: budget spent)."""

    iterations: int
    evaluations: int
    f: float
    x: Tensor
    converged: str | None


def run_trust_region(prob: Problem, budget: int, **options) -> RunResult:
    """Minimise ``prob`` from its start with ``TrustRegion([x], **options)`` (float64), one
    ``step(closure)`` at a time, until :meth:`Problem.converged` or ``budget`` steps. Each
    step evaluates the closure twice (the current point again, as with mini-batches, and
    the trial point)."""
    x = torch.nn.Parameter(prob.x0())
    opt = TrustRegion([x], **options)
    calls = 0

    def closure() -> Tensor:
        nonlocal calls
        calls += 1
        opt.zero_grad()
        loss = prob.f(x)
        loss.backward()
        return loss

    f, converged, steps = math.nan, None, 0
    while steps < budget and converged is None:
        f = float(opt.step(closure))
        steps += 1
        converged = prob.converged(f)
    return RunResult(steps, calls, f, x.detach().clone(), converged)
