"""Sweeps and run directories: failed jobs, unique and locked directories, resume."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from clitools import (
    SMALL,
    cli,
    error_lines,
    read_metrics,
    read_summary,
    start_cli,
    stop,
    strict_json,
    wait_for,
    without_timings,
)

FAST = [*SMALL, "batch_size=400", "epochs=2"]


def _jobs(sweep: Path) -> dict[int, dict]:
    """Job number -> its summary.json (job folders are named ``<num>_<overrides>``)."""
    return {
        int(p.parent.name.split("_")[0]): strict_json(p.read_text())
        for p in sweep.glob("*/summary.json")
    }


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    r = cli(
        "-m", *SMALL, "epochs=1", "batch_size=100000,128", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert r.returncode == 1, r.stderr[-3000:]
    jobs = _jobs(sweep)
    failed = jobs[0]
    assert failed["status"] == "failed" and "batch_size=100000 exceeds" in failed["reason"]
    assert jobs[1]["status"] == "completed"
    last = error_lines(r.stderr)[-1]
    assert last.startswith("apts-train: error: 1 job did not complete: batch_size=100000")


def test_default_run_names_are_unique_for_simultaneous_starts(tmp_path):
    procs = [start_cli(*FAST, cwd=tmp_path) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


def test_a_locked_or_used_directory_is_refused_and_left_alone(tmp_path):
    run = tmp_path / "run"
    first = start_cli(*SMALL, "batch_size=100", "epochs=1000", f"hydra.run.dir={run}", cwd=tmp_path)
    try:
        wait_for(lambda: (run / "metrics.jsonl").exists(), first)
        second = cli(*FAST, f"hydra.run.dir={run}", cwd=tmp_path)
        assert second.returncode == 2
        assert "is in use by another run" in error_lines(second.stderr)[-1]
        assert first.poll() is None  # the running one goes on
    finally:
        stop(first)
    before = (run / "metrics.jsonl").read_text()
    again = cli(*FAST, f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert "resume=" in error_lines(again.stderr)[-1]
    assert (run / "metrics.jsonl").read_text() == before  # nothing deleted


def test_resume_refuses_other_overrides_and_missing_runs(tmp_path):
    r = cli(f"resume={tmp_path}/nothing", cwd=tmp_path)
    assert r.returncode == 2 and "holds no run" in error_lines(r.stderr)[-1]
    run = tmp_path / "run"
    assert cli(*FAST, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    r = cli(f"resume={run}", "optimizer.lr=0.1", cwd=tmp_path)
    assert r.returncode == 2
    assert "only epochs, progress and launcher.* may change" in error_lines(r.stderr)[-1]
    r = cli(f"resume={run}", cwd=tmp_path)  # completed, nothing to add
    assert r.returncode == 0 and "completed 2 epochs" in r.stderr


OPTIMIZERS = (
    "adam",
    "sgd",
    "tr",
    "apts",
    "local_adam",
    "local_sgd",
    "diloco",
    "prodigy",
    "schedulefree_adamw",
)
GRID = [(opt, n) for opt in OPTIMIZERS for n in (1, 2, 4)]


def _resume_matches_uninterrupted(tmp_path: Path, grid: list[tuple[str, int]]) -> None:
    """The same jobs run 3 epochs straight, or 1 epoch and then resumed to 3 by
    ``resume=auto`` on the same sweep: metrics.jsonl equal line for line (timings aside)."""
    opts = ",".join(sorted({o for o, _ in grid}))
    ns = ",".join(str(n) for n in sorted({n for _, n in grid}))
    sweep = [*SMALL, "batch_size=400", f"optimizer={opts}", f"subdomains={ns}"]
    t = 120 * len(grid)  # seconds per sweep: generous, the grid runs on shared cores
    r = cli(
        "-m", *sweep, "epochs=3", f"hydra.sweep.dir={tmp_path}/straight", cwd=tmp_path, timeout=t
    )
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli(
        "-m", *sweep, "epochs=1", f"hydra.sweep.dir={tmp_path}/resumed", cwd=tmp_path, timeout=t
    )
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli(
        "-m",
        *sweep,
        "epochs=3",
        "resume=auto",
        f"hydra.sweep.dir={tmp_path}/resumed",
        cwd=tmp_path,
        timeout=t,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    straight = sorted((tmp_path / "straight").glob("*/metrics.jsonl"))
    assert len(straight) == len(grid)
    for path in straight:
        other = tmp_path / "resumed" / path.parent.name
        assert read_summary(other)["status"] == "completed"
        got, want = read_metrics(other), read_metrics(path.parent)
        assert [r["epoch"] for r in got] == [1, 2, 3]
        assert without_timings(got) == without_timings(want), path.parent.name


def test_resume_is_bit_exact_on_four_ranks(tmp_path):
    # DDP at N=4: a sum of four is not commutative in floating point, so the gradient
    # buckets' layout must be the same in the resumed run as in the uninterrupted one
    _resume_matches_uninterrupted(tmp_path, [("adam", 4), ("apts", 4), ("local_adam", 4)])


@pytest.mark.timeout(1200)  # three sweeps of three 2-rank jobs, on shared cores
def test_resume_is_bit_exact_for_diloco_and_the_tuning_free_baselines(tmp_path):
    # DiLoCo: its outer state (anchor, momentum) comes from the checkpoint; schedule-free:
    # saved in eval mode (x), y recomputed at the next epoch's start as in a run that never
    # stopped; Prodigy: its step-size estimate d. DDP's bucket layout at N = 4 is the same
    # for every DDP optimizer (Adam above); the stress grid runs these at N = 1, 2, 4 too
    grid = [("diloco", 2), ("prodigy", 2), ("schedulefree_adamw", 2)]
    _resume_matches_uninterrupted(tmp_path, grid)


@pytest.mark.stress
@pytest.mark.timeout(7200)
def test_resume_is_bit_exact_for_every_optimizer_and_rank_count(tmp_path):
    _resume_matches_uninterrupted(tmp_path, GRID)


def test_a_finished_sweep_is_skipped_job_by_job(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    assert cli(*args, cwd=tmp_path).returncode == 0
    stamp = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.jsonl")}
    assert len(stamp) == 2
    time.sleep(0.05)
    r = cli(*args, "resume=auto", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("skipped") == 2
    assert stamp == {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.jsonl")}
