"""Be one rank of a world someone else started: torchrun, SLURM through submitit
(``hydra/launcher=submitit_slurm|submitit_local``), or any launcher that sets the
``env://`` variables. This process joins with ``env://`` and ``subdomains`` must equal
``WORLD_SIZE``; torchrun's agent (or the scheduler) plays the supervisor; rank 0 claims
the run directory and tells the others, through the store, what to do.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from apts.errors import ConfigError, DataError, RunDirError
from apts.rundir.claim import Plan, claim, record_outcome
from apts.runtime.launch import (
    LaunchResult,
    check_data_fits,
    load_data,
    read_final,
    resolve_device,
    run_rank,
    set_loopback_iface,
)
from apts.runtime.lifecycle import EXIT_CONFIG, EXIT_OK
from apts.training.comm import Comm


def torchrun_env() -> dict[str, int] | None:
    """World coordinates when this process was started by torchrun/SLURM (env://)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return {
        "world_size": int(os.environ["WORLD_SIZE"]),
        "rank": int(os.environ["RANK"]),
        "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
    }


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


def join_world(
    cfg: dict, run_dir: str, env: dict[str, int], overrides: list[str] | None = None
) -> LaunchResult:
    """Be one rank of a torchrun/SLURM world (``env://``). Rank 0 claims the run directory
    and decides, through the store, whether the ranks start, resume or skip."""
    if env["world_size"] != cfg["subdomains"]:
        return LaunchResult(
            EXIT_CONFIG,
            "failed",
            f"subdomains={cfg['subdomains']} but torchrun/SLURM started WORLD_SIZE="
            f"{env['world_size']} processes; pass subdomains={env['world_size']} or change "
            "--nproc-per-node/--nnodes (hydra.launcher.tasks_per_node/nodes)",
            claimed=False,
        )
    device = resolve_device(cfg)
    if device == "cuda":
        # one visible GPU: the scheduler gave this task its own (SLURM --gpus-per-task)
        torch.cuda.set_device(0 if torch.cuda.device_count() == 1 else env["local_rank"])
    else:
        set_loopback_iface(os.environ.get("MASTER_ADDR", ""))
    dist.init_process_group(
        "nccl" if device == "cuda" else "gloo",
        timeout=timedelta(seconds=cfg["launcher"]["timeout_s"]),
    )
    store = dist.distributed_c10d._get_default_store()
    rank = env["rank"]
    if rank == 0:
        try:
            _lock, plan = claim(run_dir, cfg, overrides)  # held until this process exits
            store.set("apts/plan", json.dumps({"action": plan.action, "note": plan.note}))
        except RunDirError as e:
            store.set("apts/plan", json.dumps({"error": str(e)}))
    decided = json.loads(store.get("apts/plan"))
    if "error" in decided:
        return LaunchResult(EXIT_CONFIG, "failed", decided["error"], claimed=False)
    plan = Plan(decided["action"], decided["note"])
    if plan.action == "skip":
        return LaunchResult(status="skipped", error=None, final={"note": plan.note})
    try:
        # one download per machine: local rank 0 fetches, the others wait and read
        if env["local_rank"] == 0:
            ds = load_data(cfg)
        Comm().barrier()
        if env["local_rank"] != 0:
            ds = load_data(cfg, download=False)
        check_data_fits(cfg, ds)
    except (DataError, ConfigError) as e:
        if rank == 0:  # no rank trains: the claimer says why in summary.json
            try:
                record_outcome(run_dir, "failed", str(e))
            except RunDirError:
                pass
        return LaunchResult(EXIT_CONFIG, "failed", str(e), claimed=False)
    out = run_rank(cfg, run_dir, ds, rank, env["world_size"], plan, None)
    if out.code != EXIT_OK and rank == 0 and out.trace:
        out.reason = f"{out.reason} (traceback in {Path(run_dir) / 'error.log'})"
    return LaunchResult(out.code, out.status, out.reason, read_final(run_dir) if rank == 0 else {})
