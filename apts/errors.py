"""The project's exception types and :func:`one_line`: a leaf every layer imports.

Each error a person can act on carries a one-line message that says what is wrong and
how to fix it; the CLI prints it and exits with the code of its kind.
"""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """A config value a person must change; the message says which and how."""


class OptionError(ValueError):
    """An option (a constructor argument, a config key) outside what it allows. The message
    reads ``<option>=<value!r> <rule>``, e.g. ``memory=0 must be an integer in [1, 128]``;
    ``option``, ``value`` and ``rule`` say the same as fields, so that the config check can
    name the key (``optimizer.memory``) without reading the text back. Raised by
    :mod:`apts.checks`, for the optimizers and the config layer alike."""

    def __init__(self, option: str, value: object, rule: str):
        super().__init__(f"{option}={value!r} {rule}")
        self.option, self.value, self.rule = option, value, rule


class DataError(Exception):
    """A dataset is missing or corrupt. The message is one line: what, where, how to fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class RunDirError(Exception):
    """A run directory problem a person must fix; the message is one line."""


class Diverged(Exception):
    """The training loss went non-finite or above ``max_loss``; every rank raises it at
    the same epoch end. ``step`` is the first such step of the epoch (1-based) on any rank."""

    def __init__(self, epoch: int, step: int, max_loss: float | None):
        limit = "" if max_loss is None else f" or above max_loss={max_loss:g}"
        super().__init__(f"training loss not finite{limit} at epoch {epoch}, step {step}")
        self.epoch = epoch
        self.step = step


class Interrupted(BaseException):
    """Raised in the main thread by a stop signal (SIGTERM, SIGINT, SIGHUP). A
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = int(signum)


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
