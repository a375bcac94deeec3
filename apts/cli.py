"""Command-line entry point ``apts-train`` (Hydra).

The flow: check the command line before anything runs — the override syntax, the
group choices, and the composed config of every job of a sweep (so a typo or a bad
value fails in one line with exit code 2, before any rank starts); then let Hydra run
the job(s). Each job claims its run directory (:mod:`apts.rundir.claim`), decides whether to
start, resume or skip, and hands the resolved config to :mod:`apts.runtime.launch`.

- A single run exits with the job's code: 0, 1 (failed), 2 (bad input), 3 (diverged),
  129/130/143 (interrupted by SIGHUP/SIGINT/SIGTERM), after one line on stderr.
- A sweep (``-m``) goes on past failed jobs (each records its failure in its directory)
  and ends with one line listing them and exit code 1; a signal stops the whole sweep.
- ``apts-train resume=DIR [epochs=N]`` continues the run in DIR with DIR's config.

Nothing here knows about optimizers' maths.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from apts.config.precheck import precheck
from apts.config.validate import CONFIG_DIR, validate
from apts.errors import ConfigError, Interrupted, RunDirError
from apts.rundir.claim import RESUMABLE_KEYS, inspect_dir, saved_config
from apts.rundir.format import LOCK, read_summary
from apts.runtime import prestart
from apts.runtime.env import submitit_world, torchrun_env, under_submitit
from apts.runtime.lifecycle import exit_rank, flush_all, install_signal_handlers
from apts.runtime.outcome import EXIT_BAD_INPUT, EXIT_CODES, Outcome, Status, record

PROG = "apts-train"


def _fail(msg: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def _torchrun_overrides(argv: list[str]) -> list[str]:
    """Under torchrun every rank runs Hydra: give them one run dir (a timestamp or a random
    name could differ between ranks)."""
    env = torchrun_env()
    if env is None or any(a.startswith(("-m", "--multirun")) for a in argv):
        return []
    if any(a.startswith(("hydra.run.dir=", "out_dir=")) for a in argv):
        return []
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    return [
        f"hydra.run.dir=outputs/runs/torchrun-{run_id}"
        "_${dataset.name}_${model.name}_${optimizer.name}_N${subdomains}"
    ]


# --------------------------------------------------------------------------- one job


def _discard_if_empty(run_dir: Path) -> None:
    """A run that never started leaves no directory behind (Hydra creates it early)."""
    try:
        if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {LOCK}:
            (run_dir / LOCK).unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:
        pass


# The jobs of this sweep that did not complete: directory name -> one-line description.
_failed_jobs: dict[str, str] = {}


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from apts.runtime.job import run_job  # torch: loaded once the rank server is starting

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    submitit_world()  # a task of a cluster job: join its tasks' world (env://)
    run_dir = Path(cfg.out_dir or hc.runtime.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        validate(resolved, hc.runtime.choices)
        out = run_job(resolved, str(run_dir), list(hc.overrides.task))
    except ConfigError as e:
        out = Outcome.failed(str(e), bad_input=True)
    except Interrupted:  # before the run started: nothing to keep
        if not multirun:
            _discard_if_empty(run_dir)
        raise
    return _job_end(out, run_dir, multirun, hc.job.override_dirname or "")


def _job_end(out: Outcome, run_dir: Path, multirun: bool, label: str) -> dict[str, Any]:
    """Report a job: a single run exits with its code, a sweep's job records its failure
    and lets the sweep go on (a signal stops the sweep).

    A task of a cluster job (submitit) returns, whatever happened, so that submitit
    pickles every task's result and the launcher collects the sweep: the sweep's process
    reads each job's outcome from its directory (:class:`SweepReport`)."""
    env = torchrun_env()
    if env is not None and under_submitit():
        # leave through os._exit once submitit has pickled the result (see
        # apts.runtime.lifecycle: gloo's threads may abort a normal interpreter exit); the
        # outcome is in run_dir
        atexit.register(exit_rank, 0)
        if env["rank"] != 0:
            return {"status": out.status.value, "dir": str(run_dir), "rank": env["rank"]}
    elif env is not None:
        if not out.ok and env["rank"] == 0:
            print(f"{PROG}: error: {out.message}", file=sys.stderr)
        exit_rank(out.exit_code)
    if out.status is Status.SKIPPED:
        print(f"{PROG}: {run_dir}: {out.reason}; skipped", file=sys.stderr)
        return {"status": out.status.value, "dir": str(run_dir)}
    if out.ok:
        return {"status": out.status.value, "dir": str(run_dir), **out.fields}
    if (not multirun or out.status is Status.INTERRUPTED) and not under_submitit():
        if out.bad_input and not multirun:
            _discard_if_empty(run_dir)
        what = f"job {label}: " if multirun else ""
        _fail(f"{what}{out.message}", out.exit_code)
    if out.bad_input and not inspect_dir(run_dir).has_results:
        record(run_dir, out)  # a sweep's job that could not start: said in its folder
    _failed_jobs[run_dir.name] = f"{label or run_dir.name} ({out.status.value}: {out.message})"
    print(f"{PROG}: error: job {label or run_dir}: {out.message}", file=sys.stderr)
    return {"status": out.status.value, "dir": str(run_dir), "error": out.message}


class SweepReport(Callback):
    """Hydra callback: after a sweep, the jobs that did not complete, in one line."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # jobs run by another process (e.g. a cluster launcher) report through their
        # directories; jobs run here are already in _failed_jobs
        for summary in sorted(Path(str(config.hydra.sweep.dir)).glob("*/summary.json")):
            job = summary.parent
            s = read_summary(job) or {}
            if s.get("status") not in (None, "completed", "running"):
                _failed_jobs.setdefault(job.name, f"{job.name} ({s['status']}: {s.get('reason')})")


# ---------------------------------------------------------------------------- resume


def _resumable(key: str) -> bool:
    """A key a resume may change: how the run is watched, not what it computes."""
    return key.split(".")[0] in RESUMABLE_KEYS and key.split(".")[0] not in ("resume", "out_dir")


def _resume_main(argv: list[str]) -> None:
    """``apts-train resume=DIR [epochs=N] [progress=...] [launcher.*=...]``: continue the
    run in DIR with DIR's config; only keys that do not change its results may change."""
    target = next(a.split("=", 1)[1] for a in argv if a.startswith("resume="))
    changes = [a for a in argv if not a.startswith("resume=")]
    for arg in changes:
        if not _resumable(arg.partition("=")[0]):
            _fail(
                f"resume={target} continues that run with its own config; only epochs, "
                f"progress and launcher.* may change (got '{arg}')"
            )
    run_dir = Path(target)
    try:
        cfg = saved_config(run_dir)
    except RunDirError as e:
        _fail(str(e))
    if cfg is None:
        _fail(f"nothing to resume in {run_dir}: it holds no run (no config.yaml)")
    try:
        _start_rank_server([cfg])
        conf = OmegaConf.create(cfg)
        for arg in changes:
            key = arg.partition("=")[0]
            if OmegaConf.select(conf, key, default=_MISSING) is _MISSING:
                raise ConfigError(f"unknown config key '{key}'; see {run_dir / 'config.yaml'}")
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist([arg]))
        cfg = OmegaConf.to_container(conf)
        validate({**cfg, "resume": None})
    except ConfigError as e:
        _fail(str(e))
    except Exception as e:  # a value OmegaConf cannot parse
        _fail(f"cannot parse the command line: {' '.join(str(e).split())}")
    cfg["resume"] = str(run_dir)
    from apts.runtime.job import run_job  # torch: loaded once the rank server is starting

    out = run_job(cfg, str(run_dir))
    _job_end(out, run_dir, False, "")
    if torchrun_env() is None:
        sys.exit(out.exit_code)


_MISSING = object()


def _start_rank_server(jobs: list) -> None:
    """Start the process that forks the ranks now, while this one goes on to import torch,
    when the jobs will start ranks here (:mod:`apts.runtime.prestart`)."""
    if prestart.wanted(jobs):
        prestart.prestart()


def _main(argv: list[str]) -> None:
    if any(a.startswith("resume=") and a not in ("resume=auto", "resume=null") for a in argv):
        _resume_main(argv)
        return
    try:
        precheck(argv, CONFIG_DIR, on_composed=_start_rank_server)
    except ConfigError as e:
        _fail(str(e))
    sys.argv = [sys.argv[0], *argv, *_torchrun_overrides(argv)]
    _hydra_main()
    if _failed_jobs:
        n = len(_failed_jobs)
        listed = "; ".join(_failed_jobs.values())
        _fail(
            f"{n} job{'s' if n > 1 else ''} did not complete: {listed}", EXIT_CODES[Status.FAILED]
        )


def main() -> None:
    """A stop signal (SIGTERM, SIGINT, SIGHUP) before a run has started (the checks, the
    data loading) ends the command in one line with 128 + its number; once runs are
    going, they handle it (:mod:`apts.runtime.launch`)."""
    install_signal_handlers()
    try:
        _main(sys.argv[1:])
    except Interrupted as e:
        out = Outcome.interrupted(e.signum)
        _fail(out.message, out.exit_code)


def run() -> None:
    """The ``apts-train`` program: :func:`main`, then leave without tearing the interpreter
    down, which takes about 0.5 s once torch is loaded. The exit handlers still run (logs
    flushed, multiprocessing's temporary folders removed, the rank server told to leave),
    then the process ends with main's exit code. A caller of :func:`main` keeps the
    ordinary exit; so does a process with a non-daemon thread still running."""
    try:
        main()
        code: Any = 0
    except SystemExit as e:
        code = e.code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()[1:]):
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    flush_all()
    os._exit(code)


if __name__ == "__main__":
    # `python -m apts.cli`: run the module `apts.cli`, not this `__main__` copy, so that the
    # SweepReport callback (configs/train.yaml names apts.cli.SweepReport) fills the same
    # _failed_jobs that main() reports: a cluster sweep's failures are only seen there
    from apts.cli import run as _run

    _run()
