"""One job, from its resolved config to its :class:`~apts.runtime.outcome.Outcome`.

The order is what keeps bad input from leaving anything behind: decide what the run
directory calls for (start, restart, resume or skip: :func:`apts.rundir.claim.plan_run`,
reading only), run every check that needs the data or the directory's files
(:func:`apts.runtime.launch.prepare`), and only then claim the directory and run. In a
torchrun/SLURM world rank 0 does the same for every rank (:mod:`apts.runtime.world`).
"""

from __future__ import annotations

from apts.errors import ConfigError, DataError, RunDirError
from apts.rundir.claim import RunLock, claim, plan_run, saved_config
from apts.runtime.env import torchrun_env
from apts.runtime.launch import launch, prepare
from apts.runtime.outcome import Outcome, Status
from apts.runtime.world import join_world


def run_job(cfg: dict, run_dir: str, overrides: list[str] | None = None) -> Outcome:
    """Check, claim and run the job of ``cfg`` in ``run_dir``; never raises for a run that
    failed (a stop signal before the run started propagates as
    :class:`~apts.errors.Interrupted`: nothing was written)."""
    env = torchrun_env()
    if env is not None:
        return join_world(cfg, run_dir, env, overrides)
    try:
        RunLock(run_dir).check_free()
        plan = plan_run(run_dir, cfg, saved_config(run_dir))
        if plan.action == "skip":
            return Outcome(Status.SKIPPED, plan.note)
        ds = prepare(cfg, run_dir, plan)
        lock, plan = claim(run_dir, cfg, overrides)
    except (ConfigError, DataError, RunDirError) as e:
        return Outcome.failed(str(e), bad_input=True)
    try:
        if plan.action == "skip":  # another process finished it meanwhile
            return Outcome(Status.SKIPPED, plan.note)
        return launch(cfg, run_dir, plan, ds)
    finally:
        lock.release()
