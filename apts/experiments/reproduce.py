"""Re-run the paper's comparisons and write the report (``make reproduce``).

Profiles:

- ``full``: the paper's presets (configs/experiment/paper_*): MNIST and CIFAR-10,
  APTS at N = 2, 4, 6, the Adam/SGD learning-rate grids at |B| = 10000 and 128,
  Local Adam/SGD and DiLoCo at APTS's number of collectives and a quarter of it, Prodigy
  and schedule-free AdamW at their defaults at |B| = 10000 and 128; 100 epochs, 3 seeds.
  Hours on a CPU; the data must be on disk or downloadable.
- ``quick``: the CPU profile (configs/experiment/quick_*): Fashion-MNIST, fcnn, 20
  epochs, one seed, the same methods.
- ``ablate``: the APTS ablation (configs/experiment/ablate_*): Fashion-MNIST, fcnn, 20
  epochs, seeds 0, 1, 2, APTS defaults at N = 2 except one factor per preset (L, G, |B|,
  overlap, m, gamma, foc, local memory, N); the report's ablation section compares them.

Each preset is one Hydra multirun (``apts-train -m experiment=... resume=auto``) into
``outputs/reproduce/<profile>/<preset>/``; then ``apts-report`` writes
``outputs/reproduce/<profile>/report/report.md`` and its plots. The whole thing is
meant to run unattended and to be run again:

- a failed job does not stop its sweep, nor a failed preset the others; the report lists
  failed and missing runs and the command ends with one line naming them (exit 1);
- running it again skips finished jobs and resumes interrupted ones from their last
  checkpoint, job by job (``--force`` moves old results aside and starts afresh);
- SIGTERM/SIGINT/SIGHUP (SLURM pre-emption, Ctrl-C, a closed terminal) stops the running
  job cleanly and the whole command with 143/130/129: run it again to continue.

``--launcher submitit_slurm --partition P`` submits every job as a SLURM job instead (Hydra's
submitit launcher, ``configs/hydra/launcher/submitit_slurm.yaml``): all presets at once, one sweep
per ``subdomains`` value, each job asking for one task per rank; the command waits for
them all, then writes the report. ``--launcher submitit_local`` runs the same jobs through
submitit on this machine.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from apts.config.validate import CONFIG_DIR
from apts.data.load import load_dataset
from apts.errors import DataError
from apts.runtime.lifecycle import STOP_SIGNALS

PROFILES = {
    "quick": {
        "datasets": ["fashion_mnist"],
        "presets": [
            "quick_apts",
            "quick_adam",
            "quick_sgd",
            "quick_local_adam",
            "quick_local_sgd",
            "quick_diloco",
            "quick_prodigy",
            "quick_schedulefree_adamw",
        ],
    },
    "ablate": {
        "datasets": ["fashion_mnist"],
        "presets": [
            f"ablate_{factor}"
            for factor in (
                "subdomains",  # first: the N study carries the accuracy targets
                "local_iters",
                "global_iters",
                "batch_size",
                "overlap",
                "memory",
                "gamma",
                "foc",
                "local_memory",
                "window",  # the variants (docs/APTS.md "Variants")
                "momentum",
                "local_solver",
                "batch_growth",
            )
        ],
    },
    "full": {
        "datasets": ["mnist", "cifar10"],
        "presets": [
            f"paper_{ds}_{opt}"
            for ds in ("mnist", "cifar10")
            for opt in (
                "apts",
                "adam",
                "sgd",
                "local_adam",
                "local_sgd",
                "diloco",
                "prodigy",
                "schedulefree_adamw",
            )
        ],
    },
}


# the exit codes of a sweep stopped by a signal (128 + its number)
STOPPED_CODES = tuple(128 + int(s) for s in STOP_SIGNALS)


def _usage_error(msg: str) -> None:
    print(f"reproduce: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def check_options(presets: list[str], out: str) -> None:
    """Every preset exists and ``out`` can hold the results: one line and exit code 2
    otherwise, before anything runs."""
    known = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
    for preset in presets:
        if preset not in known:
            _usage_error(f"unknown preset '{preset}'; the presets: {', '.join(known)}")
    where = Path(out).absolute()
    for p in (where, *where.parents):
        if p.exists():
            if not p.is_dir():
                _usage_error(f"--out {out}: {p} is a file; choose a directory")
            break


def check_data(datasets: list[str], data_dir: str | None) -> None:
    """Stop at once, in one line, when a dataset is neither on disk nor downloadable."""
    for name in datasets:
        try:
            load_dataset(name, data_dir, download=True)  # None: the runner's default folders
        except DataError as e:
            print(f"reproduce: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None


def subdomain_values(preset: str) -> list[str]:
    """The values of ``subdomains`` a preset sweeps over (none: it sweeps none)."""
    cfg = OmegaConf.load(CONFIG_DIR / "experiment" / f"{preset}.yaml")
    values = OmegaConf.select(cfg, "hydra.sweeper.params.subdomains")
    return [] if values is None else [v.strip() for v in str(values).split(",")]


def sweep_commands(preset: str, sweep: Path, extra: list[str], split: bool) -> list[list[str]]:
    """The apts-train command(s) of one preset. ``split``: one sweep per subdomains value
    (a cluster launcher asks the same tasks for every job of a sweep); they share the
    preset's folder, their jobs' names differ by ``subdomains=N``."""
    cmd = [sys.executable, "-m", "apts.cli", "-m", f"experiment={preset}"]
    cmd += [f"hydra.sweep.dir={sweep}", "resume=auto", *extra]
    if not split or any(a.startswith("subdomains=") for a in extra):
        return [cmd]
    return [[*cmd, f"subdomains={n}"] for n in subdomain_values(preset)] or [cmd]


def run_all(cmds: list[list[str]]) -> tuple[list[int], int | None]:
    """Run ``cmds`` at once and wait for them: their exit codes, and the signal that
    stopped this command, if any. A stop signal (SIGTERM, SIGINT, SIGHUP) sent to this
    process alone (``kill``, not a terminal's Ctrl-C or SLURM, which reach the whole
    process group) is passed on to every sweep, which stops its job as a signal to the job
    would (143/130/129); nothing is left running behind this command."""
    received: list[int] = []
    procs: list[subprocess.Popen] = []

    def forward(signum: int, _frame) -> None:
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        procs += [subprocess.Popen(cmd) for cmd in cmds]
        codes = [p.wait() for p in procs]
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return codes, (received[0] if received else None)


def submit_all(sweeps: dict[str, list[list[str]]]) -> list[str]:
    """Start every sweep at once (each waits on its cluster jobs); the presets whose
    sweeps did not all end with exit code 0."""
    t0 = time.perf_counter()
    presets, cmds = [], []
    for preset, preset_cmds in sweeps.items():
        for cmd in preset_cmds:
            print(f"reproduce: {preset}: {' '.join(cmd[3:])}", flush=True)
            presets.append(preset)
            cmds.append(cmd)
    codes, stopped_by = run_all(cmds)
    if stopped_by is not None:  # jobs already submitted go on; a re-run picks them up
        _stopped(128 + stopped_by)
    print(f"reproduce: every sweep ended after {time.perf_counter() - t0:.0f}s", flush=True)
    return sorted({preset for preset, code in zip(presets, codes, strict=True) if code != 0})


def _stopped(code: int) -> None:
    print("reproduce: stopped; run the same command again to continue", file=sys.stderr)
    raise SystemExit(code)


def run_preset(preset: str, sweep: Path, extra: list[str]) -> int:
    """One preset's sweep; its exit code (jobs that fail are recorded in their folders)."""
    t0 = time.perf_counter()
    print(f"reproduce: {preset} -> {sweep}", flush=True)
    (code,), stopped_by = run_all(sweep_commands(preset, sweep, extra, split=False))
    if stopped_by is not None:
        code = 128 + stopped_by
    how = "done" if code == 0 else f"ended with exit code {code}"
    print(f"reproduce: {preset} {how} in {time.perf_counter() - t0:.0f}s", flush=True)
    return code


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--presets", nargs="+", help="run these presets instead of the profile's")
    ap.add_argument("--out", default="outputs/reproduce")
    ap.add_argument("--data-dir", default=None, help="dataset.data_dir for every run")
    ap.add_argument("--force", action="store_true", help="move old results aside, start afresh")
    ap.add_argument(
        "--launcher",
        choices=["submitit_slurm", "submitit_local"],
        help="submit every job through Hydra's submitit launcher (submitit_slurm: SLURM), all "
        "presets at once, one sweep per subdomains value",
    )
    ap.add_argument("--partition", help="SLURM partition (hydra.launcher.partition)")
    ap.add_argument("--timeout-min", type=int, help="time limit of each job, minutes")
    ap.add_argument("--cpus-per-task", type=int, help="CPUs of each task (one task per rank)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    return ap


def _extra_overrides(args: argparse.Namespace, ap: argparse.ArgumentParser) -> list[str]:
    """The overrides every run gets: the command line's, the data folder, the launcher."""
    extra = list(args.overrides)
    if args.data_dir:
        extra.append(f"dataset.data_dir={args.data_dir}")
    passed = {
        "partition": args.partition,
        "timeout_min": args.timeout_min,
        "cpus_per_task": args.cpus_per_task,
    }
    if args.launcher:
        extra.append(f"hydra/launcher={args.launcher}")
        extra += [f"hydra.launcher.{k}={v}" for k, v in passed.items() if v is not None]
    elif any(v is not None for v in passed.values()):
        ap.error("--partition, --timeout-min and --cpus-per-task need --launcher")
    return extra


def main(argv: list[str] | None = None) -> None:
    ap = _parser()
    args = ap.parse_args(argv)

    profile = PROFILES[args.profile]
    check_options(args.presets or profile["presets"], args.out)
    if not args.presets:
        check_data(profile["datasets"], args.data_dir)
    root = Path(args.out) / args.profile
    extra = _extra_overrides(args, ap)
    parallel: dict[str, list[list[str]]] = {}
    sweeps, failed = [], []
    for preset in args.presets or profile["presets"]:
        sweep = root / preset
        sweeps.append(sweep)
        if args.force and sweep.exists():
            aside = sweep.with_name(f"{sweep.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            sweep.rename(aside)
            print(f"reproduce: {preset}: old results moved to {aside}")
        if args.launcher:
            parallel[preset] = sweep_commands(preset, sweep, extra, split=True)
            continue
        code = run_preset(preset, sweep, extra)
        if code in STOPPED_CODES:  # interrupted: stop here, a re-run continues
            _stopped(code)
        if code != 0:
            failed.append(preset)
    if parallel:
        failed = submit_all(parallel)
    report = [sys.executable, "-m", "apts.report", *map(str, sweeps), "--out", str(root / "report")]
    code = subprocess.run(report).returncode
    if failed:
        print(
            f"reproduce: error: jobs of {', '.join(failed)} did not complete (listed in "
            f"{root / 'report' / 'report.md'}); run the same command again to retry them",
            file=sys.stderr,
        )
        raise SystemExit(1)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
