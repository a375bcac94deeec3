r"""Trust-region iteration (functional core) and the :class:`TrustRegion` optimizer.

One TR iteration on an objective φ over a flat vector x with radius Δ and model
q(p) = φ(x) + gᵀp + ½pᵀBp:

1. solve min q(p) s.t. ‖p‖ ≤ Δ (:func:`~apts.optim.subproblem.solve_subproblem`);
2. pred = q(0) − q(p), ared = φ(x) − φ(x + p), ρ = ared/pred;
3. ρ < η₁ or ared/pred not finite: reject, Δ ← max(dec·Δ, Δ_min);
   ρ > η₂ and ‖p‖ ≥ 0.9Δ: accept, Δ ← min(inc·Δ, Δ_max); otherwise accept, Δ kept;
4. on acceptance update the L-SR1 memory with (s, y) = (p, ∇φ(x + p) − ∇φ(x)).

A non-finite loss or gradient at the trial point is a rejection, never a crash.
:func:`tr_iteration` does this for any ``fg(x) -> (φ(x), ∇φ(x))`` — APTS reuses it for
its local and global iterations; :class:`TrustRegion` wraps it as a torch optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor
from torch.optim import Optimizer

from .flat import check_flat_params, flat_grad, flat_params, num_params, set_flat_params_
from .lsr1 import LSR1
from .subproblem import solve_subproblem_detailed

__all__ = ["TRDecision", "TRResult", "TRRules", "TrustRegion", "judge_trial", "tr_iteration"]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class TRDecision(NamedTuple):
    """Outcome of the acceptance test: ``accepted, radius, rho = rules.decide(...)``."""

    accepted: bool
    radius: float
    rho: float


@dataclass(frozen=True)
class TRRules:
    """Acceptance test and radius update of a trust-region method (APTS.md, step 3).

    Attributes:
        radius: initial radius Δ₀ (used by callers that start from the rules).
        min_radius, max_radius: Δ stays in [min_radius, max_radius].
        eta1: reject when ρ < η₁. eta2: grow when ρ > η₂ and the step reached the boundary.
        dec: shrink factor on rejection. inc: growth factor.
        boundary: a step with ‖p‖ ≥ boundary·Δ counts as on the boundary (0.9).
        min_pred: reject when pred ≤ min_pred (the model must predict a decrease; APTS's
            global test uses 1e-12).
    """

    radius: float = 0.1
    min_radius: float = 1e-4
    max_radius: float = 1.0
    eta1: float = 0.25
    eta2: float = 0.75
    dec: float = 0.5
    inc: float = 2.0
    boundary: float = 0.9
    min_pred: float = 0.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            _number(name, getattr(self, name))
        if not 0.0 <= self.min_radius <= self.max_radius:
            raise ValueError(
                f"need 0 <= min_radius <= max_radius, got {self.min_radius}, {self.max_radius}"
            )
        if not (self.radius > 0.0 and self.min_radius <= self.radius <= self.max_radius):
            raise ValueError(
                f"radius must be positive and in [min_radius, max_radius], got {self.radius}"
            )
        if not 0.0 <= self.eta1 <= self.eta2 <= 1.0:
            raise ValueError(f"need 0 <= eta1 <= eta2 <= 1, got {self.eta1}, {self.eta2}")
        if not 0.0 < self.dec < 1.0:
            raise ValueError(f"dec must be in (0, 1), got {self.dec}")
        if not self.inc >= 1.0:
            raise ValueError(f"inc must be >= 1, got {self.inc}")
        if not 0.0 < self.boundary <= 1.0:
            raise ValueError(f"boundary must be in (0, 1], got {self.boundary}")
        if not self.min_pred >= 0.0:
            raise ValueError(f"min_pred must be >= 0, got {self.min_pred}")

    def shrink(self, radius: float) -> float:
        """Radius after a rejection: max(dec·Δ, Δ_min)."""
        return max(self.dec * radius, self.min_radius)

    def decide(self, ared: float, pred: float, step_norm: float, radius: float) -> TRDecision:
        """Accept or reject a step and update the radius (ρ = ared/pred, nan if undefined)."""
        ared, pred = float(ared), float(pred)
        if not (math.isfinite(ared) and math.isfinite(pred)) or pred <= self.min_pred:
            return TRDecision(False, self.shrink(radius), math.nan)
        rho = ared / pred
        if not math.isfinite(rho) or rho < self.eta1:
            return TRDecision(False, self.shrink(radius), rho)
        if rho > self.eta2 and step_norm >= self.boundary * radius:
            return TRDecision(True, min(self.inc * radius, self.max_radius), rho)
        return TRDecision(True, radius, rho)


def judge_trial(
    rules: TRRules, f: Any, f_trial: Any, g_trial: Tensor, pred: Any, step_norm: Any, radius: float
) -> tuple[TRDecision, float, float, float]:
    """The acceptance test of a trial point: ``rules.decide`` on ρ = (f − f_trial)/pred, and a
    rejection when the trial gradient is not finite (a finite loss with a non-finite gradient
    is still no place to move to). Values may be floats or 0-d tensors on any device; they are
    read with one host sync, in float64. Returns the decision, ared, f_trial and pred as
    floats."""
    vals = [f, f_trial, pred, step_norm, torch.isfinite(g_trial).all()]
    f, ft, pred, step_norm, finite = torch.stack(
        [torch.as_tensor(v, dtype=torch.float64, device=g_trial.device) for v in vals]
    ).tolist()
    ared = f - ft
    decision = rules.decide(ared, pred, step_norm, radius)
    if decision.accepted and not finite:
        decision = TRDecision(False, rules.shrink(radius), decision.rho)
    return decision, ared, ft, pred


@dataclass
class TRResult:
    """Result of :func:`tr_iteration`.

    ``x, f, g`` are the new point, its objective value and gradient: the trial point's on
    acceptance, the very objects passed in on rejection. ``radius`` is the updated radius.
    Diagnostics: ``accepted, rho, pred, ared, step_norm, f_trial`` (float φ(x + p), maybe
    non-finite), ``step`` (the subproblem solution p), ``sigma`` (its Lagrange multiplier),
    ``radius_used`` (the radius of the subproblem) and ``hess_updated`` (whether the L-SR1
    memory stored the pair).
    """

    x: Tensor
    f: Any
    g: Tensor
    radius: float
    accepted: bool
    rho: float
    pred: float
    ared: float
    step_norm: float
    f_trial: float
    step: Tensor
    sigma: float
    radius_used: float
    hess_updated: bool = False


FG = Callable[[Tensor], tuple[Any, Tensor]]


def tr_iteration(
    fg: FG,
    x: Tensor,
    f: Any,
    g: Tensor,
    radius: float,
    hess: LSR1 | None,
    rules: TRRules,
    *,
    radius_cap: float | None = None,
    update_rejected: bool = False,
) -> TRResult:
    """One trust-region iteration from (x, φ(x), ∇φ(x)) on the objective ``fg``.

    Args:
        fg: ``fg(x) -> (φ(x), ∇φ(x))`` on a flat vector (φ a float or 0-d tensor; any
            side effects such as writing x into a model are the caller's). Non-finite values
            are a rejection. It is called exactly once (also when the step is degenerate,
            so collective communication inside ``fg`` stays in step across ranks).
        x, f, g: current point, φ(x), ∇φ(x) (1-D tensors of equal size; f float or tensor).
        radius: current radius Δ.
        hess: the L-SR1 model (second order; updated in place on acceptance) or None
            (first order, B = 0).
        rules: acceptance test and radius update (:class:`TRRules`; ``rules.radius`` is not
            used here).
        radius_cap: optional cap for this iteration, e.g. the distance to the edge of
            APTS's local ball: the subproblem and the rules then use Δ = min(radius, cap).
        update_rejected: also offer the pair of a rejected step to ``hess`` (as in Nocedal &
            Wright, Alg. 6.2). Off by default, as APTS.md updates on acceptance only; with
            updates on acceptance only, a wrong model at Δ = Δ_min is never corrected.

    Returns:
        :class:`TRResult`; on rejection ``x, f, g`` are the objects passed in (bit-identical).
    """
    delta = float(radius) if radius_cap is None else min(float(radius), float(radius_cap))
    sol = solve_subproblem_detailed(g, hess, delta)
    x_trial = x + sol.p
    f_trial, g_trial = fg(x_trial)
    (accepted, new_radius, rho), ared, ft, _ = judge_trial(
        rules, f, f_trial, g_trial, sol.pred, sol.step_norm, delta
    )
    common = {
        "radius": new_radius,
        "accepted": accepted,
        "rho": rho,
        "pred": sol.pred,
        "ared": ared,
        "step_norm": sol.step_norm,
        "f_trial": ft,
        "step": sol.p,
        "sigma": sol.sigma,
        "radius_used": delta,
    }
    if not accepted:
        updated = False
        if update_rejected and hess is not None and math.isfinite(ft):
            updated = hess.update(sol.p, g_trial - g)  # a non-finite pair is skipped there
        return TRResult(x=x, f=f, g=g, hess_updated=updated, **common)
    updated = hess.update(sol.p, g_trial - g) if hess is not None else False
    return TRResult(x=x_trial, f=f_trial, g=g_trial, hess_updated=updated, **common)


class Communicator(Protocol):
    """What :class:`TrustRegion` needs for data parallelism."""

    def all_reduce(self, tensor: Tensor, op: str = "mean") -> Tensor: ...


class TrustRegion(Optimizer):
    r"""Trust-region optimizer with an L-SR1 model (or a first-order linear model).

    Each :meth:`step` is one TR iteration on the closure's loss f with all parameters
    as one flat vector θ:

    .. math::
        p = \arg\min_{\|p\| \le \Delta} f(\theta) + g^T p + \tfrac12 p^T B p,\qquad
        \rho = \frac{f(\theta) - f(\theta + p)}{-(g^T p + \frac12 p^T B p)},

    accept θ ← θ + p when ρ ≥ η₁ (and f, ∇f finite there), update Δ by the TR rules
    (:class:`TRRules`), and feed (p, ∇f(θ+p) − ∇f(θ)) to the L-SR1 memory on acceptance.
    ``order="second"`` uses B = L-SR1 (exact OBS subproblem), ``order="first"`` B = 0
    (p = −Δg/‖g‖).

    Args:
        params: parameters (one group; one floating dtype and one device).
        radius: initial Δ. min_radius, max_radius: bounds on Δ.
        eta1, eta2, dec, inc: TR constants (see :class:`TRRules`).
        order: ``"second"`` (default) or ``"first"``.
        memory, gamma: L-SR1 memory m and γ (number > 0 or ``"auto"``), second order only.
        comm: optional communicator for data parallelism: after every closure evaluation
            the buffer [∇f (n), f (1)] is averaged with one ``comm.all_reduce(buf, op="mean")``
            (in place; its return value is used), so a step makes exactly two such calls.

    The current radius lives in ``param_groups[0]["radius"]`` (so it is saved by
    :meth:`state_dict`, which also carries the L-SR1 memory under the key ``"lsr1"``).
    After a step ``last_info`` holds its diagnostics (radius, radius_used, rho, accepted,
    pred, ared, step_norm, loss, loss_trial, sigma, hess_updated, memory, steps).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        radius: float = 0.1,
        min_radius: float = 1e-4,
        max_radius: float = 1.0,
        eta1: float = 0.25,
        eta2: float = 0.75,
        dec: float = 0.5,
        inc: float = 2.0,
        order: str = "second",
        memory: int = 5,
        gamma: float | str = 1e-3,
        comm: Communicator | None = None,
    ) -> None:
        TRRules(radius, min_radius, max_radius, eta1, eta2, dec, inc)  # validates
        if order not in ("first", "second"):
            raise ValueError(f"order must be 'first' or 'second', got {order!r}")
        hess = LSR1(memory, gamma)  # validates memory and gamma
        defaults = {
            "radius": float(radius),
            "min_radius": float(min_radius),
            "max_radius": float(max_radius),
            "eta1": float(eta1),
            "eta2": float(eta2),
            "dec": float(dec),
            "inc": float(inc),
            "order": order,
            "memory": memory,
            "gamma": gamma,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("TrustRegion supports a single parameter group")
        self._params: list[Tensor] = self.param_groups[0]["params"]
        self._dtype, self._device = check_flat_params(self._params)
        self._numel = num_params(self._params)
        self._hess: LSR1 | None = hess if order == "second" else None
        self.comm = comm
        self.last_info: dict[str, Any] = {}
        self._steps = 0

    @property
    def hess(self) -> LSR1 | None:
        """The L-SR1 memory (None for ``order="first"``)."""
        return self._hess

    def _rules(self) -> TRRules:
        gr = self.param_groups[0]
        return TRRules(
            radius=gr["radius"],
            min_radius=gr["min_radius"],
            max_radius=gr["max_radius"],
            eta1=gr["eta1"],
            eta2=gr["eta2"],
            dec=gr["dec"],
            inc=gr["inc"],
        )

    def _evaluate(self, closure: Callable[[], Any]) -> tuple[Tensor, Tensor]:
        """Run the closure at the current parameters; return (f, ∇f), averaged over ranks."""
        loss = closure()
        f = torch.as_tensor(loss).detach()
        if self.comm is None:
            return f, flat_grad(self._params)
        # One flat buffer [g, f]: a single collective per evaluation instead of one per tensor.
        buf = torch.empty(self._numel + 1, dtype=self._dtype, device=self._device)
        flat_grad(self._params, out=buf[: self._numel])
        buf[self._numel] = f.to(device=self._device, dtype=self._dtype)
        out = self.comm.all_reduce(buf, op="mean")
        buf = buf if out is None else out
        return buf[self._numel], buf[: self._numel]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any]) -> Tensor:  # type: ignore[override]
        """One TR iteration. Returns the loss at the point kept (a detached 0-d tensor).

        ``closure`` must zero the gradients, compute the loss, call ``backward()`` and
        return the loss (as for :class:`torch.optim.LBFGS`); it is called twice (current
        and trial point) with gradients enabled. After a rejection the parameters are
        bit-for-bit those before the step (``.grad`` holds the trial point's gradient).
        """
        if closure is None:
            raise ValueError("TrustRegion.step requires a closure")
        closure = torch.enable_grad()(closure)
        params = self._params
        x = flat_params(params)
        f, g = self._evaluate(closure)

        def fg(v: Tensor) -> tuple[Tensor, Tensor]:
            set_flat_params_(params, v)
            return self._evaluate(closure)

        group = self.param_groups[0]
        res = tr_iteration(fg, x, f, g, group["radius"], self._hess, self._rules())
        if not res.accepted:
            set_flat_params_(params, x)  # exact copy back: bit-identical parameters
        group["radius"] = res.radius
        self._steps += 1
        self.last_info = {
            "radius": res.radius,
            "radius_used": res.radius_used,
            "rho": res.rho,
            "accepted": res.accepted,
            "pred": res.pred,
            "ared": res.ared,
            "step_norm": res.step_norm,
            "loss": float(res.f),
            "loss_trial": res.f_trial,
            "sigma": res.sigma,
            "hess_updated": res.hess_updated,
            "memory": len(self._hess) if self._hess is not None else 0,
            "steps": self._steps,
        }
        return res.f

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state plus the L-SR1 memory (key ``"lsr1"``); the radius is in the group."""
        sd = super().state_dict()
        sd["lsr1"] = None if self._hess is None else self._hess.state_dict()
        sd["tr_steps"] = self._steps
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (n-vectors moved to the parameters' dtype/device)."""
        sd = dict(state_dict)
        lsr1 = sd.pop("lsr1", None)
        self._steps = int(sd.pop("tr_steps", 0))
        super().load_state_dict(sd)
        if self._hess is not None:
            if lsr1 is None:
                self._hess.reset()
            else:
                self._hess.load_state_dict(lsr1, device=self._device, dtype=self._dtype)
