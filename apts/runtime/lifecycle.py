"""How a rank stops: signals, a heartbeat that finds hung peers, and a clean exit.

- **Signals.** SIGTERM (SLURM pre-emption, torchrun, our launcher), SIGINT and SIGHUP
  (:data:`STOP_SIGNALS`) raise :class:`Interrupted` in the rank's main thread, between
  two Python operations; a rank blocked in a collective gets it as soon as the
  collective returns or fails because a peer left. The run is then recorded as
  interrupted and the rank exits with 128 + the signal number (143, 130, 129).
- **Heartbeat.** Every rank's :class:`Heartbeat` thread bumps a counter in the process
  group's store every ``interval`` seconds and watches the other ranks' counters. A rank
  whose counter has not moved for ``timeout`` seconds is stopped or hung (SIGSTOP, a
  deadlock outside Python): the watcher reports it and ends its own process, which ends
  the job (our launcher, or torchrun's agent, then stops the rest). A slow epoch is no
  false alarm: the counter moves while the main thread computes. A store that fails
  (a full TMPDIR) leaves the job unwatched: that is reported too, and ends the rank.
- **A deadline for stopping.** From the first stop signal a rank has
  :data:`STOP_DEADLINE_S` seconds to record how it ended and leave; a watchdog thread
  ends the process with 128 + the signal number if its cleanup hangs (a lock held by the
  interrupted frame, a peer that never answers), so a signal always stops every rank.
  What it writes is atomic, so nothing is left half-written.
- **Stacks on request.** SIGUSR1 prints every thread's Python stack to stderr
  (``faulthandler``): ``kill -USR1 <rank pid>`` shows where a rank is.
- **Exit.** :func:`exit_rank` ends a rank. After a normal end every rank has passed a
  final barrier (so none leaves while rank 0 still evaluates) and destroyed the process
  group; the process then leaves through ``os._exit`` once its files are flushed.
  Interpreter finalization is skipped on purpose: ``destroy_process_group`` does not stop
  gloo's threads while other references to the group live (``torch.optim`` imports
  ``torch._dynamo``, which holds some), so they run into finalization and the process
  may die with ``terminate called without an active exception`` (SIGABRT). A 4-rank
  init/all-reduce/``torch.optim.Adam``/destroy script aborted in 4 of 40 runs on 2 cores
  when it returned normally, in 0 of 80 when it left through ``os._exit``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from apts.errors import Interrupted

# The signals that stop a run cleanly, everywhere signals are handled: SIGTERM (SLURM
# pre-emption, torchrun, our launcher), SIGINT (Ctrl-C), SIGHUP (a closed terminal, an ssh
# session that ended). Each is named as itself in the run's reason.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_received: list[int] = []
_deadline: list[threading.Timer] = []


def received_signal() -> int | None:
    """The first of :data:`STOP_SIGNALS` this process received, or None."""
    return _received[0] if _received else None


# Seconds a rank has, from the first stop signal, to record how it ended and leave;
# cleanup takes well under one.
STOP_DEADLINE_S = 5.0


def _leave_after(seconds: float, code: int) -> None:
    """End this process with ``code`` in ``seconds`` unless it has left by then."""

    def leave() -> None:
        print(
            f"apts-train: a rank took over {seconds:.0f} s to stop; ending it (pid {os.getpid()})",
            file=sys.stderr,
        )
        flush_all()
        os._exit(code)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.start()
    _deadline[:] = [timer]


def disarm_deadline() -> None:
    """Cancel the stop deadline: the rank ran in the launcher's own process (one rank),
    which goes on to record the outcome and leaves by itself."""
    for timer in _deadline:
        timer.cancel()
    _deadline.clear()


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    if _received:  # already unwinding: a second signal must not interrupt the cleanup
        return
    _received.append(signum)
    _leave_after(STOP_DEADLINE_S, 128 + signum)
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Each of :data:`STOP_SIGNALS` raises :class:`Interrupted` (main thread only);
    SIGUSR1 prints every thread's stack to stderr."""
    _received.clear()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_interrupted)
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def ignore_signals() -> None:
    """From here on :data:`STOP_SIGNALS` are ignored (a rank finishing its cleanup)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Heartbeat(threading.Thread):
    """Bump this rank's counter in ``store`` and watch the other ranks' counters.

    ``on_stall(rank, seconds)`` is called (in this thread) when rank ``rank``'s counter has
    not moved for ``timeout`` seconds; ``on_error(exception)`` when the store fails while
    the job runs (after :meth:`stop`, a store that goes away is the job ending: nothing is
    reported). The thread then ends. Counters are compared on this process's own clock, so
    clocks of other machines do not matter.
    """

    PREFIX = "apts/heartbeat/"

    def __init__(
        self,
        store,
        rank: int,
        world_size: int,
        *,
        interval: float,
        timeout: float,
        on_stall: Callable[[int, float], None],
        on_error: Callable[[BaseException], None],
    ):
        super().__init__(name="apts-heartbeat", daemon=True)
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.interval = interval
        self.timeout = timeout
        self.on_stall = on_stall
        self.on_error = on_error
        self._halt = threading.Event()

    def _key(self, rank: int) -> str:
        return f"{self.PREFIX}{rank}"

    def _count(self, rank: int) -> int | None:
        key = self._key(rank)
        if not self.store.check([key]):
            return None
        return int(self.store.get(key))

    def run(self) -> None:
        peers = [r for r in range(self.world_size) if r != self.rank]
        now = time.monotonic()
        seen: dict[int, tuple[int | None, float]] = {r: (None, now) for r in peers}
        try:
            while not self._halt.is_set():
                self.store.add(self._key(self.rank), 1)
                now = time.monotonic()
                for r in peers:
                    count = self._count(r)
                    if count != seen[r][0]:
                        seen[r] = (count, now)
                    elif now - seen[r][1] > self.timeout:
                        self.on_stall(r, now - seen[r][1])
                        return
                self._halt.wait(self.interval)
        except Exception as e:
            if not self._halt.is_set():
                self.on_error(e)

    def stop(self) -> None:
        """Stop and join the thread (before the process group is destroyed)."""
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=max(5.0, 2 * self.interval))


def flush_all() -> None:
    """Flush what a rank has written: log handlers, stdout and stderr."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def exit_rank(code: int) -> None:
    """End this process now with ``code``, after flushing (see the module docstring)."""
    flush_all()
    os._exit(code)
