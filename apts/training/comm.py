"""Every collective the project issues, with call and byte counters per kind.

The optimizers and the training loop never call ``torch.distributed`` directly:
they call a :class:`Comm`, which issues the collective and counts it. DDP's
gradient all-reduces are routed through :func:`Comm.ddp_hook`, a DDP
communication hook, so the baselines are counted the same way.

Kinds used in this project:

- ``optimizer``: all-reduces issued by the trust-region optimizers (TR, APTS);
- ``ddp``: DDP's bucketed gradient all-reduces (SGD/Adam baselines);
- ``metrics``: the once-per-epoch reduction of training statistics;
- ``setup``: start-up and shutdown synchronisation (barriers);
- ``checkpoint``: the per-epoch gather of every rank's state to rank 0.

With one process and no process group every call is a no-op and nothing is
counted: nothing is communicated.
"""

from __future__ import annotations

import time
from collections import Counter

import torch
import torch.distributed as dist

_OPS = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}


class Comm:
    """Counted collectives over the default process group (or none).

    ``calls[kind]``, ``bytes[kind]`` and ``seconds[kind]`` (wall time spent in
    blocking collectives, waiting for other ranks included) accumulate per kind;
    ``sizes`` keeps the element count of every counted call in order (tests read it
    to check the exact communication pattern of an iteration).
    """

    def __init__(self, *, record_sizes: bool = False):
        self.active = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size() if self.active else 1
        self.rank = dist.get_rank() if self.active else 0
        self.calls: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.record_sizes = record_sizes
        self.sizes: list[tuple[str, int]] = []
        self.ddp_local = False  # ddp_hook reduces nothing (see loop.settle_ddp_buckets)

    def _count(self, kind: str, tensor: torch.Tensor) -> None:
        self.calls[kind] += 1
        self.bytes[kind] += tensor.numel() * tensor.element_size()
        if self.record_sizes:
            self.sizes.append((kind, tensor.numel()))

    def all_reduce(
        self, tensor: torch.Tensor, op: str = "sum", kind: str = "optimizer"
    ) -> torch.Tensor:
        """In-place all-reduce of ``tensor`` (``op`` in sum, mean, max); returns it."""
        if op not in _OPS:
            raise ValueError(f"unknown reduce op {op!r}; choose one of {sorted(_OPS)}")
        if not self.active or self.world_size == 1:
            return tensor
        self._count(kind, tensor)
        t0 = time.perf_counter()
        dist.all_reduce(tensor, op=_OPS[op])
        self.seconds[kind] += time.perf_counter() - t0
        if op == "mean":
            tensor.div_(self.world_size)
        return tensor

    def barrier(self, kind: str = "setup") -> None:
        if self.active and self.world_size > 1:
            self._count(kind, torch.empty(0))
            dist.barrier()

    def gather_bytes(self, data: bytes, kind: str = "checkpoint") -> list[bytes] | None:
        """Gather every rank's ``data`` on rank 0: the list by rank there, None elsewhere.
        Counted as one call of ``len(data)`` bytes (what this rank sends)."""
        if not self.active or self.world_size == 1:
            return [data]
        self.calls[kind] += 1
        self.bytes[kind] += len(data)
        out: list[bytes] | None = [b""] * self.world_size if self.rank == 0 else None
        t0 = time.perf_counter()
        dist.gather_object(data, out, dst=0)
        self.seconds[kind] += time.perf_counter() - t0
        return out

    def state(self) -> dict[str, dict[str, float]]:
        """The counters, for a checkpoint."""
        return {
            "calls": dict(self.calls),
            "bytes": dict(self.bytes),
            "seconds": dict(self.seconds),
        }

    def load_state(self, state: dict[str, dict[str, float]]) -> None:
        """Continue counting from :meth:`state`'s values (a resumed run)."""
        self.calls = Counter(state["calls"])
        self.bytes = Counter(state["bytes"])
        self.seconds = Counter(state["seconds"])

    @staticmethod
    def ddp_hook(comm, bucket):  # no annotations: DDP checks them against the real class
        """DDP communication hook: the default mean all-reduce, counted as ``ddp``."""
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        if comm.ddp_local:
            done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
            done.set_result(bucket.buffer())
            return done
        comm._count("ddp", bucket.buffer())
        return allreduce_hook(None, bucket)

    def total_calls(self, kinds: tuple[str, ...] = ("optimizer", "ddp")) -> int:
        return sum(self.calls[k] for k in kinds)

    def total_bytes(self, kinds: tuple[str, ...] = ("optimizer", "ddp")) -> int:
        return sum(self.bytes[k] for k in kinds)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {"calls": dict(self.calls), "bytes": dict(self.bytes)}
