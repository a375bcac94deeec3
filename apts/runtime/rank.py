"""One rank: train, classify how it ended, leave the process group cleanly.

:func:`run_rank` never raises: whatever happens, the rank ends with an
:class:`~apts.runtime.outcome.Outcome`, made inside the ``except`` block that caught the
exception (so its traceback is the real one), and hands it on: a spawned rank sends it
down its own pipe to the launcher (no file: a full TMPDIR or run directory cannot lose
it), a rank of a single-process run or of a torchrun world returns it to its caller.
"""

from __future__ import annotations

import sys
import tempfile
from multiprocessing.connection import Connection

import torch.distributed as dist

from apts.data.dataset import Dataset
from apts.errors import one_line
from apts.rundir.claim import Plan
from apts.runtime.lifecycle import (
    Heartbeat,
    exit_rank,
    ignore_signals,
    install_signal_handlers,
    received_signal,
)
from apts.runtime.outcome import Outcome, record
from apts.training.checkpoint import load_checkpoint
from apts.training.comm import Comm
from apts.training.loop import train


def report_outcome(report: Connection | None, rank: int, out: Outcome) -> None:
    """Hand this rank's outcome to the supervising launcher (spawned ranks only), down the
    pipe the launcher gave this rank; the launcher drains it while it waits."""
    if report is None:
        return
    try:
        report.send_bytes(out.to_json().encode())
    except OSError as e:  # the launcher is gone: the exit code still says how it ended
        print(f"apts-train: error: {out.message} (not reported: {e})", file=sys.stderr)


def _heartbeat(cfg: dict, run_dir: str, rank: int, world: int, report: Connection | None):
    """Start this rank's heartbeat thread (None with one rank). A stalled peer or a store
    that fails ends this rank, after saying why."""
    if world == 1:
        return None

    def stop_rank(out: Outcome) -> None:
        if report is None:  # a torchrun world: no launcher of ours, rank 0 records
            if rank == 0:
                record(run_dir, out)
            print(f"apts-train: error: {out.message}", file=sys.stderr)
        report_outcome(report, rank, out)
        exit_rank(out.exit_code)

    def on_stall(peer: int, seconds: float) -> None:
        stop_rank(
            Outcome.failed(f"rank {peer} stopped responding (no heartbeat for {seconds:.0f} s)")
        )

    def on_error(e: BaseException) -> None:
        where = tempfile.gettempdir() if report is not None else "the network to MASTER_ADDR"
        reason = (
            f"the heartbeat lost the rendezvous store ({one_line(e)}), so a hung rank would "
            f"go unnoticed; check {where} (a full disk?) and resume"
        )
        stop_rank(Outcome.failed(reason, rank))

    timeout = float(cfg["launcher"].get("heartbeat_s", 45))
    hb = Heartbeat(
        dist.distributed_c10d._get_default_store(),
        rank,
        world,
        interval=min(5.0, max(0.5, timeout / 10)),
        timeout=timeout,
        on_stall=on_stall,
        on_error=on_error,
    )
    hb.start()
    return hb


def run_rank(
    cfg: dict,
    run_dir: str,
    ds: Dataset,
    rank: int,
    world: int,
    plan: Plan,
    report: Connection | None,
) -> Outcome:
    """Train as one rank and leave the process group cleanly; never raises.

    On success every rank passes a last barrier before the group is destroyed, so none
    leaves while rank 0 still evaluates; otherwise peers may be gone and the rank just
    reports (``report``: the pipe to the launcher, for spawned ranks). The outcome of a
    completed run carries rank 0's last epoch's metrics.
    """
    install_signal_handlers()
    who = rank if world > 1 else None
    hb = None
    try:
        hb = _heartbeat(cfg, run_dir, rank, world, report)
        ckpt = load_checkpoint(run_dir) if plan.action == "resume" else None
        out = Outcome.completed(train(cfg, run_dir, ds, rank=rank, world_size=world, resume=ckpt))
    except BaseException as e:
        out = Outcome.of_exception(e, who, received_signal())
    ignore_signals()
    try:
        if out.ok and world > 1:
            Comm().barrier()  # every rank finishes together
    except Exception as e:
        out = Outcome.failed(f"final barrier: {one_line(e)}", who)
    if hb is not None:
        hb.stop()
    if out.ok and dist.is_initialized():
        dist.destroy_process_group()
    report_outcome(report, rank, out)
    return out
