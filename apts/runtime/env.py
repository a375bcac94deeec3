"""Which world this process is in, read from its environment alone (no torch): a rank of
a torchrun/SLURM world (``env://``), a task of a submitit job, or neither (this process
starts its ranks itself). Read before anything heavy is imported, so the command line
can decide early whether it will start ranks (:mod:`apts.runtime.prestart`)."""

from __future__ import annotations

import os

from apts.errors import ConfigError


def _env_int(key: str, lo: int, hi: int | None = None, default: str | None = None) -> int:
    text = os.environ.get(key, default)
    try:
        value = int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = None
    if value is None or value < lo or (hi is not None and value >= hi):
        upper = f" and < {hi}" if hi is not None else ""
        raise ConfigError(
            f"{key}={text!r} in the environment must be an integer >= {lo}{upper} (set by "
            "torchrun/SLURM); unset WORLD_SIZE and RANK to run without them"
        )
    return value


def torchrun_env() -> dict[str, int] | None:
    """World coordinates when this process was started by torchrun/SLURM (env://): None
    without ``WORLD_SIZE`` and ``RANK``; a one-line :class:`ConfigError` when they, or
    what ``env://`` needs beside them (``MASTER_ADDR``, ``MASTER_PORT``), are unusable."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    world = _env_int("WORLD_SIZE", 1)
    env = {
        "world_size": world,
        "rank": _env_int("RANK", 0, world),
        "local_rank": _env_int("LOCAL_RANK", 0, default="0"),
    }
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing and not under_submitit():  # a submitit task exports them when it joins
        raise ConfigError(
            f"WORLD_SIZE and RANK are set (a torchrun/SLURM world) but {' and '.join(missing)} "
            "not: start the ranks with torchrun, or unset WORLD_SIZE and RANK (left over in "
            "this shell?) to run here"
        )
    return env


def submitit_world() -> dict[str, int] | None:
    """In a task of a submitit job with several tasks (``hydra/launcher=submitit_slurm`` or
    ``submitit_local``): export the job's world as the ``env://`` variables (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, from submitit's
    ``TorchDistributedEnvironment``) and return :func:`torchrun_env`, so the task joins
    like a torchrun rank. None outside submitit and for a one-task job, which spawns its
    ranks itself (:func:`apts.runtime.launch.launch`).

    A one-node job meets on 127.0.0.1 (submitit names the node by its hostname, which a
    machine without a network may not resolve); the port is submitit's, drawn from the job
    id, so the jobs of a sweep sharing a node use different ports.
    """
    if not under_submitit():
        return None
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    job = JobEnvironment()
    if job.num_tasks == 1:
        return None
    # CUDA_VISIBLE_DEVICES is left to SLURM (--gpus-per-task gives each task its GPU)
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if job.num_nodes == 1:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
    return torchrun_env()


def under_submitit() -> bool:
    """This process is a task of a submitit job (one task or several)."""
    return "SUBMITIT_EXECUTOR" in os.environ
