"""The benchmark script runs end to end and reports the communication it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    rows = {row["optimizer"]: row for row in json.loads((tmp_path / "bench.json").read_text())}
    apts, adam = rows["apts"], rows["adam"]
    assert apts["steps"] == 2 and apts["collectives"] == 6 * 2  # 3 + G, G = 3
    assert adam["collectives"] == adam["steps"] == 2560 // 128
    assert 0 < apts["fwd_bwd_share"] < 1 and 0 <= apts["optimizer_share"] < 1
    table = (tmp_path / "bench.md").read_text()
    assert table.count("| fcnn |") == 2 and "in collectives" in table
