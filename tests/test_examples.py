"""examples/ runs as a user would run it, and CITATION.cff names the paper and the software."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_apts_distributed_example(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(ROOT / "examples" / "apts_distributed.py"), "--epochs", "2"]
    r = subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("epoch ") == 2, r.stdout
    res = json.loads(out.read_text())
    # 5000 samples / |B| = 1000: 5 steps per epoch, 3 + G = 6 all-reduces each
    assert res["allreduces"] == 2 * 5 * 6
    assert res["same_model"]  # data parallel: every rank holds the same parameters
    assert res["val_acc"] > 0.5  # four classes: chance is 0.25


def test_citation_cff_names_the_paper_and_the_software():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    paper = cff["preferred-citation"]
    assert paper["title"].startswith("Data-Parallel Neural Network Training via Nonlinearly")
    names = [a["family-names"] for a in paper["authors"]]
    assert names == ["Cruz Alegría", "Trotti", "Kopaničáková", "Krause"]
    assert "2502.05133" in paper["url"]
    assert cff["version"] == __import__("importlib.metadata").metadata.version("apts")
