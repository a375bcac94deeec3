"""How runs stop: signals to the launcher or to a rank, hung ranks, ranks that finish
together, divergence. Each test drives the real CLI and its spawned ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from clitools import (
    SCRIPTS,
    SMALL,
    alive,
    busy_cores,
    children,
    cli,
    epochs_logged,
    error_lines,
    read_metrics,
    read_summary,
    spawned_ranks,
    start_cli,
    stop,
    strict_json,
    wait_for,
    without_timings,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")

LONG = [*SMALL, "batch_size=100", "epochs=1000"]


def _job_dirs(env: dict[str, str]) -> list[Path]:
    """The launcher's private job folders (rendezvous file, rank reports) left in TMPDIR."""
    return [p for p in Path(env["TMPDIR"]).iterdir() if p.name.startswith("apts-job-")]


def _private_tmp(tmp_path: Path) -> dict[str, str]:
    """TMPDIR for the job's rendezvous folder, to check that none is left behind."""
    d = tmp_path / "tmp"
    d.mkdir()
    return {"TMPDIR": str(d)}


def _signal_run(tmp_path: Path, target: str, sig: int, optimizer: str = "adam"):
    """Start a 2-rank run, wait for a checkpoint, send ``sig`` to ``target`` (launcher,
    rank0, rank1); return (proc, stderr, seconds to stop, ranks, env)."""
    env = _private_tmp(tmp_path)
    run = tmp_path / "run"
    proc = start_cli(
        *LONG,
        f"optimizer={optimizer}",
        "subdomains=2",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        env=env,
    )
    try:
        wait_for(lambda: (run / "checkpoint.pt").exists() and epochs_logged(run) >= 1, proc)
        ranks = spawned_ranks(proc.pid)
        assert len(ranks) == 2
        pid = {"launcher": proc.pid, "rank0": ranks[0], "rank1": ranks[1]}[target]
        t0 = time.monotonic()
        os.kill(pid, sig)
        _, err = proc.communicate(timeout=60)
        return proc, err, time.monotonic() - t0, ranks, env
    finally:
        stop(proc)


@pytest.mark.parametrize(
    "target,sig,code",
    [
        ("launcher", signal.SIGTERM, 143),
        ("launcher", signal.SIGINT, 130),
        ("rank1", signal.SIGTERM, 143),
        ("rank0", signal.SIGINT, 130),
    ],
)
def test_a_signal_stops_every_rank_and_leaves_a_resumable_run(tmp_path, target, sig, code):
    proc, err, seconds, ranks, env = _signal_run(tmp_path, target, sig)
    run = tmp_path / "run"
    assert proc.returncode == code, err[-3000:]
    assert seconds < 10
    assert not any(alive(r) for r in ranks)  # nothing orphaned
    assert _job_dirs(env) == []  # no rendezvous folder left
    lines = error_lines(err)
    assert lines[-1].startswith("apts-train: error:") and "Traceback" not in err, err[-3000:]
    assert signal.Signals(sig).name in lines[-1]
    summary = read_summary(run)
    assert summary["status"] == "interrupted"
    rows = read_metrics(run)  # whole strict-JSON lines only
    assert summary["epoch"] == rows[-1]["epoch"] >= 1
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)  # intact
    assert 1 <= ckpt["epoch"] <= summary["epoch"]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_an_interrupted_run_resumes_to_the_same_numbers(tmp_path):
    proc, err, _, _, _ = _signal_run(tmp_path, "launcher", signal.SIGTERM, optimizer="apts")
    assert proc.returncode == 143, err[-3000:]
    run = tmp_path / "run"
    done = read_summary(run)["epoch"]
    target = done + 2
    r = cli(f"resume={run}", f"epochs={target}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_summary(run)["status"] == "completed"
    ref = tmp_path / "ref"
    args = [*LONG, "optimizer=apts", "subdomains=2", f"epochs={target}", f"hydra.run.dir={ref}"]
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert without_timings(read_metrics(run)) == without_timings(read_metrics(ref))


def test_a_stopped_rank_is_found_by_the_heartbeat(tmp_path):
    env = _private_tmp(tmp_path)
    run = tmp_path / "run"
    proc = start_cli(
        *LONG,
        "optimizer=adam",
        "subdomains=2",
        "launcher.heartbeat_s=3",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        env=env,
    )
    try:
        wait_for(lambda: epochs_logged(run) >= 1, proc)
        ranks = spawned_ranks(proc.pid)
        os.kill(ranks[1], signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=90)
        seconds = time.monotonic() - t0
    finally:
        stop(proc)
    assert proc.returncode == 1, err[-3000:]
    assert seconds < 60  # far below the 600 s collective timeout: the heartbeat found it
    assert "rank 1 stopped responding" in error_lines(err)[-1], err[-3000:]
    assert not any(alive(r) for r in ranks)
    assert read_summary(run)["status"] == "failed"
    assert _job_dirs(env) == []


def test_slow_epochs_are_no_false_alarm(tmp_path):
    # epochs of several seconds against a 1 s heartbeat timeout: the beat comes from a
    # thread, not from the training loop, so only a stopped process goes quiet
    args = [*SMALL, "dataset.n_train=40000", "batch_size=20", "epochs=2", "optimizer=adam"]
    r = cli(
        *args, "subdomains=2", "launcher.heartbeat_s=1", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_metrics(tmp_path / "r")
    assert min(row["wall_s"] for row in rows) > 1.0  # really slower than the timeout


def test_a_killed_rank_ends_the_run_instead_of_hanging_the_others(tmp_path):
    run = tmp_path / "run"
    proc = start_cli(*LONG, "optimizer=apts", "subdomains=2", f"hydra.run.dir={run}", cwd=tmp_path)
    try:
        wait_for(lambda: (run / "metrics.jsonl").exists(), proc)
        ranks = spawned_ranks(proc.pid)
        os.kill(ranks[-1], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 1
    last = error_lines(err)[-1]
    assert last.startswith("apts-train: error: rank"), err[-2000:]
    assert read_summary(run)["status"] == "failed"
    read_metrics(run)  # whole lines


@pytest.mark.parametrize("optimizer,lr", [("sgd", "1e6"), ("adam", "1e6"), ("local_sgd", "1e6")])
def test_divergence_stops_the_run_with_its_own_status(tmp_path, optimizer, lr):
    run = tmp_path / "run"
    args = [*SMALL, f"optimizer={optimizer}", f"optimizer.lr={lr}", "subdomains=2", "epochs=5"]
    r = cli(*args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 3, r.stderr[-3000:]
    line = error_lines(r.stderr)[-1]
    assert line.startswith("apts-train: error:") and "epoch 1, step" in line, r.stderr
    summary = read_summary(run)  # strict JSON: no NaN
    assert summary["status"] == "diverged" and summary["epoch"] == 0 and summary["step"] >= 1
    assert not (run / "metrics.jsonl").exists() or read_metrics(run) == []


@pytest.mark.stress
@pytest.mark.timeout(3600)
def test_thirty_four_rank_runs_under_load_all_finish(tmp_path):
    # every rank passes a final barrier and leaves through os._exit: none aborts at exit
    with busy_cores():
        seeds = ",".join(str(s) for s in range(30))
        r = cli(
            "-m",
            *SMALL,
            "optimizer=apts",
            "subdomains=4",
            "batch_size=600",
            "epochs=2",
            f"seed={seeds}",
            f"hydra.sweep.dir={tmp_path}/sweep",
            cwd=tmp_path,
            timeout=3000,
        )
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = [strict_json(p.read_text()) for p in (tmp_path / "sweep").glob("*/summary.json")]
    assert len(summaries) == 30 and {s["status"] for s in summaries} == {"completed"}
    assert "terminate called" not in r.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_reproduce_alone_stops_its_sweep(tmp_path, sig, code):
    """`kill <pid of make reproduce's python>` (not the whole process group, as a terminal
    or SLURM does): the running sweep and its ranks stop too, nothing is left running,
    and the command says how to continue."""
    script = SCRIPTS / "reproduce.py"
    out = tmp_path / "out"
    cmd = [sys.executable, str(script), "--presets", "smoke", "--out", str(out), *LONG]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        sweep_dir = out / "quick" / "smoke"  # the default profile's folder
        wait_for(lambda: any(epochs_logged(d) >= 1 for d in sweep_dir.glob("0_*")), proc)
        sweep = [c for c in children(proc.pid) if b"apts.cli" in _cmdline(c)]
        assert len(sweep) == 1
        ranks = spawned_ranks(sweep[0])
        assert len(ranks) == 2
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err[-3000:]
        assert not any(alive(p) for p in [*sweep, *ranks])  # nothing orphaned
        assert "run the same command again to continue" in err
        (job,) = sweep_dir.glob("0_*")
        assert read_summary(job)["status"] == "interrupted"
    finally:
        stop(proc)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


HUNG_CLEANUP = """
import os, signal, threading
from apts.errors import Interrupted
from apts.runtime.lifecycle import install_signal_handlers
install_signal_handlers()
lock = threading.Lock()
lock.acquire()
try:
    os.kill(os.getpid(), signal.SIGINT)
    threading.Event().wait(1)  # the handler runs here
except Interrupted:
    print("interrupted; cleaning up", flush=True)
    lock.acquire()  # a cleanup that never finishes (a lock the interrupted frame held)
"""


def test_a_rank_whose_cleanup_hangs_after_a_signal_still_leaves():
    # run_rank's cleanup after a stop signal can block (a lock held by the interrupted
    # frame, a peer that never answers): the stop deadline ends the process anyway, with
    # the signal's exit code, so the launcher and the other ranks see it go
    r = subprocess.run(
        [sys.executable, "-c", HUNG_CLEANUP], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 130, r.stderr[-2000:]
    assert "interrupted; cleaning up" in r.stdout
    assert "took over" in r.stderr and "to stop" in r.stderr
