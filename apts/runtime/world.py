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

import torch
import torch.distributed as dist

from apts.errors import ConfigError, DataError, RunDirError
from apts.rundir.claim import Plan, claim, plan_run, saved_config
from apts.runtime.launch import (
    check_checkpoint,
    check_data_fits,
    load_data,
    resolve_device,
    set_loopback_iface,
)
from apts.runtime.outcome import Outcome, Status, record
from apts.runtime.rank import run_rank
from apts.training.comm import Comm
from apts.training.trial import trial_step


def _plan_of_rank0(cfg: dict, run_dir: str, rank: int, overrides: list[str] | None):
    """Rank 0 plans, checks and claims the run directory and tells the others through the
    store; every rank gets the plan, or the one-line error that stops them all."""
    store = dist.distributed_c10d._get_default_store()
    if rank == 0:
        try:
            plan = plan_run(run_dir, cfg, saved_config(run_dir))
            if plan.action == "resume":
                check_checkpoint(run_dir, cfg)
            if plan.action != "skip":
                _lock, plan = claim(run_dir, cfg, overrides)  # held until this process exits
            store.set("apts/plan", json.dumps({"action": plan.action, "note": plan.note}))
        except (RunDirError, ConfigError) as e:
            store.set("apts/plan", json.dumps({"error": str(e)}))
    decided = json.loads(store.get("apts/plan"))
    if "error" in decided:
        raise RunDirError(decided["error"])
    return Plan(decided["action"], decided["note"])


def join_world(
    cfg: dict, run_dir: str, env: dict[str, int], overrides: list[str] | None = None
) -> Outcome:
    """Be one rank of a torchrun/SLURM world (``env://``). Rank 0 claims the run directory
    and decides, through the store, whether the ranks start, resume or skip; it records
    how the run ended."""
    if env["world_size"] != cfg["subdomains"]:
        return Outcome.failed(
            f"subdomains={cfg['subdomains']} but torchrun/SLURM started WORLD_SIZE="
            f"{env['world_size']} processes; pass subdomains={env['world_size']} or change "
            "--nproc-per-node/--nnodes (hydra.launcher.tasks_per_node/nodes)",
            bad_input=True,
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
    rank = env["rank"]
    try:
        plan = _plan_of_rank0(cfg, run_dir, rank, overrides)
    except RunDirError as e:
        return Outcome.failed(str(e), bad_input=True)
    if plan.action == "skip":
        return Outcome(Status.SKIPPED, plan.note)
    try:
        # one download per machine: local rank 0 fetches, the others wait and read
        if env["local_rank"] == 0:
            ds = load_data(cfg)
        Comm().barrier()
        if env["local_rank"] != 0:
            ds = load_data(cfg, download=False)
        check_data_fits(cfg, ds)
        # every rank tries alike, in one process of its own: no collective
        trial_step(cfg, ds, step=None if device == "cpu" else False)
    except (DataError, ConfigError) as e:
        out = Outcome.failed(str(e), bad_input=True)
    else:
        out = run_rank(cfg, run_dir, ds, rank, env["world_size"], plan, None)
    return record(run_dir, out) if rank == 0 else out
