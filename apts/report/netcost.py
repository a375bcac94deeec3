"""What the collectives of a run cost on a network: an α-β model of ring all-reduce.

Pure Python (no torch): it reads the per-epoch rows of a run's ``metrics.jsonl``.

The model (Hockney's α-β model; the ring all-reduce of Patarasuk & Yuan, 2009, as in
Thakur, Rabenseifner & Gropp, 2005): a message of b bytes between two ranks takes
α + b/β, with α the per-message latency (s) and β the bandwidth (bytes/s). A ring
all-reduce of b bytes over N ranks is a reduce-scatter and an all-gather, each of
N−1 steps in which every rank sends b/N bytes to its neighbour, so ::

    T_allreduce(b, N) = 2(N−1)·α + 2·(N−1)/N · b/β.

Gloo (the CPU backend of ``torch.distributed``) runs exactly this ring: for a dense
CPU tensor ``ProcessGroupGloo::allreduce`` calls ``gloo::allreduce`` with no algorithm
set, which selects its ring (reduce-scatter then all-gather). Every rank therefore
sends 2(N−1)/N·b bytes per all-reduce: the β term is exact (the shaped-link benchmark,
``benchmarks/bench_net.py``, counts 1.00–1.05 times that on the wire, headers included).
The latency term is 2(N−1)α to leading order only: gloo cuts each rank's chunk into at
least two segments of at most 1 MiB and keeps two in flight, so it sends more, partly
overlapped, messages.

A sum of all-reduces depends only on their count and their total size (the cost is
linear in b), which is what ``metrics.jsonl`` records per epoch (``comm_calls``,
``comm_bytes``, the size of the reduced buffer, not the traffic per rank).

Projection of a run onto a link (:func:`project`)::

    epoch time on the link = (wall_s − comm_s) + Σ_calls T_allreduce
                           = compute + calls·2(N−1)α + 2(N−1)/N · comm_bytes/β

``comm_s`` is the time the run spent in blocking optimizer collectives on the machine
where it ran (APTS, TR: measured, waiting for slower ranks included). DDP (SGD/Adam)
overlaps its gradient all-reduces with the backward pass and ``comm_s`` is 0 for it:
its ``wall_s`` already holds whatever communication was not hidden on the machine it
ran on, and the projection adds all of DDP's collectives on top, as if none were
hidden: an **upper bound**. With perfect overlap an epoch would take
max(wall_s, Σ T_allreduce) (``overlap=True``), a lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LINKS",
    "Link",
    "Projection",
    "allreduce_time",
    "collectives_time",
    "format_seconds",
    "project",
]


@dataclass(frozen=True)
class Link:
    """A network link: ``alpha`` latency per message (s), ``beta`` bandwidth (bytes/s)."""

    name: str
    alpha: float
    beta: float
    source: str = ""

    def __post_init__(self) -> None:
        if not (self.alpha >= 0 and math.isfinite(self.alpha)):
            raise ValueError(f"link {self.name!r}: alpha must be a finite number >= 0 s")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"link {self.name!r}: beta must be a finite number > 0 bytes/s")

    @classmethod
    def from_rate(cls, name: str, bits_per_s: float, alpha: float, source: str = "") -> Link:
        """A link of ``bits_per_s`` (line rate, as network speeds are quoted) and ``alpha`` s."""
        return cls(name, alpha, bits_per_s / 8.0, source)


# Typical values, not measurements of a particular network. β is the line rate (payload
# after Ethernet/IP/TCP headers is ~95% of it). α is the one-way latency of a small
# message through the software stack, which dominates the wire: over Ethernet with the
# kernel's TCP stack (what gloo uses) a small-message round trip (netperf TCP_RR,
# sockperf) takes tens of µs on 10 GbE, more on slower NICs with interrupt coalescing;
# InfiniBand with RDMA verbs (NCCL/MPI) has ~1 µs MPI ping-pong latency (vendor and
# OSU micro-benchmark figures for EDR/HDR adapters). Pass your own ``Link`` for a
# measured network.
LINKS: dict[str, Link] = {
    link.name: link
    for link in (
        Link.from_rate(
            "100 Mbit/s Ethernet", 100e6, 100e-6, "Fast Ethernet, kernel TCP: ~100 µs one way"
        ),
        Link.from_rate("1 GbE", 1e9, 50e-6, "kernel TCP over 1 GbE: ~50 µs one way"),
        Link.from_rate("10 GbE", 10e9, 20e-6, "kernel TCP over 10 GbE: ~20 µs one way"),
        Link.from_rate(
            "100 Gb/s InfiniBand (EDR/HDR100)", 100e9, 1e-6, "RDMA verbs, MPI ping-pong ~1 µs"
        ),
    )
}


def allreduce_time(nbytes: float, n: int, link: Link) -> float:
    """Ring all-reduce of ``nbytes`` over ``n`` ranks: 2(n−1)α + 2(n−1)/n · nbytes/β."""
    return collectives_time(1, nbytes, n, link)


def collectives_time(calls: int, nbytes: float, n: int, link: Link) -> float:
    """``calls`` ring all-reduces of ``nbytes`` in total over ``n`` ranks:
    calls·2(n−1)α + 2(n−1)/n · nbytes/β (0 for one rank)."""
    if n < 1:
        raise ValueError(f"n must be >= 1 ranks, got {n}")
    if calls < 0 or nbytes < 0:
        raise ValueError("calls and nbytes must be >= 0")
    if n == 1:
        return 0.0
    return calls * 2 * (n - 1) * link.alpha + 2 * (n - 1) / n * nbytes / link.beta


@dataclass
class Projection:
    """A run projected onto a link.

    ``epoch_s[i]``: projected seconds of epoch i; ``compute_s[i]``/``comm_s[i]``: its two
    parts; ``s_per_epoch``: their mean; ``epoch_to_target``/``time_to_target_s``: the
    first epoch (1-based, as logged) whose ``val_acc`` >= target and the projected time
    up to its end, ``None`` when no target was given or it was not reached.
    """

    link: Link
    n: int
    epoch_s: list[float]
    compute_s: list[float]
    comm_s: list[float]
    target: float | None = None
    epoch_to_target: int | None = None
    time_to_target_s: float | None = None

    @property
    def s_per_epoch(self) -> float:
        return sum(self.epoch_s) / len(self.epoch_s) if self.epoch_s else float("nan")


def _epoch_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out = [r for r in rows if "wall_s" in r and "comm_calls" in r and "comm_bytes" in r]
    if not out:
        raise ValueError("no epoch rows with wall_s, comm_calls and comm_bytes to project")
    return out


def project(
    rows: Iterable[Mapping[str, Any]],
    n: int,
    link: Link,
    target: float | None = None,
    *,
    overlap: bool = False,
    acc_key: str = "val_acc",
) -> Projection:
    """Project a run's epochs (rows of its ``metrics.jsonl``) onto ``link`` with ``n`` ranks.

    Per epoch: compute = ``wall_s − comm_s`` (``comm_s`` missing counts as 0) and
    comm = :func:`collectives_time` of the epoch's ``comm_calls`` and ``comm_bytes``;
    the epoch takes compute + comm, or max(compute, comm) with ``overlap=True`` (perfect
    overlap of communication with computation, a lower bound for DDP). The time to
    ``target`` (``acc_key``, validation accuracy in % as logged by default) is the sum of
    the projected epochs up to and including the first epoch that reaches it.
    """
    epochs = _epoch_rows(rows)
    compute, comm, total = [], [], []
    for r in epochs:
        c = max(0.0, float(r["wall_s"]) - float(r.get("comm_s") or 0.0))
        t = collectives_time(int(r["comm_calls"]), float(r["comm_bytes"]), n, link)
        compute.append(c)
        comm.append(t)
        total.append(max(c, t) if overlap else c + t)
    p = Projection(link, n, total, compute, comm, target)
    if target is not None:
        elapsed = 0.0
        for i, (r, t) in enumerate(zip(epochs, total, strict=True), start=1):
            elapsed += t
            acc = r.get(acc_key)
            if acc is not None and float(acc) >= target:
                p.epoch_to_target = int(r.get("epoch", i))
                p.time_to_target_s = elapsed
                break
    return p


def format_seconds(x: float | None) -> str:
    """Seconds for a table: 0 decimals from 100 s, 1 from 1 s, 3 below; "–" for None/NaN."""
    if x is None or not math.isfinite(x):
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 1:
        return f"{x:.1f}"
    return f"{x:.3f}"
