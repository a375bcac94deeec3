"""An optimizer that fails on purpose, for the fault tests: ``torch.optim.Adam`` that raises
at a chosen stage in a chosen rank. The runner reaches it through ``optimizer._target_``
as it reaches every optimizer; spawned ranks import it through ``PYTHONPATH``.

``fail_at`` names one stage or several joined by ``+``:

- ``init``: construction, in a rank of a process group only (the precheck's trial
  construction passes);
- ``step``: the ``fail_step``-th step of the run, counted by Adam's own ``step`` state (a
  resumed run counts on). Options beyond the yaml make the precheck's trial take one step
  of a fresh optimizer in the launcher (rank 0, no process group): with one rank, a
  failure inside the run is asked for with ``fail_step`` >= 2;
- ``state_dict``: the checkpoint; ``load_state_dict``: a resume's restore.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

STAGES = ("init", "step", "state_dict", "load_state_dict")


def _rank() -> int | None:
    """This process's rank, None outside a process group (the precheck, one rank)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else None


class InjectedFailure(RuntimeError):
    pass


class FaultyAdam(torch.optim.Adam):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        fail_at: str = "none",
        fail_rank: int = 0,
        fail_step: int = 1,
    ):
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.fail_at = fail_at
        self.fail_rank = fail_rank
        self.fail_step = fail_step
        if self._armed("init") and _rank() is not None:
            self._fail("init")

    def _armed(self, stage: str) -> bool:
        rank = _rank() or 0
        return stage in self.fail_at.split("+") and rank == self.fail_rank

    def _fail(self, stage: str) -> None:
        raise InjectedFailure(f"injected failure in {stage}")

    def _steps_done(self) -> int:
        first = self.param_groups[0]["params"][0]
        return int(self.state[first]["step"]) if "step" in self.state.get(first, {}) else 0

    def step(self, closure=None):
        if self._armed("step") and self._steps_done() + 1 == self.fail_step:
            self._fail("step")
        return super().step(closure)

    def state_dict(self):
        if self._armed("state_dict"):
            self._fail("state_dict")
        return super().state_dict()

    def load_state_dict(self, state_dict):
        if self._armed("load_state_dict"):
            self._fail("load_state_dict")
        return super().load_state_dict(state_dict)
