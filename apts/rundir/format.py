"""The run-directory format: the files a run writes, how a run ended, and strict JSON.

``summary.json`` records how a run ended: ``status`` is ``running`` while it trains, then
one of :data:`STATUSES`, with ``epoch`` (the last complete epoch) and, when it did not
complete, a one-line ``reason``. It is written by :func:`write_summary` alone, which never
lets a completed (or diverged) record give way to one of no more epochs. Every JSON file
written here is strict JSON: a non-finite number is written as ``null``, and the reader
rejects NaN and Infinity. Writes go through
a temporary name and an atomic rename, so a file is whole or absent.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from apts.errors import RunDirError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
ERROR_LOG = "error.log"
LOCK = ".lock"
OVERRIDES = "overrides.yaml"

# How a run ended. "completed" and "diverged" are final: resuming cannot change them.
STATUSES = ("completed", "failed", "interrupted", "diverged")
FINAL = ("completed", "diverged")
# Files that make a directory "hold a run" (Hydra's own .hydra/ and an empty tb/ do not).
RESULT_FILES = (METRICS, SUMMARY, CHECKPOINT)


def fs_error(path: Path | str, err: OSError, doing: str = "write") -> RunDirError:
    """One line for a filesystem error: what could not be done where, and why."""
    why = os.strerror(err.errno) if err.errno else str(err)
    hint = {
        errno.ENOSPC: "; free some space or choose another directory",
        errno.EROFS: "; the filesystem is read-only: choose another directory",
        errno.EACCES: "; choose a directory you can write to",
        errno.ENOTDIR: "; a part of the path is a file, not a directory",
        errno.EEXIST: "; a file of that name is in the way",
    }.get(err.errno or 0, "")
    return RunDirError(f"cannot {doing} {path}: {why}{hint}")


# ----------------------------------------------------------------------------- JSON


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (recursively)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def strict_dumps(obj: Any, **kwargs: Any) -> str:
    """JSON text that any strict parser accepts: NaN and infinities become null."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def strict_loads(text: str) -> Any:
    """Parse strict JSON (NaN/Infinity are errors, as in every other JSON reader)."""
    return json.loads(text, parse_constant=_reject_constant)


# ---------------------------------------------------------------------------- files


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary sibling and an atomic rename.

    Whatever happens (a full disk, a signal), the old file stays intact and the temporary
    one is removed. Filesystem errors become a one-line :class:`RunDirError`.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise fs_error(path, e) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(strict_dumps(obj, indent=1) + "\n"))


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json, or None when it is missing or unreadable."""
    try:
        return strict_loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def metrics_epochs(run_dir: Path) -> list[int]:
    """Epoch numbers of the complete lines of metrics.jsonl (a torn last line is ignored)."""
    try:
        text = (Path(run_dir) / METRICS).read_text()
    except OSError:
        return []
    epochs = []
    for line in text.splitlines():
        try:
            epochs.append(int(strict_loads(line)["epoch"]))
        except (ValueError, KeyError, TypeError):
            break
    return epochs


def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_summary(run_dir: Path | str, status: str, **fields: Any) -> bool:
    """Write summary.json: ``status``, ``epoch`` (the last complete line of metrics.jsonl)
    and ``fields`` (a ``reason``, the final metrics, the run's own information such as its
    data's provenance). The one writer of the file.

    - ``running`` starts a new record (a run starting, resuming, or logging an epoch);
      any other status ends it, keeping what the running record said about the run (its
      ``pid`` and ``host`` aside) and stamping ``ended_at``.
    - A completed or diverged record is final: a later record replaces it only when it has
      more epochs (an extension that trained on). Returns whether the file was written.
    - On a full disk the file is rewritten in place when the atomic write cannot be done
      (the old record's blocks hold the new one), so a run's end is still recorded.

    Raises :class:`RunDirError` when the file cannot be written at all.
    """
    path = Path(run_dir) / SUMMARY
    old = read_summary(Path(run_dir)) or {}
    epochs = metrics_epochs(Path(run_dir))
    epoch = epochs[-1] if epochs else 0
    if old.get("status") in FINAL and epoch <= int(old.get("epoch") or 0):
        return False
    if status == "running":
        summary = {"status": status, "epoch": epoch, **fields}
    else:
        kept = {k: v for k, v in old.items() if k not in ("pid", "host", "reason", "step")}
        summary = {**kept, "status": status, "epoch": epoch, "ended_at": now(), **fields}
    text = strict_dumps(summary, indent=1) + "\n"
    try:
        atomic_write(path, lambda p: p.write_text(text))
    except RunDirError as e:
        if not path.is_file():
            raise
        try:
            with open(path, "r+") as f:
                f.write(text)
                f.truncate()
        except OSError:
            raise e from None
    return True
