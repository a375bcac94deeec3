"""Run a function on N gloo ranks (127.0.0.1) and collect what each returns.

``run_ranks(fn, n, *args)`` spawns n processes; rank r calls ``fn(r, n, *args)`` inside
an initialised process group and its (picklable) return value comes back in a list
indexed by rank. A rank that raises fails the whole call with its traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from apts.runtime.launch import init_rank
from apts.runtime.lifecycle import exit_rank
from apts.runtime.rendezvous import rendezvous_dir


def _entry(rank: int, n: int, rdzv: str, out_dir: str, fn, args) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    init_rank("gloo", rdzv, rank, n, timeout_s=120)
    result = fn(rank, n, *args)  # an exception reaches spawn, which reports its traceback
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
    exit_rank(0)  # as the runner's ranks do: no interpreter teardown under live gloo threads


def run_ranks(fn, n: int, *args) -> list:
    with tempfile.TemporaryDirectory() as out, rendezvous_dir() as job:
        rdzv = f"file://{job}/store"
        mp.start_processes(_entry, args=(n, rdzv, out, fn, args), nprocs=n, start_method="spawn")
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(n)]


def gather(t: torch.Tensor) -> list[torch.Tensor]:
    """All ranks' copies of t (test-only, outside the counted comm layer)."""
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return out
