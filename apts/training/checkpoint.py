"""Checkpoints that continue a run bit for bit (on the same number of ranks).

After every epoch each rank serialises what only it knows (its optimizer state — APTS's
local L-SR1 memory, local SGD's moments —, its RNG state); one ``gather`` (kind
``checkpoint``) brings them to rank 0, which writes ``checkpoint.pt`` atomically:

.. code-block:: text

    {"format": 1, "epoch": e, "world_size": N, "config": {...}, "model": state_dict,
     "ranks": [{"optimizer": ..., "rng": ..., "cuda_rng": ...} for each rank],
     "comm": rank 0's collective counters, "comm_logged": those the last metrics line
     counted up to, "elapsed_s": seconds trained so far}

Rank 0's counters are saved after the gather is counted, and ``comm_logged`` before it, so
a resumed run logs the same ``comm_*`` values as one that never stopped (its first epoch's
``comm_by_kind`` includes the previous epoch's checkpoint gather, as it would have). Every
rank of a resumed run reads the file itself (the run directory is on a filesystem all
ranks see, as for any multi-node job).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import torch

from apts.errors import RunDirError
from apts.rundir.format import CHECKPOINT, atomic_write
from apts.training.comm import Comm

FORMAT = 1


def _canonical(obj: Any) -> Any:
    """``obj`` with every string interned, containers copied (tensors shared).

    pickle writes an object met twice once and refers back to it, by identity: an optimizer
    whose state and param_groups share a key string ("memory", "gamma": an L-SR1 memory's
    state and APTS's options) before a resume, but hold two equal copies after one (the
    loaded groups' keys are fresh strings), pickles to a longer payload. Interned, equal
    strings are one object in both runs, so equal states have equal bytes, and a resumed
    run's checkpoint gathers count what an uninterrupted run's count."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def _serialise(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(_canonical(obj), buf)
    return buf.getvalue()


def _deserialise(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def rank_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """What this rank alone knows: its optimizer state and RNG states."""
    state: dict[str, Any] = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def gather_checkpoint(
    comm: Comm,
    *,
    epoch: int,
    cfg: dict[str, Any],
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    elapsed_s: float,
    logged: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Collect every rank's state on rank 0 (one counted gather); the full checkpoint
    there, None elsewhere. ``logged``: rank 0's counters as of the epoch's metrics line."""
    payloads = comm.gather_bytes(_serialise(rank_state(opt)), kind="checkpoint")
    if payloads is None:
        return None
    return {
        "format": FORMAT,
        "epoch": epoch,
        "world_size": len(payloads),
        "config": cfg,
        "model": model.state_dict(),
        "ranks": [_deserialise(p) for p in payloads],
        "comm": comm.state(),
        "comm_logged": logged or {},
        "elapsed_s": elapsed_s,
    }


def save_checkpoint(run_dir: Path | str, ckpt: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` atomically: the previous one stays intact until the new one
    is complete, and no temporary file is left behind."""
    data = _serialise(ckpt)  # in memory first: a full disk is then a plain OSError
    atomic_write(Path(run_dir) / CHECKPOINT, lambda p: p.write_bytes(data))


def load_checkpoint(run_dir: Path | str) -> dict[str, Any]:
    """Read ``checkpoint.pt`` (tensors on the CPU); a one-line error if it is unusable."""
    path = Path(run_dir) / CHECKPOINT
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(
            f"{path} does not exist: the run saved no checkpoint (checkpoint=false, or it "
            "stopped before its first epoch ended); start it again instead"
        ) from None
    except Exception as e:
        raise RunDirError(f"cannot read {path}: {e}".splitlines()[0]) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise RunDirError(f"{path} is not a checkpoint of this version of apts")
    return ckpt


def restore(
    ckpt: dict[str, Any],
    *,
    rank: int,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    comm: Comm,
) -> None:
    """Put this rank back where the checkpoint left it (model, optimizer, counters, RNG)."""
    if ckpt["world_size"] != comm.world_size:
        raise RunDirError(
            f"the checkpoint was written by {ckpt['world_size']} ranks, this run has "
            f"{comm.world_size}; resume with subdomains={ckpt['world_size']}"
        )
    mine = ckpt["ranks"][rank]
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(mine["optimizer"])
    comm.load_state(ckpt["comm"])
    torch.set_rng_state(mine["rng"])
    if "cuda_rng" in mine and torch.cuda.is_available():
        torch.cuda.set_rng_state(mine["cuda_rng"])
