"""apts-report: runs that did not complete, jobs a sweep planned but did not run, null
and NaN values in the logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_tree import build, config, job_dir, row, section, table, write_multirun, write_run

from apts.report.multirun import read_multirun

# A sweep of 2 seeds (sweeper params, first) x 2 learning rates (command line):
# Hydra numbers its jobs in the order of the product, params first.
TASK = ["optimizer=adam", "optimizer.lr=0.01,0.1", "epochs=3"]
PARAMS = {"seed": "0,1"}
JOBS = [
    ["seed=0", "optimizer=adam", "optimizer.lr=0.01", "epochs=3"],
    ["seed=0", "optimizer=adam", "optimizer.lr=0.1", "epochs=3"],
    ["seed=1", "optimizer=adam", "optimizer.lr=0.01", "epochs=3"],
    ["seed=1", "optimizer=adam", "optimizer.lr=0.1", "epochs=3"],
]


def adam(lr: float, seed: int) -> dict:
    return config("adam", optimizer__lr=lr, seed=seed, epochs=3)


@pytest.fixture(scope="module")
def status_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("status") / "runs"
    grid = root / "grid"
    write_multirun(grid, TASK, PARAMS)
    # job 0 completed; job 1 failed after epoch 1; job 2 started (Hydra's .hydra/ only);
    # job 3 never started
    write_run(job_dir(grid, 0, JOBS[0]), adam(0.01, 0), [50.0, 60.0, 70.0], comm=5)
    write_run(
        job_dir(grid, 1, JOBS[1]),
        adam(0.1, 0),
        [40.0],
        comm=5,
        status="failed",
        summary={"reason": "RuntimeError: CUDA out of memory"},
    )
    job_dir(grid, 2, JOBS[2])
    write_run(
        root / "diverged",
        config("apts", epochs=4),
        [30.0, 35.0, None],
        status="diverged",
        summary={"epoch": 2, "reason": "non-finite loss", "step": 17},
    )
    write_run(
        root / "interrupted",
        config("apts", seed=1, epochs=4),
        [30.0, 36.0],
        status="interrupted",
        summary={"reason": "stopped by SIGTERM"},
    )
    crashed = root / "crashed"  # failed before its first epoch: no metrics.jsonl
    crashed.mkdir()
    (crashed / "config.yaml").write_text(json.dumps(config("apts", seed=2, epochs=4)))
    (crashed / "summary.json").write_text(json.dumps({"status": "failed", "epoch": 0}))
    (crashed / "error.log").write_text("Traceback ...\nDataError: mnist missing in data/\n")
    write_run(root / "apts_ok", config("apts", seed=3, epochs=4), [40.0, 50.0, 60.0, 65.0])
    ranged = root / "ranged"
    write_multirun(ranged, ["seed=range(0,3)"])
    return root


@pytest.fixture(scope="module")
def status_md(status_tree, tmp_path_factory) -> str:
    return build(status_tree, tmp_path_factory.mktemp("status_out"))


def test_every_run_that_did_not_complete_is_listed(status_md):
    status = section(status_md, "## Run status")
    assert "2 of 6 runs completed; 4 did not (below)" in status
    assert row(status, "runs/grid/1_" + ",".join(sorted(JOBS[1]))) == {
        "run": "runs/grid/1_" + ",".join(sorted(JOBS[1])),
        "configuration": "Adam lr=0.1 (|B|=128)",
        "status": "failed",
        "epoch reached": "1/3",
        "reason": "RuntimeError: CUDA out of memory",
    }
    diverged = row(status, "runs/diverged")
    assert (diverged["status"], diverged["epoch reached"]) == ("diverged", "2/4")
    assert diverged["reason"] == "non-finite loss (step 17)"
    interrupted = row(status, "runs/interrupted")
    assert (interrupted["status"], interrupted["epoch reached"]) == ("interrupted", "2/4")
    assert interrupted["reason"] == "stopped by SIGTERM"
    crashed = row(status, "runs/crashed")
    assert (crashed["status"], crashed["epoch reached"]) == ("failed", "0/4")
    # no reason in summary.json: the last line of error.log, then why it has no results
    assert crashed["reason"] == "DataError: mnist missing in data/; metrics.jsonl missing"
    assert crashed["configuration"] == "APTS N=2 (|B|=10000)"


def test_missing_jobs_from_the_multirun_grid(status_md):
    status = section(status_md, "## Run status")
    assert "- `runs/grid`: 4 jobs planned (seed (2) × optimizer.lr (2)), 2 found, 2 missing." in (
        status
    )
    missing = {r["job"]: r for r in table(status) if "job" in r}
    assert set(missing) == {"2", "3"}
    assert missing["2"]["missing"] == "directory without results"
    assert missing["3"]["missing"] == "no directory"
    assert missing["3"]["overrides"] == " ".join(JOBS[3])
    assert (
        "- `runs/ranged`: planned count unknown (`seed=range(0,3)` is not a plain comma list)"
        in (status)
    )


def test_runs_that_did_not_complete_stay_out_of_the_accuracy_tables(status_md):
    final = section(status_md, "## Final validation accuracy")
    labels = [r["configuration"] for r in table(final)]
    # Adam lr=0.1 only failed; APTS N=2: seed 3 completed, seeds 0 (diverged) and 1
    # (interrupted) are left out; the crashed seed 2 has no results at all
    assert labels == ["APTS N=2 (|B|=10000)", "Adam lr=0.01 (|B|=128)"]
    apts = row(final, "APTS N=2 (|B|=10000)")
    assert apts["seeds"] == "1 (3)"
    assert apts["final val acc (%)"] == "65.00 ± –"
    assert apts["status"] == (
        "seed 0: diverged (2/4 epochs), left out; seed 1: interrupted (2/4 epochs), left out"
    )
    what = next(line for line in status_md.splitlines() if line.startswith("**What was run:**"))
    assert "5 runs in 3 configurations (3 incomplete), 1 skipped" in what


def test_null_accuracy_is_missing_not_a_crash(status_md):
    runs = section(status_md, "## Runs")
    diverged = row(runs, "runs/diverged")
    assert diverged["epochs"] == "2" and diverged["final val acc (%)"] == "35.00"
    assert diverged["notes"] == "val_acc null (not finite) at epoch 3; left out"


def test_nan_literal_and_null_counts(tmp_path):
    """A bare NaN is not JSON: that line is skipped. A null total is recomputed from the
    per-epoch counts; a null wall time counts as 0."""
    d = write_run(
        tmp_path / "runs" / "r",
        config("apts", epochs=3),
        [50.0, 60.0],
        comm=36,
        extra_lines=[
            '{"epoch": 3, "val_acc": NaN, "test_acc": 1, "comm_calls": 36}',
            json.dumps(
                {"epoch": 3, "val_acc": 70.0, "test_acc": 69.0, "comm_calls": 36}
                | {"comm_calls_total": None}
                | {"wall_s": None}
            ),
        ],
    )
    (d / "summary.json").write_text(json.dumps({"status": "completed", "epoch": 3}))
    md = build(tmp_path / "runs", tmp_path / "out")
    final = row(section(md, "## Final validation accuracy"), "APTS N=2 (|B|=10000)")
    assert final["final val acc (%)"] == "70.00 ± –"
    assert final["total collectives"] == "108"  # 36 + 36 + 36, the last from comm_calls
    assert final["wall time / run"] == "2.0 s"  # 1 + 1 + 0
    notes = row(section(md, "## Runs"), "runs/r")["notes"]
    assert notes == "skipped a malformed line of metrics.jsonl (line 3)"


def test_plain_multirun_plan_matches_hydra_job_numbers(tmp_path):
    """The basic sweeper's order: params first, a command-line key replaces a param in
    place; values normalised as Hydra writes them (1e-3 -> 0.001, true -> True)."""
    sweep = tmp_path / "s"
    write_multirun(
        sweep, ["lr=1e-3,1e-2", "seed=5", "flag=true"], {"seed": "0,1", "batch_size": "128"}
    )
    plan = read_multirun(sweep, "s")
    assert plan.jobs == [
        ("seed=5", "batch_size=128", "lr=0.001", "flag=True"),
        ("seed=5", "batch_size=128", "lr=0.01", "flag=True"),
    ]
    assert plan.sizes == [("lr", 2)]
    # the same grid from Hydra's basic sweeper itself
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    texts = ["seed=0,1", "batch_size=128", "lr=1e-3,1e-2", "seed=5", "flag=true"]
    overrides = OverridesParser.create().parse_overrides(texts)
    hydra_jobs = BasicSweeper.split_arguments(overrides, None)[0]
    assert [tuple(j) for j in hydra_jobs] == plan.jobs


def test_all_completed_says_so(tmp_path):
    write_run(tmp_path / "runs" / "a", config("apts"), [50.0, 60.0, 70.0, 80.0])
    md = build(tmp_path / "runs", tmp_path / "out")
    assert section(md, "## Run status").splitlines()[2] == "Every run completed (1 run)."
