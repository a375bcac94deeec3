"""Claiming a run directory: the lock, what the directory holds, and whether a run starts,
resumes or skips there.

A run owns its directory for its whole life through an exclusive ``flock`` on
``<dir>/.lock``; the kernel drops the lock when the process dies, so a crashed run never
leaves a stale claim behind. A directory that already holds a run's results is never
written into again, except to resume that run. The files themselves are
:mod:`apts.rundir.format`.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apts.errors import RunDirError
from apts.rundir.format import (
    CHECKPOINT,
    CONFIG,
    ERROR_LOG,
    FINAL,
    LOCK,
    OVERRIDES,
    RESULT_FILES,
    atomic_write,
    fs_error,
    metrics_epochs,
    read_summary,
)

# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class DirState:
    """What a run directory holds: ``status`` from summary.json (None without one),
    ``epoch`` the last epoch in metrics.jsonl, ``checkpoint`` whether one is saved."""

    path: Path
    status: str | None
    epoch: int
    checkpoint: bool
    has_results: bool

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def describe(self) -> str:
        status = self.status or "no summary"
        return f"{status}, {self.epoch} epoch{'s' if self.epoch != 1 else ''} logged"


def inspect_dir(run_dir: Path | str) -> DirState:
    path = Path(run_dir)
    summary = read_summary(path) or {}
    epochs = metrics_epochs(path)
    has = any((path / f).exists() for f in RESULT_FILES)
    return DirState(
        path=path,
        status=summary.get("status"),
        epoch=epochs[-1] if epochs else 0,
        checkpoint=(path / CHECKPOINT).is_file(),
        has_results=has,
    )


# ---------------------------------------------------------------------------- lock


class RunLock:
    """Exclusive claim of a run directory for this process's life (``flock``).

    ``acquire()`` creates the directory if needed; a second claimant gets a one-line
    :class:`RunDirError` naming the holder's pid. The lock file stays (it is tiny and
    harmless); the lock itself goes with the process.
    """

    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise fs_error(self.dir, e, "create the run directory") from None
        self._lock(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirError(
                f"run directory {self.dir} is in use by another run (pid {holder}); "
                "wait for it, or choose another directory (hydra.run.dir=... or out_dir=...)"
            ) from None

    def check_free(self) -> None:
        """Raise the one-line :class:`RunDirError` of :meth:`acquire` when another process
        holds the directory; create nothing (a check before the claim)."""
        try:
            fd = os.open(self.dir / LOCK, os.O_RDWR)
        except OSError:
            return  # no lock file: nobody holds it (acquire says what else is wrong)
        self._lock(fd)
        os.close(fd)  # closing the file drops the probe's own lock

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---------------------------------------------------------------------------- plan

# Keys that may differ between a run and its resumption: how it is watched and where it
# runs, not what it computes.
RESUMABLE_KEYS = ("epochs", "progress", "resume", "out_dir", "launcher")


@dataclass(frozen=True)
class Plan:
    """What to do with a run directory: ``fresh`` (start), ``restart`` (start again in
    place: a run that stopped before its first checkpoint), ``resume`` (continue from its
    checkpoint) or ``skip`` (it already ended; ``note`` says how)."""

    action: str
    note: str = ""


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved configs (resumable keys aside)."""
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                key = f"{prefix}{k}"
                if key.split(".")[0] not in RESUMABLE_KEYS:
                    walk(a.get(k), b.get(k), key + ".")
        elif a != b:
            out.append(prefix.rstrip("."))

    walk(saved, current, "")
    return out


def clear_results(run_dir: Path) -> None:
    """Remove what a failed run without a checkpoint left, before starting it afresh."""
    import shutil

    for name in (*RESULT_FILES, ERROR_LOG, "train.log"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tb", ignore_errors=True)


def plan_run(run_dir: Path | str, cfg: dict[str, Any], saved_cfg: dict[str, Any] | None) -> Plan:
    """Decide what to do with ``run_dir``; reads only (:func:`claim` decides again under
    the lock, and clears what a restart replaces).

    ``cfg["resume"]``: None — the directory must not hold a run; ``"auto"`` or a path —
    skip a run that ended (completed or diverged; a path may extend a completed one with
    more ``epochs``), resume one that stopped (from its checkpoint, if it computes the same
    thing), start again in place one that stopped before any checkpoint. A resume whose
    ``epochs`` ends at or before the epoch the run reached is refused: it trains nothing.
    """
    state = inspect_dir(run_dir)
    mode = cfg.get("resume")
    if mode is None:
        if state.has_results:
            raise RunDirError(
                f"{state.path} already holds a run ({state.describe()}); continue it with "
                f"`apts-train resume={state.path}`, or choose another directory"
            )
        return Plan("fresh")
    if not state.has_results:
        if mode != "auto":
            raise RunDirError(f"nothing to resume in {state.path}: it holds no run")
        return Plan("fresh")
    if saved_cfg is not None and (diff := config_differences(saved_cfg, cfg)):
        raise RunDirError(
            f"{state.path} holds a different run ({', '.join(diff[:4])} differ); "
            "choose another directory"
        )
    if state.status == "diverged":
        if mode == "auto":
            return Plan("skip", f"diverged after epoch {state.epoch}")
        raise RunDirError(f"{state.path} diverged; resuming it would diverge again")
    if state.status == "completed" and state.epoch >= cfg["epochs"]:
        return Plan("skip", f"completed {state.epoch} epochs")
    if state.status != "completed" and state.epoch >= cfg["epochs"]:
        raise RunDirError(
            f"{state.path} stopped after epoch {state.epoch} ({state.describe()}): "
            f"epochs={cfg['epochs']} trains nothing; resume with epochs={state.epoch + 1} or more"
        )
    if not state.checkpoint:
        return Plan("restart", "no checkpoint.pt: starting it again from epoch 0")
    return Plan("resume")


def saved_config(run_dir: Path | str) -> dict[str, Any] | None:
    """The resolved config a run saved (config.yaml), or None; keys added to the configs
    since, that the file lacks, at the value its run used (:func:`with_implied`)."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:
        raise RunDirError(f"cannot read {path}: {e}".splitlines()[0]) from None
    return with_implied(cfg)  # type: ignore[arg-type]


def with_implied(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config saved before ``dataset._target_`` existed, with it: the loader its name
    names (``apts.data.load.<name>``), the one such a run used. Other configs as they are."""
    d = cfg.get("dataset")
    if isinstance(d, dict) and "name" in d and "_target_" not in d:
        return {**cfg, "dataset": {**d, "_target_": f"apts.data.load.{d['name']}"}}
    return cfg


def claim(
    run_dir: Path | str, cfg: dict[str, Any], overrides: list[str] | None = None
) -> tuple[RunLock, Plan]:
    """Lock ``run_dir`` for this run and decide what to do with it (:func:`plan_run`); a
    restart clears the results it replaces. A new run also records the command-line
    ``overrides`` it was started with (``overrides.yaml``: how apts-report matches a
    sweep's jobs to their directories). Call it once every check has passed: it creates
    the directory."""
    lock = RunLock(run_dir).acquire()
    try:
        plan = plan_run(run_dir, cfg, saved_config(run_dir))
        if plan.action == "restart":
            clear_results(Path(run_dir))
        if plan.action == "fresh" and overrides is not None:
            text = "".join(f"- {json.dumps(o)}\n" for o in overrides) or "[]\n"
            atomic_write(Path(run_dir) / OVERRIDES, lambda p: p.write_text(text))
        return lock, plan
    except BaseException:
        lock.release()
        raise
