"""The process that starts a job's ranks, started as early as the command line allows.

A rank needs torch, the project and what its first optimizer step imports
(``torch._dynamo``, about 1 s): about 2.3 s of imports on one core, which spawned ranks
each paid after the launcher had paid its own. Ranks are instead forked from a
*forkserver* (:mod:`multiprocessing.forkserver`) that imports all of that once, in
parallel with the launcher's own start-up, right after the command line is composed and
before the launcher imports torch (:func:`prestart`). Each rank then starts with those
modules loaded. The server is single-threaded when it forks, holds no CUDA context and
no process group, and forks a fresh copy for every rank, so nothing of one rank's state
reaches another; it leaves when the launcher does.

Only CPU runs use it (:func:`start_method`): CUDA runs keep ``spawn``, the method torch
documents for CUDA, until the forked path has been measured on a GPU.

Nothing here imports torch: it runs before torch is loaded.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Mapping
from multiprocessing import forkserver

from apts.runtime.env import torchrun_env, under_submitit

# What every rank imports before it trains: the launcher's rank entry point (torch and
# the project's training code), what the first optimizer step imports, TensorBoard's
# writer and Hydra's instantiate.
PRELOAD = (
    "apts.runtime.launch",
    "torch._dynamo",
    "torch.utils.tensorboard",
    "hydra.utils",
    "apts.runtime.rankserver",
)


def start_method(device: str) -> str:
    """How the launcher starts ranks on ``device``: spawned on ``cuda``, else forked from
    the server (``auto`` before it is resolved counts as the CPU: the server is cheap to
    leave unused)."""
    return "spawn" if device == "cuda" else "forkserver"


def prestart() -> None:
    """Start the rank server now (if it is not running) with :data:`PRELOAD`; returns at
    once, the server imports in the background. Idempotent; a server already running is
    kept."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
    forkserver.ensure_running()


def wanted(jobs: Iterable[Mapping]) -> bool:
    """Whether a command whose jobs have the composed configs ``jobs`` will start ranks in
    this process: some job has ``subdomains`` > 1 on the CPU, and no one else starts the
    ranks (torchrun, a submitit launcher)."""
    if torchrun_env() is not None or under_submitit():
        return False
    try:
        for job in jobs:
            launcher = (job.get("hydra") or {}).get("launcher") or {}
            if "submitit" in str(launcher.get("_target_", "")):
                return False
            forked = start_method(str(job.get("device"))) == "forkserver"
            if forked and int(job.get("subdomains") or 1) > 1:
                return True
    except Exception:  # a bad value: validation, next, says what is wrong
        return False
    return False


def detach() -> None:
    """In a rank forked by the server: drop the rank's end of the server's lifeline.

    ``multiprocessing`` hands every forked child the launcher's end of the pipe whose
    closing tells the server to leave (so that a child could start processes through
    it); a rank never does. Closed, the server leaves as soon as the launcher is gone,
    even killed (SIGKILL), and then the ranks get SIGINT from the kernel
    (``PR_SET_PDEATHSIG``, set by torch.multiprocessing) and stop. Held, the ranks would
    train on after the launcher died, and keep the server alive. A no-op in a spawned
    rank."""
    server = forkserver._forkserver
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        os.close(fd)
        server._forkserver_alive_fd = None
