"""Start N ranks on this machine and supervise them.

- ``subdomains=1``: train in this process, no process group.
- ``subdomains=N``: start N processes with ``torch.multiprocessing`` on 127.0.0.1: forked
  from a server that has the rank's modules loaded on the CPU (:mod:`apts.runtime.prestart`),
  spawned for CUDA. They meet through a file in a private temporary folder (``file://``
  rendezvous, :mod:`apts.runtime.rendezvous`), so parallel jobs never collide: there is no
  port to pick. The dataset is loaded once here, before any rank starts (a missing file is
  one line and no rank), and shared with the ranks through shared memory. This process
  then supervises them: the first rank that fails ends the others (SIGTERM, then SIGKILL
  after a grace period); a stop signal to this process is passed on to every rank.
  Whatever happens, the ranks are gone and the folder removed when :func:`launch`
  returns, and the first failing rank's outcome is recorded
  (:func:`apts.runtime.outcome.record`).

A world started by someone else (torchrun, SLURM) is :mod:`apts.runtime.world`; one job
from its config to its outcome is :mod:`apts.runtime.job`. gloo serves CPU runs and NCCL
CUDA runs (one GPU per rank, ``LOCAL_RANK``). How a rank stops (signals, heartbeat,
exit) is :mod:`apts.runtime.lifecycle`.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from apts.config.factory import group_factory
from apts.data.dataset import Dataset, hold_out, val_count
from apts.errors import ConfigError, OptionError, RunDirError
from apts.rundir.claim import Plan
from apts.runtime.lifecycle import STOP_SIGNALS, disarm_deadline, exit_rank
from apts.runtime.outcome import Outcome, Status, first_failure, record
from apts.runtime.prestart import detach, prestart, start_method
from apts.runtime.rank import report_outcome, run_rank
from apts.runtime.rendezvous import rendezvous_dir
from apts.training.checkpoint import load_checkpoint
from apts.training.trial import trial_step

# Seconds a failing job's other ranks get to stop on SIGTERM before SIGKILL (twice, at
# most: torch.multiprocessing waits once before SIGTERM, once before SIGKILL).
GRACE_S = 4.0


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
    """The run's data: the dataset config's ``_target_`` called with its options
    (``download`` replaced when given) and the run's seed, then the validation split held
    out. An option out of range is a one-line :class:`ConfigError`."""
    d = cfg["dataset"]
    options = d if download is None else {**d, "download": download}
    try:
        ds = group_factory(options)(seed=cfg["seed"])
    except OptionError as e:
        raise ConfigError(f"dataset.{e}") from None
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


def check_checkpoint(run_dir: str, cfg: dict) -> None:
    """A resume's checkpoint is readable and this run's (its rank count), before anything
    is written: a :class:`RunDirError` otherwise."""
    ckpt = load_checkpoint(run_dir)
    if ckpt.get("world_size") != cfg["subdomains"]:
        raise RunDirError(
            f"{Path(run_dir) / 'checkpoint.pt'} was written by {ckpt.get('world_size')} ranks "
            f"but the run has subdomains={cfg['subdomains']}: it is not this run's checkpoint"
        )


def prepare(cfg: dict, run_dir: str, plan: Plan) -> Dataset:
    """Every check that needs the data or the run directory's files, before anything is
    written: the data loads and fits, the GPUs suffice, a resume's checkpoint is usable,
    the model takes the data and the optimizer its options (:func:`trial_step`). The data
    is returned; a check that fails raises a one-line error."""
    ds = load_data(cfg)
    check_data_fits(cfg, ds)
    trial_step(cfg, ds, step=None if resolve_device(cfg) == "cpu" else False)
    if resolve_device(cfg) == "cuda" and cfg["subdomains"] > torch.cuda.device_count():
        raise ConfigError(
            f"subdomains={cfg['subdomains']} needs one GPU per rank but "
            f"{torch.cuda.device_count()} are visible; use fewer subdomains, device=cpu, "
            "or torchrun across several machines"
        )
    if plan.action == "resume":
        check_checkpoint(run_dir, cfg)
    return ds


def set_loopback_iface(host: str) -> None:
    # gloo resolves the hostname to pick an interface; on machines without a network
    # that fails. For a loopback master, use the loopback device.
    if host.startswith("127.") and Path("/sys/class/net/lo").exists():
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def _spawned_rank(
    local_rank: int, cfg: dict, run_dir: str, ds: Dataset, job: str, plan, reports: list
) -> None:
    detach()  # from the rank server's lifeline: it leaves with the launcher
    world = cfg["subdomains"]
    report = reports[local_rank]  # this rank's end of its pipe to the launcher
    for r, other in enumerate(reports):  # so a rank that dies closes its pipe for good
        if r != local_rank:
            other.close()
    job_dir = Path(job)
    device = resolve_device(cfg)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    backend = "nccl" if device == "cuda" else "gloo"
    set_loopback_iface(cfg["launcher"]["master_addr"] or "127.0.0.1")  # before gloo starts
    try:
        init_rank(
            backend, f"file://{job_dir}/store", local_rank, world, cfg["launcher"]["timeout_s"]
        )
    except BaseException as e:
        out = Outcome.of_exception(e, local_rank)
        out.reason = f"rendezvous: {out.reason}"
        report_outcome(report, local_rank, out)
        exit_rank(out.exit_code)
    out = run_rank(cfg, run_dir, ds, local_rank, world, plan, report)
    exit_rank(out.exit_code)


# ---------------------------------------------------------------------- supervision


class _SignalFlag:
    """While supervising: remember a stop signal instead of dying, restore afterwards."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _set(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> _SignalFlag:
        for sig in STOP_SIGNALS:
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


def _drain(pipes: list[Connection], got: dict[int, Outcome]) -> dict[int, Outcome]:
    """Read the outcomes that the ranks have sent down their pipes into ``got`` (by rank);
    read while waiting, so that no rank blocks on a full pipe."""
    for r, conn in enumerate(pipes):
        try:
            if r not in got and conn.poll():
                got[r] = Outcome.from_json(conn.recv_bytes().decode())
        except (EOFError, OSError, ValueError, TypeError):
            continue
    return got


def _silent_rank(e: mp.ProcessExitedException | mp.ProcessRaisedException) -> Outcome:
    """The outcome of a rank that died without a report: its exit code or signal says it."""
    rank = e.error_index
    if isinstance(e, mp.ProcessRaisedException):  # a bug outside run_rank's own handling
        text = str(e).strip()
        return Outcome(Status.FAILED, f"failed: {text.splitlines()[-1]}", trace=text, rank=rank)
    code = getattr(e, "exit_code", None) or 1
    if code < 0 and -code in STOP_SIGNALS:
        return Outcome.interrupted(-code, rank)
    if code < 0:
        return Outcome.failed(f"was killed by {signal.Signals(-code).name}", rank)
    return Outcome.failed(f"exited with code {code}", rank)


def _job_outcome(reports: dict[int, Outcome], crash, signum: int | None) -> Outcome:
    """The job's outcome: a stop signal to this process, else the first failing rank's
    own report (a rank that fails because a peer left reports after that peer), else the
    exit of a rank that could not report, else rank 0's completed outcome."""
    if signum is not None:
        return Outcome.interrupted(signum)
    first = first_failure(list(reports.values()))
    if first is not None:
        return first
    if crash is not None:
        return _silent_rank(crash)
    return Outcome.completed(reports[0].fields if 0 in reports else {})


def _spawn(cfg: dict, run_dir: str, ds: Dataset, plan: Plan) -> Outcome:
    world = cfg["subdomains"]
    method = start_method(resolve_device(cfg))
    if method == "forkserver":
        prestart()  # a no-op when the CLI started it; otherwise the ranks wait for it here
    pipes = [mp.Pipe(duplex=False) for _ in range(world)]
    readers = [r for r, _ in pipes]
    reports: dict[int, Outcome] = {}
    with rendezvous_dir() as job_dir, _SignalFlag() as flag:
        try:
            ctx = mp.start_processes(
                _spawned_rank,
                args=(cfg, run_dir, ds, str(job_dir), plan, [w for _, w in pipes]),
                nprocs=world,
                join=False,
                start_method=method,
            )
        finally:
            for _, w in pipes:  # the ranks hold their own copies
                w.close()
        crash = None
        try:
            while not ctx.join(timeout=0.25, grace_period=GRACE_S):
                _drain(readers, reports)
                if flag.signum is not None:
                    _stop_all(ctx.processes, 2 * GRACE_S)
                    break
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as e:
            crash = e
        finally:
            _stop_all(ctx.processes, 0.0)
        _drain(readers, reports)
        for r in readers:
            r.close()
        return _job_outcome(reports, crash, flag.signum)


def _run_single(cfg: dict, run_dir: str, ds: Dataset, plan: Plan) -> Outcome:
    """One rank in this process (no process group); signals end it the same way."""
    old = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        return run_rank(cfg, run_dir, ds, 0, 1, plan, None)
    finally:
        disarm_deadline()
        for s, h in old.items():
            signal.signal(s, h)


def launch(cfg: dict, run_dir: str, plan: Plan, ds: Dataset) -> Outcome:
    """Run one training job described by the resolved config ``cfg`` in ``run_dir`` on the
    data ``ds`` (the caller claimed the directory and made the ``plan``: start, restart or
    resume) and record how it ended there."""
    run = _run_single if cfg["subdomains"] == 1 else _spawn
    return record(run_dir, run(cfg, run_dir, ds, plan))
