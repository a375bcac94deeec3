"""The ``apts-report`` command line."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from apts.report.build import build_report
from apts.report.groups import AUTO_TARGET_FACTOR
from apts.report.multirun import find_multiruns
from apts.report.network import DEFAULT_NET_BENCH, BenchRow, NetBenchError, load_net_bench
from apts.report.runs import load_runs

PROG = "apts-report"


class NoRuns(Exception):
    """Nothing to report; the message is the one-line error."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """``RUN_DIR... [--out DIR] [--target ACC] [--title T] [--net-bench NET_JSON]``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Tables and plots (report.md and its PNG figures) from run directories "
        "written by apts-train; searches the given directories recursively.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or sweep directories")
    p.add_argument(
        "--out", default="outputs/report", help="output directory (default: outputs/report)"
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        metavar="ACC",
        help="target validation accuracy in %% for epochs/collectives-to-target (default: "
        f"per dataset, {AUTO_TARGET_FACTOR:g} x the lowest per-optimizer best final accuracy)",
    )
    p.add_argument("--title", default="APTS experiment report", help="report title")
    p.add_argument(
        "--net-bench",
        type=Path,
        default=None,
        metavar="NET_JSON",
        help="measurements of `make bench-net` to check the network model against (default: "
        f"{DEFAULT_NET_BENCH} when it exists)",
    )
    return p.parse_args(argv)


def net_bench_rows(path: Path | None) -> list[BenchRow] | None:
    """The runs of ``--net-bench`` (an error when it is missing), else of
    :data:`DEFAULT_NET_BENCH` when it exists, else None."""
    if path is None:
        if not DEFAULT_NET_BENCH.is_file():
            return None
        path = DEFAULT_NET_BENCH
    return load_net_bench(path)


def check_options(args: argparse.Namespace) -> None:
    """Options that argparse lets through but no report can use: a one-line NoRuns."""
    if args.target is not None and not (math.isfinite(args.target) and 0 < args.target <= 100):
        raise NoRuns(f"--target {args.target:g} must be an accuracy in %: 0 < ACC <= 100")
    if not args.title.strip():
        raise NoRuns("--title must not be empty")
    out = Path(args.out).absolute()
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise NoRuns(f"--out {args.out}: {p} is a file; choose a directory")
            if not os.access(p, os.W_OK | os.X_OK):
                raise NoRuns(f"--out {args.out}: {p} is not writable; choose another directory")
            break


def main(argv: list[str] | None = None) -> int:
    """Load the runs, write the report, print its path; exit code 2 and one line when there
    is nothing to report or an argument is wrong."""
    args = parse_args(argv)
    try:
        check_options(args)
    except NoRuns as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    runs, skipped, problems = load_runs([Path(p) for p in args.runs])
    try:
        if not runs:
            where = ", ".join(args.runs)
            if skipped:
                reasons = "; ".join(f"{s.display}: {s.reason}" for s in skipped[:3])
                more = " ..." if len(skipped) > 3 else ""
                raise NoRuns(f"no usable runs under {where} ({reasons}{more})")
            if problems:
                raise NoRuns("; ".join(problems))
            raise NoRuns(f"no runs (config.yaml or metrics.jsonl) found under {where}")
        net_bench = net_bench_rows(args.net_bench)
    except (NoRuns, NetBenchError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    for msg in problems:
        print(f"{PROG}: warning: {msg}", file=sys.stderr)
    roots = [Path(p) for p in args.runs]
    path = build_report(
        runs,
        skipped,
        Path(args.out),
        target=args.target,
        title=args.title,
        multiruns=find_multiruns(roots),
        net_bench=net_bench,
    )
    print(path)
    return 0
