"""The benchmark script runs end to end and reports the communication it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_reports_collectives_per_epoch(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench.py"),
        "--models",
        "fcnn",
        "--ranks",
        "2",
        "--optimizers",
        "apts",
        "adam",
        "--n-train",
        "2560",
        "--large-batch",
        "1280",
        "--out",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert "CPU capability" in bench["machine"]
    rows = {row["optimizer"]: row for row in bench["rows"]}
    apts, adam = rows["apts"], rows["adam"]
    assert apts["steps"] == 2 and apts["collectives"] == 6 * 2  # 3 + G, G = 3
    assert adam["collectives"] == adam["steps"] == 2560 // 128
    assert 0 < apts["fwd_bwd_share"] < 1 and 0 <= apts["optimizer_share"] < 1
    # the pass cost: the epoch's wall time over its passes, and the ratio to Adam's
    for row in (apts, adam):
        passes = row["grad_evals"] * 2560
        assert row["pass_us"] == pytest.approx(1e6 * row["wall_s"] / passes)
        assert row["peak_mem_mb"] > 0
    assert apts["pass_vs_adam"] == pytest.approx(apts["pass_us"] / adam["pass_us"])
    assert adam["pass_vs_adam"] == 1.0 and apts["micro_batch"] >= 640  # fcnn: one chunk
    table = (tmp_path / "bench.md").read_text()
    assert table.count("| fcnn |") == 2 and "in collectives" in table and "vs Adam" in table


def test_time_to_accuracy_sums_the_epochs_up_to_the_target():
    from benchmarks.bench_tta import summarize

    rows = [
        {"epoch": 1, "wall_s": 2.0, "comm_s": 0.5, "comm_calls": 10, "comm_bytes": 4e6,
         "grad_evals": 7.0, "val_acc": 40.0, "test_acc": 39.0},
        {"epoch": 2, "wall_s": 3.0, "comm_s": 0.0, "comm_calls": 12, "comm_bytes": 8e6,
         "grad_evals": 6.5, "val_acc": 55.0, "test_acc": 54.0},
        {"epoch": 3, "wall_s": 1.0, "comm_s": 0.0, "comm_calls": 1, "comm_bytes": 1.0,
         "grad_evals": 1.0, "val_acc": 50.0, "test_acc": 60.0},
    ]  # fmt: skip

    def at(target: float) -> dict | None:
        return summarize({"A": ("apts", rows)}, 2, target)["rows"][0]["to_target"]

    assert at(50.0) == {"epoch": 2, "wall_s": 5.0, "collectives": 22, "passes": 13.5}
    assert at(56.0) is None
    other = [{**r, "val_acc": r["val_acc"] - 10} for r in rows]
    assert summarize({"A": ("apts", rows), "B": ("adam", other)}, 2, None)["target"] == 49.5
    result = summarize({"A": ("apts", rows), "B": ("adam", other)}, 2, 45.0)
    a, b = result["rows"]
    assert a["to_target"]["epoch"] == 2 and b["to_target"]["epoch"] == 2
    assert a["best_val_acc"] == 55.0 and a["test_acc_at_best"] == 54.0
    # 1 GbE (α = 50 µs, β = 125 MB/s), N = 2, by hand: epoch 1 is compute 2.0 - 0.5 plus
    # 10·2·α + 4 MB/β = 0.033 s; epoch 2 is 3.0 plus 12·2·α + 8 MB/β = 0.0652 s
    assert a["projected_s"]["1 GbE"] == pytest.approx(1.5 + 0.033 + 3.0 + 0.0652)
    assert b["upper_bound"] and not a["upper_bound"]  # DDP overlaps: an upper bound


def test_bench_tta_trains_every_method_on_cifar_files(tmp_path):
    from datasets_files import write_cifar

    write_cifar(tmp_path / "data" / "cifar-10-batches-py", n=400, n_test=200)
    cmd = [sys.executable, "-m", "benchmarks.bench_tta", "--model", "fcnn", "--epochs", "2",
           "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "tta.json").read_text())
    assert "CPU capability" in result["machine"]
    assert [row["method"] for row in result["rows"]] == [
        "APTS",
        "Adam (DDP)",
        "Local Adam",
        "DiLoCo",
    ]
    best = max(r["val_acc"] for rows in result["runs"].values() for r in rows)
    assert result["target"] == pytest.approx(0.9 * best)
    assert all(len(result["runs"][row["method"]]) == 2 for row in result["rows"])
    table = (tmp_path / "out" / "tta.md").read_text()
    assert table.count("\n| ") == 5 and "s on 1 GbE" in table
    # the same runs summarised again at a target every method reached: nothing trained
    again = [*cmd[:3], "--runs", str(tmp_path / "out" / "tta.json"), "--target", "0",
             "--out", str(tmp_path / "again")]  # fmt: skip
    r = subprocess.run(again, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and "training" not in r.stdout, r.stderr[-3000:]
    rows = json.loads((tmp_path / "again" / "tta.json").read_text())["rows"]
    assert all(row["to_target"]["epoch"] == 1 for row in rows)
