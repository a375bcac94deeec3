"""The private folder of one job on this machine: the ranks' ``file://`` rendezvous and
their reports to the launcher, in ``$TMPDIR/apts-job-*``.

The folder is removed when the job ends, whatever happens to it; a launcher killed with
SIGKILL cannot, so each folder names its owner (``owner``: pid and start time, which a
reused pid does not share) and every job sweeps the folders of owners that are gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "apts-job-"
OWNER = "owner"


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _owner_line() -> str:
    return f"{os.getpid()} {_start_time(os.getpid()) or '?'}\n"


def _stale(folder: Path) -> bool:
    """The folder's owner is gone (no such process, or another one under its pid). A
    folder without an owner file is left alone: not ours to judge."""
    try:
        pid, start = (folder / OWNER).read_text().split()
        return _start_time(int(pid)) != start
    except (OSError, ValueError):
        return False


def sweep_stale(root: Path | None = None) -> list[Path]:
    """Remove the job folders of launchers that are gone; the folders removed."""
    if not Path("/proc/self/stat").exists():  # no /proc: owners cannot be told apart
        return []
    gone = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if folder.is_dir() and _stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    return gone


@contextmanager
def rendezvous_dir() -> Iterator[Path]:
    """A private folder for one job, removed afterwards whatever happens; stale folders of
    dead jobs are swept first."""
    sweep_stale()
    d = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        (d / OWNER).write_text(_owner_line())
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
