"""How a run ended: one :class:`Status`, its exit code in one table, one :class:`Outcome`
that travels from the rank that knows to the command line, and :func:`record`, which
writes it into the run directory.

An outcome is made in one place, :meth:`Outcome.of_exception`, inside the ``except``
block that caught the exception (so the traceback is the real one). A spawned rank hands
its outcome to the launcher as JSON down a pipe of its own (nothing on disk to fill); the
launcher takes the first failing rank's and records it; a single rank, or rank 0 of a
torchrun world, records its own. Whatever comes later never replaces a completed (or
diverged) record of the same epochs (:func:`apts.rundir.write_summary`).
"""

from __future__ import annotations

import json
import signal
import time
import traceback
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from apts.errors import ConfigError, DataError, Diverged, Interrupted, RunDirError, one_line
from apts.rundir.format import ERROR_LOG, atomic_write, write_summary


class Status(str, Enum):
    """How a run stands (summary.json's ``status``), or how a job of a sweep ended."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DIVERGED = "diverged"
    SKIPPED = "skipped"  # a job that had already ended: nothing was run


# The exit code of each way a job ends. INTERRUPTED adds the signal's number (the shell's
# convention: SIGHUP 129, SIGINT 130, SIGTERM 143); a FAILED job whose input was wrong
# (a value, the data, the run directory: nothing ran) exits with EXIT_BAD_INPUT.
EXIT_CODES = {
    Status.COMPLETED: 0,
    Status.SKIPPED: 0,
    Status.FAILED: 1,
    Status.DIVERGED: 3,
    Status.INTERRUPTED: 128,
}
EXIT_BAD_INPUT = 2


@dataclass
class Outcome:
    """How one rank, or one job, ended.

    ``reason``: one line unless it completed; ``trace``: the traceback of an unexpected
    exception (for error.log); ``rank``: the rank it happened in (None for the job as a
    whole); ``signum``: the signal that interrupted it; ``bad_input``: nothing ran because
    the input was wrong; ``fields``: what summary.json records besides (the last epoch's
    metrics of a completed run, the step of a diverged one); ``t``: when it happened
    (the first failing rank is the cause)."""

    status: Status
    reason: str | None = None
    trace: str | None = None
    rank: int | None = None
    signum: int | None = None
    bad_input: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    t: float = field(default_factory=time.time)

    @property
    def exit_code(self) -> int:
        if self.status is Status.INTERRUPTED:
            return EXIT_CODES[Status.INTERRUPTED] + int(self.signum or signal.SIGTERM)
        if self.status is Status.FAILED and self.bad_input:
            return EXIT_BAD_INPUT
        return EXIT_CODES[self.status]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def message(self) -> str:
        """The one line the command prints: the rank, then the reason."""
        reason = self.reason or self.status.value
        return reason if self.rank is None else f"rank {self.rank}: {reason}"

    # -------------------------------------------------------------------- making one

    @classmethod
    def completed(cls, fields: dict[str, Any] | None = None, rank: int | None = None) -> Outcome:
        return cls(Status.COMPLETED, rank=rank, fields=dict(fields or {}))

    @classmethod
    def interrupted(cls, signum: int, rank: int | None = None, when: str = "") -> Outcome:
        reason = f"stopped by {signal.Signals(signum).name}{when}"
        return cls(Status.INTERRUPTED, reason, rank=rank, signum=int(signum))

    @classmethod
    def failed(cls, reason: str, rank: int | None = None, *, bad_input: bool = False) -> Outcome:
        return cls(Status.FAILED, reason, rank=rank, bad_input=bad_input)

    @classmethod
    def of_exception(
        cls, e: BaseException, rank: int | None = None, signum: int | None = None
    ) -> Outcome:
        """Classify an exception (a signal received, ``signum``, wins over what it caused).
        Call it while ``e`` is being handled or with ``e`` itself: its traceback is
        formatted from ``e.__traceback__``."""
        if isinstance(e, Interrupted) or signum is not None:
            return cls.interrupted(e.signum if isinstance(e, Interrupted) else signum, rank)
        if isinstance(e, KeyboardInterrupt):
            return cls.interrupted(signal.SIGINT, rank)
        if isinstance(e, Diverged):
            return cls(Status.DIVERGED, str(e), rank=rank, fields={"step": e.step})
        if isinstance(e, (ConfigError, DataError)):
            return cls.failed(str(e), rank, bad_input=True)
        if isinstance(e, RunDirError):  # a full disk, a vanished directory: one line says it
            return cls.failed(str(e), rank)
        trace = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return cls(Status.FAILED, one_line(e), trace=trace, rank=rank)

    # ------------------------------------------------------------- between processes

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "status": self.status.value})

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        d = json.loads(text)
        return cls(**{**d, "status": Status(d["status"])})


def first_failure(outcomes: list[Outcome]) -> Outcome | None:
    """The cause among several ranks' outcomes: the earliest that did not complete (a rank
    that fails because a peer left reports after that peer)."""
    return min((o for o in outcomes if not o.ok), key=lambda o: o.t, default=None)


def record(run_dir: str | Path, outcome: Outcome) -> Outcome:
    """Write ``outcome`` into ``run_dir``: the traceback to error.log, the status to
    summary.json (never over a completed record of the same epochs). Never raises: what
    could not be written is said in the returned outcome's reason."""
    out = Outcome(**{**asdict(outcome), "status": outcome.status})
    if outcome.trace:
        log = Path(run_dir) / ERROR_LOG
        try:
            atomic_write(log, lambda p: p.write_text(outcome.trace))
            out.reason = f"{out.reason} (traceback in {log})"
        except RunDirError as e:
            out.reason = f"{out.reason} (its traceback could not be written: {e})"
    fields = {**outcome.fields}
    if outcome.status is not Status.COMPLETED:
        fields["reason"] = out.message
    try:
        write_summary(run_dir, outcome.status.value, **fields)
    except RunDirError as e:
        out.reason = f"{out.reason}; it could not be recorded: {e}"
    return out
