"""Benchmark: where the seconds of a short run go (issue 20's start-up goal: figures only).

Times, as a person types them, each phase's floor and the whole smoke run:

- ``python -c "import torch"``: the floor of every process (the launcher, each rank);
- ``import apts.cli``: the launcher's imports;
- ``apts-train experiment=smoke --cfg job``: imports plus composing the config;
- ``apts-train experiment=smoke subdomains=1``: one process, 2 epochs of 1000 samples;
- ``apts-train experiment=smoke``: the same over 2 spawned ranks.

Each is run ``--repeat`` times and the median printed, with the machine's CPU capability
and load average (figures on a loaded machine are not start-up figures).

    python -m benchmarks.bench_startup --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

CASES = [
    ("import torch", [sys.executable, "-c", "import torch"]),
    ("import apts.cli", [sys.executable, "-c", "import apts.cli"]),
    ("compose (--cfg job)", [sys.executable, "-m", "apts.cli", "experiment=smoke", "--cfg", "job"]),
    ("smoke, N = 1", [sys.executable, "-m", "apts.cli", "experiment=smoke", "subdomains=1"]),
    ("smoke, N = 2", [sys.executable, "-m", "apts.cli", "experiment=smoke"]),
]


def wall(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"bench_startup: {' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_startup", description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each case (median shown)")
    args = ap.parse_args(argv)
    print(
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )
    print("| case | median wall s | runs |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, cmd) in enumerate(CASES):
            times = []
            for k in range(args.repeat):
                run = ["hydra.run.dir=" + os.path.join(tmp, f"run{i}-{k}")] if "-m" in cmd else []
                times.append(wall(cmd[:3] + run + cmd[3:], tmp))
            runs = ", ".join(f"{t:.2f}" for t in times)
            print(f"| {name} | {statistics.median(times):.2f} | {runs} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
