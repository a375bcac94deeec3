r"""APTS variants beyond the paper (docs/APTS.md, "Variants"), each off by default.

Pure functions on APTS's per-rank state dict (``Optimizer.state[first parameter]``), so
that everything a variant remembers is saved and resumed with the optimizer:

- :func:`reference_loss`, :func:`remember_loss`: the non-monotone global test, ρ against
  the largest of the last W losses (Grippo, Lampariello & Lucidi 1986; Toint 1997);
- :func:`track_stall`: mini-batch growth when the global loss stalls (the authors' code,
  cruzas/DD4ML ``Trainer._adjust_batch_size``: grow |B| by 1.5 when the loss has not
  fallen by ``loss_tol`` = 1e-2 since the last check);
- :func:`adam_iteration`: a local iteration along a trust-region-scaled Adam direction
  (the authors' ``TRAdam``), judged by the local TR test;
- :func:`momentum_proposal`: heavy-ball momentum on the accepted global displacement,
  added to the trial point of the global test and judged by it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .lsr1 import LSR1
from .trust_region import TRResult, TRRules, judge_trial

__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "adam_iteration",
    "init_state",
    "momentum_proposal",
    "reference_loss",
    "remember_loss",
    "track_stall",
]

# Adam's published defaults (Kingma & Ba 2015), as in the authors' TRAdam: not tuned.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def init_state(st: dict[str, Any], group: dict[str, Any], like: Tensor) -> None:
    """The variants' entries of a fresh (or older) state, in their final shape: tensors in
    the parameters' dtype (torch casts a loaded state's tensors to it; a value that never
    leaves that dtype resumes bit for bit) of a fixed size, so that a fresh optimizer's
    state has the layout ``torch.distributed.checkpoint`` loads into."""
    scalars = {"dtype": like.dtype, "device": like.device}
    if "recent_losses" not in st:  # the last W − 1 losses, −inf where none yet
        st["recent_losses"] = torch.full((group["window"] - 1,), -math.inf, **scalars)
    if "batch_factor" not in st:
        st["batch_factor"] = torch.ones((), **scalars)
    if "stall" not in st:  # window sum, steps in it, previous window's mean
        st["stall"] = torch.tensor([0.0, 0.0, math.nan], **scalars)
    if group["momentum"] > 0.0 and "velocity" not in st:
        st["velocity"] = torch.zeros_like(like)
    if group["local_solver"] == "adam" and "local_exp_avg" not in st:
        st["local_exp_avg"] = torch.zeros_like(like)
        st["local_exp_avg_sq"] = torch.zeros_like(like)
        st["local_adam_steps"] = 0


# -- non-monotone global test ----------------------------------------------------------
def reference_loss(st: dict[str, Any], window: int, f_k: Tensor) -> Any:
    """The loss ρ is measured from: f_k itself for ``window`` = 1 (the monotone test, the
    very object passed in), else max(f_k, the last ``window`` − 1 iterates' losses)."""
    if window == 1:
        return f_k
    return torch.maximum(f_k, st["recent_losses"].max())


def remember_loss(st: dict[str, Any], window: int, f: Any) -> None:
    """Keep f(θ_{k+1}) (on its own mini-batch) among the last ``window`` − 1 losses."""
    if window > 1:
        recent = st["recent_losses"]
        recent.copy_(torch.cat([recent[1:], torch.as_tensor(f).reshape(1).to(recent)]))


# -- mini-batch growth -------------------------------------------------------------------
def track_stall(st: dict[str, Any], group: dict[str, Any], f_k: Any) -> bool:
    """Add f_k (the global loss at θ_k on a fresh mini-batch, an unbiased estimate of the
    training loss there) to the current window of ``growth_window`` steps. At a window's
    end, when its mean has not fallen by ``growth_tol`` below the previous window's,
    multiply ``batch_factor`` by ``batch_growth``. Returns whether it grew."""
    if group["batch_growth"] == 1.0:
        return False
    stall = st["stall"]
    stall[0] += torch.as_tensor(f_k).to(stall)
    stall[1] += 1
    if int(stall[1]) < group["growth_window"]:
        return False
    mean = stall[0] / stall[1]
    prev = float(stall[2])
    grew = math.isfinite(prev) and float(mean) > prev - group["growth_tol"]
    if grew:
        st["batch_factor"].mul_(group["batch_growth"])
    stall.copy_(torch.stack([torch.zeros_like(mean), torch.zeros_like(mean), mean]))
    return grew


# -- local phase along a TR-scaled Adam direction ----------------------------------------
def adam_iteration(
    st: dict[str, Any], fg, x: Tensor, f: Any, g: Tensor, radius: float, cap: float,
    rules: TRRules,
) -> TRResult:  # fmt: skip
    r"""One local iteration along Adam's direction d = m̂/(√v̂ + ε), scaled to the radius:
    p = −Δ·d/‖d‖ with Δ = min(radius, cap), judged by the TR test of the linear model
    (pred = −gᵀp; a direction that does not descend is a rejection). The moments m, v
    (of ∇m_i, this rank's own) live in ``st`` and persist across outer iterations."""
    b1, b2 = ADAM_BETAS
    st["local_adam_steps"] += 1
    t = st["local_adam_steps"]
    m = st["local_exp_avg"].mul_(b1).add_(g, alpha=1.0 - b1)
    v = st["local_exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1.0 - b2)
    d = (m / (1.0 - b1**t)) / (v / (1.0 - b2**t)).sqrt_().add_(ADAM_EPS)
    delta = min(float(radius), float(cap))
    dn = float(torch.linalg.vector_norm(d))
    p = d.mul_(-delta / dn) if dn > 0.0 and math.isfinite(dn) else torch.zeros_like(g)
    pred = -torch.dot(g, p)
    trial = x + p
    f_t, g_t = fg(trial)
    (accepted, new_radius, rho), ared, ft, pred_f = judge_trial(
        rules, f, f_t, g_t, pred, delta, delta
    )
    keep = (trial, f_t, g_t) if accepted else (x, f, g)
    return TRResult(
        x=keep[0], f=keep[1], g=keep[2], radius=new_radius, accepted=accepted, rho=rho,
        pred=pred_f, ared=ared, step_norm=delta, f_trial=ft, step=p, sigma=math.nan,
        radius_used=delta,
    )  # fmt: skip


# -- momentum on accepted global steps ---------------------------------------------------
def momentum_proposal(
    st: dict[str, Any], beta: float, s: Tensor, pred: Tensor, g: Tensor, hess: LSR1 | None
) -> tuple[Tensor, Tensor]:
    r"""The global test's trial step s + βv and its predicted reduction, v being the last
    outer iteration's accepted displacement θ_k − θ_{k−1}.

    The local phase predicts pred for s; the momentum part m = βv is priced by the global
    quadratic model at θ_k, q(s + m) − q(s) = gᵀm + ½mᵀBm + sᵀBm (B the global L-SR1
    matrix, 0 with ``order="first"``), no communication (g, B and v agree on every rank).
    When the model does not predict a decrease along m, the step is s alone."""
    v = st.get("velocity")
    if beta == 0.0 or v is None or not bool(v.any()):
        return s, pred
    m = v * beta
    Bm = hess.matvec(m) if hess is not None else torch.zeros_like(m)
    extra = -(torch.dot(g, m) + 0.5 * torch.dot(m, Bm) + torch.dot(s, Bm))
    if not (math.isfinite(float(extra)) and float(extra) > 0.0):
        return s, pred
    return s + m, pred + extra
