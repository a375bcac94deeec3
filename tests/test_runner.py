"""End-to-end runs of apts-train: outputs, determinism, DDP accounting, multirun, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clitools import SMALL, cli, read_metrics, without_timings

REQUIRED = {
    "epoch",
    "train_loss",
    "val_loss",
    "val_acc",
    "comm_calls",
    "comm_bytes",
    "grad_evals",
    "wall_s",
}
FCNN_PARAMS = 26_506


def run_cli(*args: str, cwd: Path, torchrun: int | None = None) -> subprocess.CompletedProcess:
    """Run apts-train (or torchrun with apts.cli) and require success."""
    if torchrun:
        torchrun_bin = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun_bin), "--standalone", f"--nproc-per-node={torchrun}", "-m", "apts.cli"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        r = subprocess.run(
            cmd + list(args), cwd=cwd, capture_output=True, text=True, timeout=300, env=env
        )
    else:
        r = cli(*args, cwd=cwd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def adam_two_ranks(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("adam2")
    r = run_cli(
        *SMALL, "optimizer=adam", "subdomains=2", "epochs=2", f"hydra.run.dir={d}/run", cwd=d
    )
    (d / "console.txt").write_text(r.stdout + r.stderr)  # captured: not a terminal
    return d / "run"


def test_two_process_run_writes_config_metrics_and_tensorboard(adam_two_ranks):
    run = adam_two_ranks
    cfg = (run / "config.yaml").read_text()
    assert "subdomains: 2" in cfg and "name: adam" in cfg and "${" not in cfg  # resolved
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert REQUIRED <= r.keys()
        assert 0 <= r["val_acc"] <= 100
        assert r["grad_evals"] == pytest.approx(1.0)
    # learning: loss falls and accuracy is well above chance (10%)
    assert rows[1]["train_loss"] < rows[0]["train_loss"] < 2.31
    assert rows[1]["val_acc"] > 20
    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 2  # the scalars, and add_hparams' session at the end
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    vals = [e.value for e in acc.Scalars("acc/val")]
    assert vals == pytest.approx([r["val_acc"] for r in rows])
    tags = acc.Tags()["scalars"]
    assert {"loss/train", "loss/val", "comm/calls", "comm/bytes", "time/epoch"} <= set(tags)
    assert all("/" in t for t in tags)  # grouped, no flat names
    # the same curves against samples seen: 1200 training samples per epoch
    assert [e.step for e in acc.Scalars("by_samples/acc/val")] == [1200, 2400]
    assert acc.Scalars("final/val_acc")[0].value == pytest.approx(rows[-1]["val_acc"])
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    best = max(rows, key=lambda r: r["val_acc"])
    assert (summary["best_epoch"], summary["best_val_acc"]) == (best["epoch"], best["val_acc"])
    prov = summary["provenance"]
    assert prov["world_size"] == 2 and prov["torch"] == torch.__version__
    assert prov["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert prov["apts"] and prov["hydra"] and prov["python"] and prov["device_name"]
    assert prov["git"] is None or len(prov["git"]["commit"]) == 40
    assert summary["started_at"] <= summary["ended_at"]
    # the console: one line per epoch and no progress bar when not on a terminal; the last
    # line says what the run reached and where it is
    console = (run.parent / "console.txt").read_text()
    assert "it/s" not in console and "\r" not in console
    last = [ln for ln in console.splitlines() if ln.strip()][-1]
    assert last == (
        f"completed after epoch 2; val_acc {rows[-1]['val_acc']:.2f}%, test_acc "
        f"{rows[-1]['test_acc']:.2f}%; best epoch "
        f"{best['epoch']} (val_acc {best['val_acc']:.2f}%); run directory {run}"
    )
    assert (run / "checkpoint.pt").exists() and (run / "train.log").exists()


def test_ddp_counts_one_allreduce_per_bucket_per_step(adam_two_ranks):
    # fcnn's 26,506 float32 gradients fit one DDP bucket: one all-reduce per step.
    for r in read_metrics(adam_two_ranks):
        steps = 1200 // 128 + 1  # the last, partial mini-batch is kept
        assert r["steps"] == steps
        assert r["comm_calls"] == steps
        assert r["comm_bytes"] == steps * FCNN_PARAMS * 4
        # per epoch and cumulative, named as such
        assert r["comm_by_kind"]["calls"]["metrics"] == 1  # and epoch 1 the start-up's
        assert r["comm_by_kind"]["calls"]["ddp"] == r["comm_calls"]
        assert r["comm_by_kind_total"]["calls"]["metrics"] == r["epoch"]
        assert r["samples"] == 1200 and r["samples_total"] == 1200 * r["epoch"]
    rows = read_metrics(adam_two_ranks)
    for what in ("calls", "bytes"):  # the lines' counts add up to the totals
        for kind, total in rows[-1]["comm_by_kind_total"][what].items():
            assert sum(r["comm_by_kind"][what].get(kind, 0) for r in rows) == total


def test_same_seed_gives_identical_metrics(adam_two_ranks, tmp_path):
    run_cli(
        *SMALL,
        "optimizer=adam",
        "subdomains=2",
        "epochs=2",
        f"hydra.run.dir={tmp_path}/again",
        cwd=tmp_path,
    )
    again = without_timings(read_metrics(tmp_path / "again"))
    assert again == without_timings(read_metrics(adam_two_ranks))


def test_ddp_sgd_on_two_ranks_matches_one_rank(tmp_path):
    # Equal shards: DDP's mean of the two shard gradients is the full-batch gradient,
    # so two ranks follow the one-rank trajectory up to float rounding.
    common = [*SMALL, "optimizer=sgd", "batch_size=100", "epochs=2", "checkpoint=false"]
    run_cli(*common, "subdomains=1", f"hydra.run.dir={tmp_path}/n1", cwd=tmp_path)
    run_cli(*common, "subdomains=2", f"hydra.run.dir={tmp_path}/n2", cwd=tmp_path)
    one, two = read_metrics(tmp_path / "n1"), read_metrics(tmp_path / "n2")
    assert one[0]["comm_calls"] == 0 and two[0]["comm_calls"] == 12
    for a, b in zip(one, two, strict=True):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)


def test_multirun_gives_one_directory_per_job(tmp_path):
    run_cli(
        "-m",
        *SMALL,
        "epochs=1",
        "optimizer=sgd,adam",
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    jobs = sorted(p.parent for p in (tmp_path / "sweep").glob("*/metrics.jsonl"))
    assert len(jobs) == 2
    names = {(j / "config.yaml").read_text().split("optimizer:")[1].split()[1] for j in jobs}
    assert names == {"sgd", "adam"}


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not installed",
)
def test_torchrun_joins_the_world_and_writes_one_run_dir(tmp_path, adam_two_ranks):
    run_cli(*SMALL, "optimizer=adam", "subdomains=2", "epochs=2", cwd=tmp_path, torchrun=2)
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("torchrun-")
    # same seed, same world size: the same numbers as the spawn launcher's run
    assert without_timings(read_metrics(runs[0])) == without_timings(read_metrics(adam_two_ranks))


@pytest.mark.parametrize(
    "optimizer,per_step,extra",
    [("tr", 2, []), ("apts", 6, ["optimizer.global_iters=3"])],
)
def test_trust_region_optimizers_count_their_collectives_and_repeat_exactly(
    tmp_path, optimizer, per_step, extra
):
    args = [*SMALL, f"optimizer={optimizer}", "subdomains=2", "batch_size=400", "epochs=2", *extra]
    run_cli(*args, f"hydra.run.dir={tmp_path}/a", cwd=tmp_path)
    run_cli(*args, f"hydra.run.dir={tmp_path}/b", cwd=tmp_path)
    rows = read_metrics(tmp_path / "a")
    assert without_timings(rows) == without_timings(read_metrics(tmp_path / "b"))
    for r in rows:
        # TR: [g, f] at the current and the trial point; APTS: 3 + G, each n + 1 floats
        assert r["comm_calls"] == per_step * r["steps"]
        assert r["comm_bytes"] == per_step * r["steps"] * (FCNN_PARAMS + 1) * 4
        # the optimizer's collectives, the epoch statistics, the checkpoint gather
        assert r["comm_by_kind"]["calls"].keys() <= {"optimizer", "metrics", "checkpoint"}
        assert r["accepted"] + r["rejected"] == r["steps"]
        assert r["radius"] > 0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
