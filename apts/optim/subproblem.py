r"""The trust-region subproblem min_p gᵀp + ½pᵀBp s.t. ‖p‖₂ ≤ Δ.

Second order (B an :class:`~apts.optim.lsr1.LSR1`): the orthonormal-basis SR1 (OBS)
method of Brust, Erway & Marcia (Comput. Optim. Appl. 66, 2017), solved exactly.
With B = P∥ diag(λ) P∥ᵀ + γ(I − P∥P∥ᵀ) (see :meth:`LSR1.spectrum`), g∥ = P∥ᵀg and
‖g⊥‖² = ‖g‖² − ‖g∥‖², the solution is p(σ*) where

.. math::
    p(\sigma) = -P_\parallel(\Lambda + \sigma I)^{-1} g_\parallel
                - \frac{g - P_\parallel g_\parallel}{\gamma + \sigma},\qquad
    \|p(\sigma)\|^2 = \sum_j \frac{g_{\parallel j}^2}{(\lambda_j + \sigma)^2}
                    + \frac{\|g_\perp\|^2}{(\gamma + \sigma)^2},

and σ* ≥ max(0, −λ_min) is the Lagrange multiplier of (B + σ*I)p = −g with
B + σ*I ⪰ 0 and σ*(Δ − ‖p‖) = 0 (Moré & Sorensen):

* B ≻ 0 and ‖B⁻¹g‖ ≤ Δ: σ* = 0, p = −B⁻¹g (interior Newton step);
* otherwise σ* solves the secular equation 1/‖p(σ)‖ − 1/Δ = 0 by Newton's method
  (safeguarded by bisection), started left of the root where 1/‖p‖ is concave,
  so the iteration increases monotonically;
* hard case (λ_min < 0, g ⟂ its eigenspace, ‖p(−λ_min)‖ < Δ):
  p = p(−λ_min) + τz, z a unit eigenvector of λ_min, ‖p‖ = Δ.

Only inner products of n-vectors with Ψ are needed: the n-sized work is one
matrix–vector product Ψg, one dot gᵀg, one product p = αg + Ψᵀβ and one norm ‖p‖
(a safeguard: p is pulled back onto the ball if rounding put it outside); everything
else is O(m³) float64 algebra on the host. First order (``hess=None``, B = 0):
p = −Δg/‖g‖, pred = Δ‖g‖.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .lsr1 import LSR1, LSR1Spectrum

__all__ = ["SubproblemResult", "solve_subproblem", "solve_subproblem_detailed"]

_F64 = torch.float64
_CPU = torch.device("cpu")

# Relative accuracy of ‖p(σ*)‖ = Δ on the boundary.
_SECULAR_RTOL = 1e-13
_MAX_ITER = 200
# Eigenvalues within this fraction of max|λ| of λ_min form its eigenspace.
_EIG_RTOL = 1e-12


@dataclass
class SubproblemResult:
    """Solution of the TR subproblem and diagnostics.

    Attributes:
        p: the step (same shape, dtype and device as g).
        pred: predicted reduction −(gᵀp + ½pᵀBp) ≥ 0 (float; nan when g is non-finite).
        sigma: Lagrange multiplier σ*, (B + σ*I)p = −g (first order: ‖g‖/Δ).
        step_norm: ‖p‖ (≤ Δ; measured on p with second order and a non-empty memory).
        interior: σ* = 0 (unconstrained Newton step inside the ball).
        hard_case: the hard case was taken (p = p(−λ_min) + τz).
        lambda_min: smallest eigenvalue of B (0 for first order).
        iterations: Newton/bisection iterations on the secular equation.
    """

    p: Tensor
    pred: float
    sigma: float
    step_norm: float
    interior: bool = False
    hard_case: bool = False
    lambda_min: float = 0.0
    iterations: int = 0


def solve_subproblem(g: Tensor, hess: LSR1 | None, radius: float) -> tuple[Tensor, float]:
    """Solve min gᵀp + ½pᵀBp s.t. ‖p‖ ≤ radius; return ``(p, pred)``.

    ``hess`` is an :class:`LSR1` (exact OBS solve) or None (first order, B = 0).
    ``pred = −(gᵀp + ½pᵀBp) ≥ 0`` is a Python float. See :func:`solve_subproblem_detailed`.
    """
    res = solve_subproblem_detailed(g, hess, radius)
    return res.p, res.pred


def solve_subproblem_detailed(g: Tensor, hess: LSR1 | None, radius: float) -> SubproblemResult:
    """As :func:`solve_subproblem`, returning σ*, ‖p‖ and flags too.

    Cost O(n·m + m³): one product Ψg (+ gᵀg), one product p = αg + Ψᵀβ, one norm of p;
    two host syncs.
    """
    radius = float(radius)
    if not (math.isfinite(radius) and radius > 0.0):
        raise ValueError(f"radius must be positive and finite, got {radius}")
    g1 = g.detach().reshape(-1)
    if hess is None:
        return _first_order(g, g1, radius)
    spec = hess.spectrum()
    gg, a = _project(g1, spec)
    if gg == 0.0 or not math.isfinite(gg):
        return _degenerate(g, gg)
    r = len(spec.lam)
    has_perp = g1.numel() > r  # the γ-eigenspace (complement of span Ψ) is non-empty
    gperp2 = max(gg - sum(x * x for x in a), 0.0)
    eps = torch.finfo(g1.dtype).eps
    sol = _solve_eig(a, spec.lam, spec.gamma, gperp2, has_perp, radius, eps)
    p, pred, pn = _assemble(g1, spec, a, sol, radius)
    return SubproblemResult(
        p=p.reshape(g.shape),
        pred=pred,
        sigma=sol.sigma,
        step_norm=pn,
        interior=sol.interior,
        hard_case=sol.hard_case,
        lambda_min=sol.lmin,
        iterations=sol.iterations,
    )


def _first_order(g: Tensor, g1: Tensor, radius: float) -> SubproblemResult:
    """B = 0: the Cauchy step p = −Δg/‖g‖ of the linear model, pred = Δ‖g‖."""
    gg = float(torch.dot(g1, g1))
    if gg == 0.0 or not math.isfinite(gg):
        return _degenerate(g, gg)
    gn = math.sqrt(gg)
    return SubproblemResult(
        p=(g1 * (-radius / gn)).reshape(g.shape),
        pred=radius * gn,
        sigma=gn / radius,
        step_norm=radius,
    )


def _project(g1: Tensor, spec: LSR1Spectrum) -> tuple[float, list[float]]:
    """‖g‖² and g∥ = P∥ᵀg (empty when the memory is, or when g is not finite)."""
    psi = spec.psi
    if psi is None:
        return float(torch.dot(g1, g1)), []
    k = psi.shape[0]
    if psi.shape[1] != g1.numel():
        raise ValueError(f"g has {g1.numel()} entries, the L-SR1 memory {psi.shape[1]}")
    buf = torch.empty(k + 1, dtype=psi.dtype, device=psi.device)
    torch.mv(psi, g1, out=buf[:k])
    torch.dot(g1, g1, out=buf[k])
    h = buf.to(device=_CPU, dtype=_F64)  # the one host sync
    gg = float(h[k])
    return gg, (spec.coef.T @ h[:k]).tolist() if math.isfinite(gg) else []


def _assemble(
    g1: Tensor, spec: LSR1Spectrum, a: list[float], sol: _EigSolution, radius: float
) -> tuple[Tensor, float, float]:
    """The n-vector p = αg + P∥(c − αg∥) from the eigen-coordinates; returns p, pred, ‖p‖."""
    psi, pred = spec.psi, sol.pred
    if psi is None or not spec.lam:
        return g1 * sol.alpha, pred, sol.step_norm
    alpha = sol.alpha
    d = [c - alpha * x for c, x in zip(sol.c, a, strict=True)]
    beta = (spec.coef @ torch.tensor(d, dtype=_F64)).to(device=psi.device, dtype=psi.dtype)
    # p = αg + P∥(c − αg∥), i.e. P∥c on span(Ψ) and αg⊥ on its complement.
    p = torch.addmv(g1, psi.T, beta, beta=alpha)
    # P∥ = Ψᵀ·coef is orthonormal only to the accuracy of the Gram matrix ΨᵀΨ in the
    # vector dtype (≈ ε·cond(Ψ)²), so ‖p‖ from the small algebra can exceed Δ slightly:
    # measure it once (one pass) and pull p back onto the ball if needed.
    pn = float(torch.linalg.vector_norm(p))
    if pn > radius:
        f = radius / pn
        p.mul_(f)
        pred = max(-(f * sol.lin + 0.5 * f * f * sol.quad), 0.0)
        pn = radius
    return p, pred, pn


def _degenerate(g: Tensor, gg: float) -> SubproblemResult:
    # g = 0: p = 0 is optimal and predicts nothing. Non-finite g: no step, pred = nan,
    # which every caller treats as a rejection.
    pred = 0.0 if gg == 0.0 else math.nan
    sigma = 0.0 if gg == 0.0 else math.nan
    return SubproblemResult(p=torch.zeros_like(g), pred=pred, sigma=sigma, step_norm=0.0)


@dataclass
class _EigSolution:
    sigma: float
    c: list[float]  # coordinates of p along the r eigenvectors in span(Ψ)
    alpha: float  # p's component on the complement is α·g⊥
    pred: float
    step_norm: float
    interior: bool
    hard_case: bool
    lmin: float
    iterations: int
    lin: float  # gᵀp
    quad: float  # pᵀBp


def _norm2(sigma: float, w: list[float], lam: list[float]) -> float:
    return sum(wj / (lj + sigma) ** 2 for wj, lj in zip(w, lam, strict=True) if wj > 0.0)


def _solve_eig(
    a: list[float],
    lam: tuple[float, ...],
    gamma: float,
    gperp2: float,
    has_perp: bool,
    delta: float,
    eps: float,
) -> _EigSolution:
    """The subproblem in eigen-coordinates (float64 scalars, r ≤ m components)."""
    r = len(lam)
    lams = list(lam) + ([gamma] if has_perp else [])
    w = [x * x for x in a] + ([gperp2] if has_perp else [])
    m = _multiplier(lam, lams, w, delta, eps)
    c = [0.0] * r
    for j in range(r):
        if j not in m.excluded and m.w[j] > 0.0:
            c[j] = -a[j] / (lam[j] + m.sigma)
    alpha = -1.0 / (gamma + m.sigma)
    if m.hard:
        c[m.j0] = -m.tau if a[m.j0] > 0.0 else m.tau  # the sign with gᵀz·τ ≤ 0
    pn2 = sum(x * x for x in c) + (alpha * alpha * gperp2 if has_perp else 0.0)
    pn = math.sqrt(pn2)
    if pn > delta:  # rounding on the boundary: scale back inside exactly
        f = delta / pn
        c = [x * f for x in c]
        alpha *= f
        pn = delta
    lin = sum(x * y for x, y in zip(a, c, strict=True))
    quad = sum(lj * x * x for lj, x in zip(lam, c, strict=True))
    if has_perp:
        lin += alpha * gperp2
        quad += gamma * alpha * alpha * gperp2
    pred = max(-(lin + 0.5 * quad), 0.0)
    return _EigSolution(
        m.sigma, c, alpha, pred, pn, m.interior, m.hard, min(lams), m.iters, lin, quad
    )


@dataclass
class _Multiplier:
    sigma: float  # σ*
    w: list[float]  # squared coordinates of g, with the excluded ones zeroed
    excluded: list[int]  # span components whose weight is rounding noise (hard case)
    interior: bool = False
    hard: bool = False
    j0: int = -1  # hard case: the λ_min eigenvector z filled along
    tau: float = 0.0  # hard case: the length along z
    iters: int = 0


def _multiplier(
    lam: tuple[float, ...], lams: list[float], w: list[float], delta: float, eps: float
) -> _Multiplier:
    """σ*: 0 for an interior Newton step, −λ_min in the hard case, else the root of the
    secular equation (Moré & Sorensen)."""
    r, lmin, d2 = len(lam), min(lams), delta * delta
    if lmin > 0.0 and _norm2(0.0, w, lams) <= d2:
        return _Multiplier(0.0, w, [], interior=True)  # −B⁻¹g is inside the ball
    lo = max(0.0, -lmin)
    if r and lmin <= 0.0:
        scale = max(abs(v) for v in lams)
        J = [j for j in range(r) if lam[j] <= lmin + _EIG_RTOL * scale]
        # g∥ along the λ_min eigenspace can only be resolved to ~√ε·‖g‖ (float32
        # vectors, conditioning of Ψ); below that it is treated as exactly zero.
        if sum(w[j] for j in J) <= eps * sum(w):
            w = [0.0 if j in J else wj for j, wj in enumerate(w)]
            n2 = _norm2(lo, w, lams)
            if n2 < d2 and lmin < 0.0:  # hard case: fill up to the boundary along z
                return _Multiplier(lo, w, J, hard=True, j0=J[0], tau=math.sqrt(d2 - n2))
            if n2 < d2:  # B ⪰ 0 singular, g ⟂ null space: −B⁺g is inside the ball
                return _Multiplier(lo, w, J, interior=True)
            sigma, iters = _secular(w, lams, delta, lo)
            return _Multiplier(sigma, w, J, iters=iters)
    sigma, iters = _secular(w, lams, delta, lo)
    return _Multiplier(sigma, w, [], iters=iters)


def _secular(w: list[float], lams: list[float], delta: float, lo: float) -> tuple[float, int]:
    """σ > lo with ‖p(σ)‖ = Δ: Newton on φ(σ) = 1/‖p(σ)‖ − 1/Δ with a bisection bracket.

    ‖p(σ)‖ ≥ √wⱼ/(λⱼ + σ) for each j gives the left start σ₀ = max(lo, maxⱼ √wⱼ/Δ − λⱼ)
    (φ(σ₀) ≤ 0); ‖p(σ)‖ ≤ √Σw/(min λ + σ) gives the right end of the bracket.
    """
    pos = [j for j, wj in enumerate(w) if wj > 0.0]
    if not pos:
        return lo, 0
    wsum = sum(w[j] for j in pos)
    sigma = max([lo] + [math.sqrt(w[j]) / delta - lams[j] for j in pos])
    left = sigma
    right = max(math.sqrt(wsum) / delta - min(lams[j] for j in pos), sigma)
    it = 0
    for it in range(1, _MAX_ITER + 1):  # noqa: B007 (it is returned)
        n2 = 0.0
        q = 0.0
        for j in pos:
            t = 1.0 / (lams[j] + sigma)
            wt2 = w[j] * t * t
            n2 += wt2
            q += wt2 * t
        pn = math.sqrt(n2)
        if abs(pn - delta) <= _SECULAR_RTOL * delta:
            break
        if pn > delta:
            left = sigma
        else:
            right = sigma
        # Newton step for φ: σ + ‖p‖²(‖p‖ − Δ)/(Δ·Σwⱼ/(λⱼ+σ)³).
        new = sigma + n2 * (pn - delta) / (delta * q)
        if not (left < new < right) or not math.isfinite(new):
            new = 0.5 * (left + right)
        if new == sigma or right - left <= 4.0 * math.ulp(max(abs(left), abs(right))):
            break
        sigma = new
    return sigma, it
