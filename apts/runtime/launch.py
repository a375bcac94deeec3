"""Start N ranks on this machine and supervise them, or join a world torchrun/SLURM started.

- ``subdomains=1`` and no torchrun world: train in this process, no process group.
- ``subdomains=N`` and no torchrun world: spawn N processes with
  ``torch.multiprocessing`` on 127.0.0.1. They meet through a file in a private
  temporary directory (``file://`` rendezvous), so parallel jobs never collide: there is
  no port to pick. The dataset is loaded once here, before any rank starts (a missing
  file is one line and no rank), and shared with the ranks through shared memory.
  This process then supervises them: the first rank that fails ends the others (SIGTERM,
  then SIGKILL after a grace period); a SIGTERM/SIGINT to this process is passed on to
  every rank. Whatever happens, the ranks are gone and the temporary directory removed
  when :func:`launch` returns, and summary.json says how the run ended.
- torchrun (``WORLD_SIZE`` and ``RANK`` set) or a task of a submitit job: this process
  is one rank of a world started by someone else (:mod:`apts.runtime.world`).

gloo serves CPU runs and NCCL CUDA runs (one GPU per rank, ``LOCAL_RANK``). How a rank
stops (signals, heartbeat, exit) is :mod:`apts.runtime.lifecycle`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from apts.data.dataset import Dataset, hold_out, val_count
from apts.data.load import load_dataset
from apts.errors import ConfigError, DataError, Diverged, Interrupted, RunDirError, one_line
from apts.rundir.claim import Plan, record_outcome
from apts.rundir.format import read_summary
from apts.runtime.lifecycle import (
    EXIT_CONFIG,
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_OK,
    Heartbeat,
    exit_rank,
    ignore_signals,
    install_signal_handlers,
    received_signal,
    signal_exit_code,
)
from apts.training.checkpoint import load_checkpoint
from apts.training.comm import Comm
from apts.training.loop import train

# Seconds a failing job's other ranks get to stop on SIGTERM before SIGKILL (twice, at
# most: torch.multiprocessing waits once before SIGTERM, once before SIGKILL).
GRACE_S = 4.0


@dataclass
class LaunchResult:
    """How a job ended: ``exit_code`` (0, 1 failed, 2 config, 3 diverged, 130/143
    interrupted), ``status`` as in summary.json (or ``skipped``), a one-line ``error``
    unless it completed, and the last epoch's metrics."""

    exit_code: int = EXIT_OK
    status: str = "completed"
    error: str | None = None
    final: dict[str, Any] = field(default_factory=dict)
    claimed: bool = True  # False: the run directory was another run's; nothing was written


@contextmanager
def rendezvous_dir() -> Iterator[Path]:
    """A private temporary directory for one job (rendezvous file, rank reports), removed
    afterwards whatever happens."""
    d = Path(tempfile.mkdtemp(prefix="apts-job-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def rendezvous_file() -> Iterator[str]:
    """A ``file://`` rendezvous address private to one job, removed afterwards."""
    with rendezvous_dir() as d:
        yield f"file://{d}/store"


def init_rank(backend: str, init_method: str, rank: int, world: int, timeout_s: float) -> None:
    """Initialise the default process group of one rank."""
    dist.init_process_group(
        backend,
        init_method=init_method,
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )


def resolve_device(cfg: dict) -> str:
    if cfg["device"] == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg["device"]


def load_data(cfg: dict, download: bool | None = None) -> Dataset:
    d = cfg["dataset"]
    extra = {}
    if d["name"] == "synthetic":
        extra = {k: d[k] for k in ("n_train", "n_test", "num_classes")}
        extra["shape"] = tuple(d["shape"])
    ds = load_dataset(
        d["name"],
        d["data_dir"],
        download=d.get("download", True) if download is None else download,
        seed=cfg["seed"],
        **extra,
    )
    val_size = d.get("val_size", 0)  # runs made before the validation split: none
    n = len(ds.train_y)
    if val_count(val_size, n) >= n:
        raise ConfigError(
            f"dataset.val_size={val_size} leaves none of the {n} training samples of "
            f"{d['name']} to train on; hold out fewer, e.g. dataset.val_size={n // 10}"
        )
    return hold_out(ds, val_size, cfg["seed"])


def check_data_fits(cfg: dict, ds: Dataset) -> None:
    n = len(ds.train_y)
    if cfg["batch_size"] > n:
        raise ConfigError(
            f"batch_size={cfg['batch_size']} exceeds the {n} training samples of "
            f"{cfg['dataset']['name']}; use batch_size<={n}"
        )


def set_loopback_iface(host: str) -> None:
    # gloo resolves the hostname to pick an interface; on machines without a network
    # that fails. For a loopback master, use the loopback device.
    if host.startswith("127.") and Path("/sys/class/net/lo").exists():
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


# ------------------------------------------------------------------------ one rank


@dataclass
class RankOutcome:
    code: int
    status: str
    reason: str | None = None
    trace: str | None = None


def _outcome(e: BaseException | None) -> RankOutcome:
    """Classify how a rank's training ended (a signal wins over what it caused)."""
    sig = received_signal()
    if e is None:
        return RankOutcome(EXIT_OK, "completed")
    if isinstance(e, Interrupted) or sig is not None:
        signum = e.signum if isinstance(e, Interrupted) else sig
        return RankOutcome(signal_exit_code(signum), "interrupted", str(Interrupted(signum)))
    if isinstance(e, Diverged):
        return RankOutcome(EXIT_DIVERGED, "diverged", str(e))
    if isinstance(e, (DataError, ConfigError)):
        return RankOutcome(EXIT_CONFIG, "failed", str(e))
    if isinstance(e, RunDirError):  # a full disk, a vanished directory: said in one line
        return RankOutcome(EXIT_FAILED, "failed", str(e))
    return RankOutcome(EXIT_FAILED, "failed", one_line(e), traceback.format_exc())


def _heartbeat(cfg: dict, run_dir: str, rank: int, world: int, report: Path | None):
    """Start this rank's heartbeat thread (None with one rank)."""
    if world == 1:
        return None

    def on_stall(peer: int, seconds: float) -> None:
        reason = f"rank {peer} stopped responding (no heartbeat for {seconds:.0f} s)"
        if rank == 0:
            record_outcome(run_dir, "failed", reason)
        _report(report, rank, RankOutcome(EXIT_FAILED, "failed", reason))
        if report is None:
            print(f"apts-train: error: rank {rank}: {reason}", file=sys.stderr)
        exit_rank(EXIT_FAILED)

    timeout = float(cfg["launcher"].get("heartbeat_s", 45))
    hb = Heartbeat(
        dist.distributed_c10d._get_default_store(),
        rank,
        world,
        interval=min(5.0, max(0.5, timeout / 10)),
        timeout=timeout,
        on_stall=on_stall,
    )
    hb.start()
    return hb


def _report(report: Path | None, rank: int, out: RankOutcome) -> None:
    """Tell the supervising launcher why this rank stops (spawned ranks only)."""
    if report is not None and out.status != "completed":
        rep = {"status": out.status, "reason": out.reason, "trace": out.trace, "t": time.time()}
        text = json.dumps(rep)
        (report / f"rank{rank}.json").write_text(text)


def run_rank(
    cfg: dict, run_dir: str, ds: Dataset, rank: int, world: int, plan: Plan, report: Path | None
) -> RankOutcome:
    """Train as one rank and leave the process group cleanly; never raises.

    On success every rank passes a last barrier before the group is destroyed, so none
    leaves while rank 0 still evaluates; otherwise peers may be gone and the rank just
    reports (``report``: the launcher's directory for spawned ranks).
    """
    install_signal_handlers()
    hb = None
    err: BaseException | None = None
    try:
        hb = _heartbeat(cfg, run_dir, rank, world, report)
        ckpt = load_checkpoint(run_dir) if plan.action == "resume" else None
        train(cfg, run_dir, ds, rank=rank, world_size=world, resume=ckpt)
    except BaseException as e:
        err = e
    out = _outcome(err)
    ignore_signals()
    try:
        if out.code == EXIT_OK and world > 1:
            Comm().barrier()  # every rank finishes together
    except Exception as e:
        out = RankOutcome(EXIT_FAILED, "failed", f"final barrier: {e}".splitlines()[0])
    if hb is not None:
        hb.stop()
    if out.code == EXIT_OK and dist.is_initialized():
        dist.destroy_process_group()
    _report(report, rank, out)
    return out


def _spawned_rank(local_rank: int, cfg: dict, run_dir: str, ds: Dataset, job: str, plan) -> None:
    world = cfg["subdomains"]
    job_dir = Path(job)
    device = resolve_device(cfg)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    backend = "nccl" if device == "cuda" else "gloo"
    try:
        init_rank(
            backend, f"file://{job_dir}/store", local_rank, world, cfg["launcher"]["timeout_s"]
        )
    except BaseException as e:
        _report(job_dir, local_rank, RankOutcome(EXIT_FAILED, "failed", f"rendezvous: {e}"))
        exit_rank(EXIT_FAILED)
    out = run_rank(cfg, run_dir, ds, local_rank, world, plan, job_dir)
    exit_rank(out.code)


# ---------------------------------------------------------------------- supervision


class _SignalFlag:
    """While supervising: remember SIGTERM/SIGINT instead of dying, restore afterwards."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _set(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> _SignalFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._set)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _stop_all(processes: list, grace: float) -> None:
    """SIGTERM every live process, SIGKILL what is left after ``grace`` seconds."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    end = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, end - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.kill()
        p.join()


def _rank_report(job_dir: Path, world: int) -> dict | None:
    """The earliest rank report: the cause. (A rank that fails because a peer left writes
    its report after that peer wrote its own and exited.)"""
    reports = []
    for r in range(world):
        try:
            reports.append({"rank": r, **json.loads((job_dir / f"rank{r}.json").read_text())})
        except (OSError, ValueError):
            continue
    return min(reports, key=lambda rep: rep["t"], default=None)


_EXIT_OF_STATUS = {"diverged": EXIT_DIVERGED, "failed": EXIT_FAILED}


def _failure(run_dir: str, job_dir: Path, world: int, e: mp.ProcessExitedException) -> LaunchResult:
    """The job's result after rank ``e.error_index`` exited with ``e.exit_code``; the
    ranks' own reports say why, a signal number says it for a rank that could not."""
    code = e.exit_code
    rep = _rank_report(job_dir, world)
    if rep is None:
        rank = e.error_index
        if code < 0:
            name = signal.Signals(-code).name
            interrupted = -code in (signal.SIGTERM, signal.SIGINT)
            rep = {
                "status": "interrupted" if interrupted else "failed",
                "reason": f"rank {rank} {'got' if interrupted else 'was killed by'} {name}",
            }
            code = signal_exit_code(-code) if interrupted else EXIT_FAILED
        else:
            rep = {"status": "failed", "reason": f"rank {rank} exited with code {code}"}
    status, reason = rep["status"], rep["reason"]
    if not reason.startswith("rank "):
        reason = f"rank {rep.get('rank', e.error_index)}: {reason}"
    if status != "interrupted":
        code = EXIT_CONFIG if code == EXIT_CONFIG else _EXIT_OF_STATUS.get(status, EXIT_FAILED)
    if rep.get("trace"):
        log = Path(run_dir) / "error.log"
        try:
            log.write_text(rep["trace"])
            reason += f" (traceback in {log})"
        except OSError:
            pass
    record_outcome(run_dir, status, reason, force=True)
    return LaunchResult(code, status, reason)


def _raised(run_dir: str, e: mp.ProcessRaisedException) -> LaunchResult:
    text = str(e).strip()
    reason = f"rank {e.error_index} failed: {text.splitlines()[-1]}"
    log = Path(run_dir) / "error.log"
    try:
        log.write_text(text + "\n")
        reason += f" (traceback in {log})"
    except OSError:
        pass
    record_outcome(run_dir, "failed", reason)
    return LaunchResult(EXIT_FAILED, "failed", reason)


def _spawn(cfg: dict, run_dir: str, ds: Dataset, plan: Plan) -> LaunchResult:
    world = cfg["subdomains"]
    set_loopback_iface(cfg["launcher"]["master_addr"] or "127.0.0.1")
    with rendezvous_dir() as job_dir, _SignalFlag() as flag:
        ctx = mp.start_processes(
            _spawned_rank,
            args=(cfg, run_dir, ds, str(job_dir), plan),
            nprocs=world,
            join=False,
            start_method="spawn",
        )
        try:
            while not ctx.join(timeout=0.25, grace_period=GRACE_S):
                if flag.signum is not None:
                    _stop_all(ctx.processes, 2 * GRACE_S)
                    break
        except mp.ProcessExitedException as e:
            return _failure(run_dir, job_dir, world, e)
        except mp.ProcessRaisedException as e:  # a bug outside run_rank's own handling
            return _raised(run_dir, e)
        finally:
            _stop_all(ctx.processes, 0.0)
        if flag.signum is not None:
            why = f"stopped by {signal.Signals(flag.signum).name}"
            record_outcome(run_dir, "interrupted", why, force=True)
            return LaunchResult(signal_exit_code(flag.signum), "interrupted", why)
    return LaunchResult(final=read_final(run_dir))


def _run_single(cfg: dict, run_dir: str, ds: Dataset, plan: Plan) -> LaunchResult:
    """One rank in this process (no process group); signals end it the same way."""
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        out = run_rank(cfg, run_dir, ds, 0, 1, plan, None)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if out.trace:
        reason = f"{out.reason} (traceback in {Path(run_dir) / 'error.log'})"
        return LaunchResult(out.code, out.status, reason)
    return LaunchResult(out.code, out.status, out.reason, read_final(run_dir))


def read_final(run_dir: str) -> dict:
    summary = read_summary(Path(run_dir)) or {}
    return {k: v for k, v in summary.items() if k not in ("status", "data", "reason")}


def launch(cfg: dict, run_dir: str, plan: Plan) -> LaunchResult:
    """Run one training job described by the resolved config ``cfg`` in ``run_dir``
    (claimed by the caller, who also made the ``plan``: start or resume)."""
    try:
        ds = load_data(cfg)
        check_data_fits(cfg, ds)
    except (DataError, ConfigError) as e:
        return LaunchResult(EXIT_CONFIG, "failed", str(e))
    if resolve_device(cfg) == "cuda" and cfg["subdomains"] > torch.cuda.device_count():
        return LaunchResult(
            EXIT_CONFIG,
            "failed",
            f"subdomains={cfg['subdomains']} needs one GPU per rank but "
            f"{torch.cuda.device_count()} are visible; use fewer subdomains, device=cpu, "
            "or torchrun across several machines",
        )
    if cfg["subdomains"] == 1:
        return _run_single(cfg, run_dir, ds, plan)
    return _spawn(cfg, run_dir, ds, plan)
