"""Running apts-train as a person does: a subprocess, its exit code, its stderr, its files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apts.training.loop import TIMING_KEYS

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# 1200 training samples after 120 are held out for validation
SMALL = [
    "dataset=synthetic",
    "dataset.n_train=1320",
    "dataset.val_size=120",
    "dataset.n_test=300",
    "progress=false",
]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run ``python -m apts.cli args`` to the end; the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "apts.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(env),
    )


def start_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, session: bool = False
) -> subprocess.Popen:
    """Start ``python -m apts.cli args`` in the background (stdout/stderr piped);
    ``session``: in a session of its own, so that a signal can reach its whole group."""
    return subprocess.Popen(
        [sys.executable, "-m", "apts.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(env),
        start_new_session=session,
    )


@contextlib.contextmanager
def tmpfs(path: Path, *options: str, size: str = "256k"):
    """A small tmpfs at ``path`` (root only; the test is skipped where mounting is not
    allowed)."""
    path.mkdir()
    opts = ",".join((f"size={size}", *options))
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def busy_cores(n: int = 2):
    """Keep ``n`` cores busy (a process group of its own) for the ``with`` block."""
    spin = "def f(_):\n    while True: pass\n"
    code = f"import multiprocessing as m\n{spin}m.Pool({n}).map(f, range({n}))"
    burner = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        yield
    finally:
        os.killpg(burner.pid, signal.SIGKILL)  # the pool's workers too
        burner.wait()


def strict_json(text: str):
    """json.loads that rejects NaN/Infinity, as strict JSON parsers do."""

    def reject(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def read_metrics(run_dir: Path) -> list[dict]:
    return [strict_json(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_summary(run_dir: Path) -> dict:
    return strict_json((run_dir / "summary.json").read_text())


def without_timings(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock figures, for run-to-run comparison (everything else,
    ``comm_by_kind`` included, repeats exactly)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def error_lines(stderr: str) -> list[str]:
    """The non-empty lines of stderr (progress bars and warnings included)."""
    return [ln for ln in stderr.splitlines() if ln.strip()]


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    """Poll until ``predicate()``; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended early ({proc.returncode}):\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def epochs_logged(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def spawned_ranks(pid: int) -> list[int]:
    """The ranks the launcher ``pid`` started: its children started by
    torch.multiprocessing's spawn (CUDA), or the children of its rank server (the
    forkserver that forks CPU ranks, apts.runtime.prestart)."""
    ranks = []
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            ranks.append(child)
        elif b"multiprocessing.forkserver" in cmdline:
            ranks += children(child)
    return ranks


def alive(pid: int) -> bool:
    """Whether ``pid`` still exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(proc: subprocess.Popen) -> None:
    """Make sure a started process and its children are gone (test cleanup)."""
    if proc.poll() is None:
        for child in [*spawned_ranks(proc.pid), *children(proc.pid)]:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
    proc.communicate()
