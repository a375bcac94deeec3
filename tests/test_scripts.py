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
