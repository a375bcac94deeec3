"""Local SGD and local Adam: every rank steps on its own shard, parameters averaged every H steps.

The baseline that synchronises as rarely as APTS (Stich, "Local SGD converges fast and
communicates little", ICLR 2019; Lin et al., "Don't use large mini-batches, use local SGD",
ICLR 2020). With N ranks, shard gradients ∇f_i and an inner optimizer (SGD or Adam):

.. code-block:: text

    for t = 1, 2, ...:
        θ_i ← inner_step_i(θ_i, ∇f_i(θ_i))        on every rank i, no communication
        if t ≡ 0 (mod H):  θ_i ← (1/N) Σ_j θ_j     one all-reduce of the n parameters

The inner optimizer's state (momentum buffers, Adam's moments) stays local and is never
communicated. With H = 1 and plain SGD (no momentum) this is data-parallel gradient
descent: averaging θ - lr ∇f_i over i equals θ - lr (1/N) Σ_i ∇f_i, for equal shards the
gradient of the whole mini-batch.

Why not ``torch.distributed.algorithms.model_averaging`` (``PeriodicModelAverager``,
``PostLocalSGDOptimizer``): their average is a direct ``dist.all_reduce`` (not counted
by :class:`apts.training.comm.Comm`) called as a module function the averager cannot override;
``ModelAverager`` needs an initialised default process group (no one-process use); its
period is a never-reset step counter that averages after steps 1, H + 1, ... (an
epoch-end average could not restart it); it skips parameters whose ``.grad`` is None;
and ``PostLocalSGDOptimizer`` skips ``Optimizer.__init__`` (no step hooks). Here the
optimizer *is* a ``torch.optim.SGD``/``Adam`` (its ``step`` runs unchanged) and the
average is a step post-hook: one flat all-reduce through ``comm``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from apts.checks import check_betas, check_bool, check_int, check_number
from apts.errors import OptionError

from .comm import communicator
from .flat import check_flat_params, flat_params, set_flat_params_

__all__ = ["LocalAdam", "LocalSGD"]

SYNC_EVERY = 13  # at |B| = 128 on 60000 samples: 36 + 1 averages per epoch, APTS's 36


def _average_periodically(opt: _LocalAveraging, args: Any, kwargs: Any) -> None:
    """Step post-hook: count the local step, average once ``sync_every`` have passed."""
    opt.local_steps += 1
    if opt.local_steps >= opt.sync_every:  # >=: a checkpoint may come from a longer period
        opt._average()


class _LocalAveraging:
    """Periodic parameter averaging for a ``torch.optim.Optimizer`` subclass (a mixin).

    ``local_steps`` counts the steps since the last average (0 right after one). It lives
    in the first parameter group, where ``state_dict``/``load_state_dict`` (and
    ``torch.distributed.checkpoint``) carry it like any group entry, so a resumed run
    averages at the same steps; a plain SGD/Adam state dict, without it, starts a new
    period. (Not in ``Optimizer.state``: Adam initialises a parameter's state when it is
    empty, and a counter there would make it skip that.)
    """

    # It averages the parameters itself (a ``comm``, no DDP); step() needs no closure.
    requires_comm = True

    comm: Any
    sync_every: int

    def _init_averaging(self, comm: Any, sync_every: int) -> None:
        # one flat all-reduce needs one dtype and one device
        check_flat_params(self._all_params())
        self.comm = communicator(comm)
        self.sync_every = sync_every
        self.local_steps = 0
        self.register_step_post_hook(_average_periodically)

    @property
    def local_steps(self) -> int:
        return int(self.param_groups[0].get("local_steps", 0))  # type: ignore[attr-defined]

    @local_steps.setter
    def local_steps(self, value: int) -> None:
        self.param_groups[0]["local_steps"] = value  # type: ignore[attr-defined]

    def _all_params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]  # type: ignore[attr-defined]

    def _average(self) -> None:
        """θ ← mean over ranks of θ: one all-reduce of n numbers, kind ``optimizer``."""
        self.local_steps = 0
        params = self._all_params()
        flat = flat_params(params)
        self.comm.all_reduce(flat, op="mean")
        set_flat_params_(params, flat)

    def synchronize(self) -> None:
        """Average the parameters now, unless no step was taken since the last average
        (they are identical on every rank then, and nothing is communicated).

        Call it before evaluating or saving the model, on every rank: the runner does at
        the end of each epoch. The next period of ``sync_every`` steps starts here.
        """
        if self.local_steps > 0:
            self._average()


class LocalSGD(_LocalAveraging, torch.optim.SGD):
    """Local SGD: ``torch.optim.SGD`` on this rank's shard, parameters averaged every
    ``sync_every`` steps (see the module docstring for the update).

    Args:
        params: the parameters (one dtype, one device), or parameter groups.
        lr, momentum, nesterov, weight_decay: as for ``torch.optim.SGD``; the momentum
            buffer stays local.
        comm: a :class:`~apts.optim.comm.Communicator` (``world_size`` and an in-place
            ``all_reduce(tensor, op)``, e.g. :class:`apts.training.comm.Comm`), or None for one
            process.
        sync_every: H, the number of local steps between two averages.

    Every rank must start from the same parameters (same seed, or a broadcast) and
    call ``step`` and :meth:`synchronize` equally often. Each average is one counted
    all-reduce of n numbers; nothing else is communicated.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        comm: Any = None,
        sync_every: int = SYNC_EVERY,
    ):
        check_number("lr", lr, 0.0)
        check_number("momentum", momentum, 0.0)
        check_number("weight_decay", weight_decay, 0.0)
        if check_bool("nesterov", nesterov) and momentum <= 0:
            raise OptionError("nesterov", nesterov, f"needs momentum > 0, got {momentum!r}")
        check_int("sync_every", sync_every, 1)
        super().__init__(
            params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
        self._init_averaging(comm, sync_every)


class LocalAdam(_LocalAveraging, torch.optim.Adam):
    """Local Adam: ``torch.optim.Adam`` on this rank's shard, parameters averaged every
    ``sync_every`` steps (see the module docstring for the update).

    Args:
        params: the parameters (one dtype, one device), or parameter groups.
        lr, betas, eps, weight_decay: as for ``torch.optim.Adam``; the moment estimates
            and step counts stay local.
        comm, sync_every: as for :class:`LocalSGD`.
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
    ):
        check_number("lr", lr, 0.0)
        check_betas("betas", betas)
        check_number("eps", eps, 0.0)
        check_number("weight_decay", weight_decay, 0.0)
        check_int("sync_every", sync_every, 1)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self._init_averaging(comm, sync_every)
