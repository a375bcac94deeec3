"""The one communication contract of the optimizers in ``apts.optim``.

An optimizer that does its own data-parallel communication (:class:`~apts.optim.APTS`,
:class:`~apts.optim.TrustRegion`, :class:`~apts.optim.LocalSGD`,
:class:`~apts.optim.LocalAdam`) takes ``comm=``: ``None`` for one process, or any object
with

- ``world_size``: the number N of ranks (an int >= 1), and
- ``all_reduce(tensor, op)``: reduce ``tensor`` in place over the ranks, ``op`` being
  ``"sum"`` or ``"mean"``; every rank ends with the same values. Its return value is not
  used.

Each optimizer turns ``comm`` into a :class:`Communicator` once, with
:func:`communicator` (``None`` becomes :class:`SingleProcess`), and then calls
``self.comm.all_reduce(buf, op=...)`` on one flat buffer per collective, whatever the
world size: a collective is never skipped or special-cased by the optimizer, so the
N = 1 path is the N > 1 code. The runner's counted :class:`apts.training.comm.Comm`
(torch.distributed, every call counted by kind) is one such object; a test's simulated
world is another.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from apts.checks import check_choice

__all__ = ["Communicator", "SingleProcess", "communicator"]

OPS = ("sum", "mean")


@runtime_checkable
class Communicator(Protocol):
    """``world_size`` ranks and an in-place ``all_reduce(tensor, op)`` (op: sum, mean)."""

    world_size: int

    def all_reduce(self, tensor: Tensor, op: str) -> Any: ...


class SingleProcess:
    """The world of one process: every reduction leaves the tensor as it is (a sum or a
    mean over one rank is the value itself), and nothing is communicated."""

    world_size = 1

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> None:
        check_choice("op", op, OPS)

    def __repr__(self) -> str:
        return "SingleProcess()"


def communicator(comm: Any) -> Communicator:
    """``comm`` checked against the contract (a ``ValueError`` starting ``comm=...``
    otherwise); ``None`` gives :class:`SingleProcess`."""
    if comm is None:
        return SingleProcess()
    size = getattr(comm, "world_size", None)
    ok = callable(getattr(comm, "all_reduce", None))
    ok = ok and isinstance(size, Integral) and not isinstance(size, bool) and size >= 1
    if not ok:
        raise ValueError(
            f"comm={comm!r} must be None or an object with all_reduce(tensor, op) and an "
            "integer world_size >= 1"
        )
    return comm
