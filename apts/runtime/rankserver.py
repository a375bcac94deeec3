"""How the rank server behaves (:mod:`apts.runtime.prestart`): imported by the server
alone, as the last module it preloads. Never import it elsewhere.

- **It leaves with the launcher, not on a signal.** SIGTERM and SIGHUP are ignored by the
  server (``multiprocessing.forkserver`` already ignores SIGINT), so a signal to the
  whole process group (a closed terminal, ``kill -- -PGID``) reaches the ranks and the
  launcher but leaves the server alive while the launcher still waits for the ranks'
  exit codes through it; the server leaves when the launcher closes its end of the
  server's pipe (the launcher exited, or was killed).
- **Each rank starts with the default handlers** for SIGTERM and SIGHUP (restored in the
  forked child), as a spawned rank would, until it installs its own
  (:func:`apts.runtime.lifecycle.install_signal_handlers`).
- **It leaves at once.** The server ends through ``os._exit`` instead of finalizing an
  interpreter that holds torch, ``torch._dynamo`` and sympy (about 1 s during which it
  still held the launcher's stdout and stderr open). The handler does nothing in the
  ranks, which inherit it: they leave through :func:`apts.runtime.lifecycle.exit_rank`.
"""

from __future__ import annotations

import atexit
import os
import signal

_SERVER = os.getpid()
_IGNORED = (signal.SIGTERM, signal.SIGHUP)


def _leave() -> None:
    if os.getpid() == _SERVER:
        os._exit(0)


def _rank_defaults() -> None:
    if os.getppid() == _SERVER:  # a rank the server forked (not a process a rank forks)
        for sig in _IGNORED:
            signal.signal(sig, signal.SIG_DFL)


for _sig in _IGNORED:
    signal.signal(_sig, signal.SIG_IGN)
os.register_at_fork(after_in_child=_rank_defaults)
atexit.register(_leave)
