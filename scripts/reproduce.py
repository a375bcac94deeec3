"""Re-run the paper's comparisons and write the report (``make reproduce``).

Profiles:

- ``full``: the paper's presets (configs/experiment/paper_*): MNIST and CIFAR-10,
  APTS at N = 2, 4, 6 and the Adam/SGD learning-rate grids at |B| = 10000 and 128,
  100 epochs, 3 seeds. Hours on a CPU; the data must be on disk or downloadable.
- ``quick``: the CPU profile (configs/experiment/quick_*): Fashion-MNIST, fcnn,
  APTS at N = 2 and 4, the baselines' grids, 20 epochs, one seed (~15 min, 2 cores).

Each preset is one Hydra multirun (``apts-train -m experiment=...``) into
``outputs/reproduce/<profile>/<preset>/``; then ``apts-report`` writes
``outputs/reproduce/<profile>/report/report.md`` and its plots. Presets whose
directory already holds completed runs are not run again (``--force`` re-runs).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

PROFILES = {
    "quick": {
        "datasets": ["fashion_mnist"],
        "presets": [
            "quick_apts",
            "quick_adam",
            "quick_sgd",
            "quick_local_adam",
            "quick_local_sgd",
        ],
    },
    "full": {
        "datasets": ["mnist", "cifar10"],
        "presets": [
            f"paper_{ds}_{opt}"
            for ds in ("mnist", "cifar10")
            for opt in ("apts", "adam", "sgd", "local_adam", "local_sgd")
        ],
    },
}


def check_data(datasets: list[str], data_dir: str | None) -> None:
    """Stop at once, in one line, when a dataset is neither on disk nor downloadable."""
    from apts.datasets import DataError, load_dataset

    for name in datasets:
        try:
            load_dataset(name, data_dir, download=True)  # None: the runner's default folders
        except DataError as e:
            print(f"reproduce: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None


def completed(sweep_dir: Path) -> bool:
    return sweep_dir.is_dir() and any(sweep_dir.glob("*/summary.json"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--out", default="outputs/reproduce")
    ap.add_argument("--data-dir", default=None, help="dataset.data_dir for every run")
    ap.add_argument("--force", action="store_true", help="re-run presets that have results")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args(argv)

    profile = PROFILES[args.profile]
    check_data(profile["datasets"], args.data_dir)
    root = Path(args.out) / args.profile
    train = [sys.executable, "-m", "apts.cli"]
    extra = list(args.overrides)
    if args.data_dir:
        extra.append(f"dataset.data_dir={args.data_dir}")
    sweeps = []
    for preset in profile["presets"]:
        sweep = root / preset
        sweeps.append(sweep)
        if completed(sweep) and not args.force:
            print(f"reproduce: {preset}: results exist in {sweep}, skipped (--force re-runs)")
            continue
        t0 = time.perf_counter()
        print(f"reproduce: {preset} -> {sweep}", flush=True)
        cmd = [*train, "-m", f"experiment={preset}", f"hydra.sweep.dir={sweep}", *extra]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"reproduce: {preset} failed (command: {' '.join(cmd)})")
        print(f"reproduce: {preset} done in {time.perf_counter() - t0:.0f}s", flush=True)
    report = [sys.executable, "-m", "apts.report", *map(str, sweeps), "--out", str(root / "report")]
    raise SystemExit(subprocess.run(report).returncode)


if __name__ == "__main__":
    main()
