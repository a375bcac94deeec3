"""DiLoCo: local Adam steps, then an outer Nesterov step on the averaged parameter change.

Douillard, Feng, Rusu, Chhaparia, Donchev, Kuncoro, Ranzato, Szlam, Shen, "DiLoCo:
Distributed Low-Communication Training of Language Models", arXiv 2311.08105 (2023),
Algorithm 1. With N workers (ranks), shard losses f_i, an inner optimizer (Adam here) and
the outer optimizer Nesterov SGD (the paper's outer learning rate 0.7, momentum 0.9):

.. code-block:: text

    θ⁽⁰⁾ = the initial parameters (identical on every rank), b⁽⁰⁾ = 0
    for outer step t = 1, 2, ...:
        θ_i ← θ⁽ᵗ⁻¹⁾ on every rank i (they already are: see below)
        H inner steps θ_i ← Adam_i(θ_i, ∇f_i(θ_i)), no communication
        Δ⁽ᵗ⁾ = (1/N) Σ_i (θ⁽ᵗ⁻¹⁾ − θ_i)          the outer gradient: one all-reduce of n numbers
        b⁽ᵗ⁾ = μ b⁽ᵗ⁻¹⁾ + Δ⁽ᵗ⁾                       outer momentum μ (outer_momentum)
        θ⁽ᵗ⁾ = θ⁽ᵗ⁻¹⁾ − η (Δ⁽ᵗ⁾ + μ b⁽ᵗ⁾)             Nesterov, outer learning rate η (outer_lr)
        θ_i ← θ⁽ᵗ⁾ on every rank

The outer update is ``torch.optim.SGD(lr=η, momentum=μ, nesterov=True)`` applied to the
gradient Δ, as in the paper (its first step takes b = Δ, which b⁽⁰⁾ = 0 gives too). Each
rank's Adam moments and step count stay local and persist across outer steps, as in the
paper. With η = 1 and μ = 0 the outer step is θ⁽ᵗ⁾ = mean_i θ_i: Local Adam
(:class:`~apts.optim.LocalAdam`). The paper's inner optimizer is AdamW with a cosine
schedule; here it is ``torch.optim.Adam`` at a constant rate, as for Local Adam (with
weight_decay = 0, Adam and AdamW are the same method).

Communication: exactly one counted all-reduce of the n parameters' change per outer step,
every ``sync_every`` = H inner steps and at :meth:`DiLoCo.synchronize` (the runner calls
it at each epoch's end, before evaluation and the checkpoint): the count and size of Local
Adam's averages. Every rank computes the same outer step from the same reduced Δ, so the
ranks hold bit-identical parameters after it.

State: the anchor θ⁽ᵗ⁻¹⁾ and the momentum buffer b of each parameter live in the optimizer's
``state`` beside Adam's (keys ``outer_anchor`` and ``outer_momentum``), so
``state_dict``/``load_state_dict`` and ``torch.distributed.checkpoint`` carry them and a
resumed run continues bit for bit. They are created at the first step (the anchor is the
parameters before it). Adam initialises a parameter's state only when it is empty, so the
outer entries are lifted out of ``state`` for the duration of each inner step (a step
pre-hook and post-hook). A state dict without them (a plain Adam's, or Local Adam's)
starts a new outer period at the current parameters with zero momentum.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from apts.checks import check_number

from .flat import flat_params, set_flat_params_
from .local_sgd import SYNC_EVERY, LocalAdam

__all__ = ["DiLoCo"]

ANCHOR, MOMENTUM = "outer_anchor", "outer_momentum"
OUTER_LR, OUTER_MOMENTUM = 0.7, 0.9  # Douillard et al. 2023


def _lift_outer_state(opt: DiLoCo, args: Any, kwargs: Any) -> None:
    """Step pre-hook: take the outer entries out of ``state`` (creating them at the first
    step, from the parameters before it), so that Adam sees only its own."""
    held = []
    for p in opt._all_params():
        st = opt.state[p]
        anchor, momentum = st.pop(ANCHOR, None), st.pop(MOMENTUM, None)
        if anchor is None or momentum is None:
            anchor, momentum = p.detach().clone(), torch.zeros_like(p)
        held.append((anchor, momentum))
    opt._held = held


def _restore_outer_state(opt: DiLoCo, args: Any, kwargs: Any) -> None:
    """Step post-hook (before the periodic outer step's): put the outer entries back."""
    for p, (anchor, momentum) in zip(opt._all_params(), opt._held, strict=True):
        opt.state[p][ANCHOR] = anchor
        opt.state[p][MOMENTUM] = momentum
    opt._held = None


class DiLoCo(LocalAdam):
    """DiLoCo: :class:`~apts.optim.LocalAdam`'s inner steps on this rank's shard and, every
    ``sync_every`` steps, an outer Nesterov step on the parameter change averaged over the
    ranks (see the module docstring for the update and its source).

    Args:
        params: the parameters (one dtype, one device), or parameter groups.
        lr, betas, eps, weight_decay: the inner ``torch.optim.Adam``'s; its moments stay local.
        comm: a :class:`~apts.optim.comm.Communicator` (``world_size`` and an in-place
            ``all_reduce(tensor, op)``), or None for one process.
        sync_every: H, inner steps per outer step.
        outer_lr: η, the outer learning rate (the paper's 0.7).
        outer_momentum: μ, the outer Nesterov momentum (the paper's 0.9).

    Every rank must start from the same parameters and call ``step`` and
    :meth:`synchronize` equally often. With one process the outer step is still taken
    (Δ is that process's own change): DiLoCo with one worker.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        comm: Any = None,
        sync_every: int = SYNC_EVERY,
        outer_lr: float = OUTER_LR,
        outer_momentum: float = OUTER_MOMENTUM,
    ):
        check_number("outer_lr", outer_lr, 0.0, lo_open=True)
        check_number("outer_momentum", outer_momentum, 0.0, 1.0, hi_open=True)
        self.outer_lr = outer_lr
        self.outer_momentum = outer_momentum
        super().__init__(params, lr, betas, eps, weight_decay, comm=comm, sync_every=sync_every)

    def _init_averaging(self, comm: Any, sync_every: int) -> None:
        # step post-hooks run in registration order: the outer state is back in ``state``
        # before the periodic hook (registered by LocalAdam) takes an outer step
        self._held: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.register_step_pre_hook(_lift_outer_state)
        self.register_step_post_hook(_restore_outer_state)
        super()._init_averaging(comm, sync_every)

    def _average(self) -> None:
        """The outer step: Δ = mean over ranks of (anchor − θ), one all-reduce of n numbers
        (the runner counts it as ``optimizer``); b ← μ b + Δ; θ ← anchor − η (Δ + μ b);
        anchor ← θ."""
        self.local_steps = 0
        params = self._all_params()
        states = [self.state[p] for p in params]
        anchor = torch.cat([s[ANCHOR].reshape(-1) for s in states])
        momentum = torch.cat([s[MOMENTUM].reshape(-1) for s in states])
        delta = anchor - flat_params(params)
        self.comm.all_reduce(delta, op="mean")
        mu = self.outer_momentum
        momentum.mul_(mu).add_(delta)
        anchor.sub_(delta.add_(momentum, alpha=mu), alpha=self.outer_lr)
        set_flat_params_(params, anchor)
        offset = 0
        for p, s in zip(params, states, strict=True):
            n = p.numel()
            s[ANCHOR] = anchor[offset : offset + n].view_as(p).clone()
            s[MOMENTUM] = momentum[offset : offset + n].view_as(p).clone()
            offset += n
