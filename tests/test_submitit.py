"""Sweeps through Hydra's submitit launcher (hydra/launcher=submitit_local|submitit_slurm).

The runs go through submitit's real local executor: every job is a submitit job of
`subdomains` task processes that join one env:// world, as the tasks of a SLURM job do.
"""

from __future__ import annotations

import os
import shutil

import pytest
from clitools import (
    SMALL,
    cli,
    error_lines,
    read_metrics,
    read_summary,
    without_timings,
)

from apts.config.precheck import has_submitit_plugin
from apts.experiments.reproduce import sweep_commands

pytestmark = pytest.mark.skipif(
    not has_submitit_plugin(),
    reason='the cluster extra is not installed (pip install -e ".[cluster]")',
)

APTS2 = [*SMALL, "optimizer=apts", "subdomains=2", "epochs=1"]


def _launcher(*overrides: str):
    """The hydra.launcher node Hydra composes for these overrides (the sweep's launcher)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from apts.config.validate import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_cluster_job_asks_one_task_per_rank_and_a_gpu_per_task_on_cuda():
    slurm = _launcher("hydra/launcher=submitit_slurm", "subdomains=4")
    assert slurm["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (slurm["tasks_per_node"], slurm["nodes"], slurm["gpus_per_task"]) == (4, 1, None)
    two_nodes = ("hydra/launcher=submitit_slurm", "hydra.launcher.nodes=2")
    cuda = _launcher(*two_nodes, "subdomains=8", "device=cuda")
    assert (cuda["tasks_per_node"], cuda["nodes"], cuda["gpus_per_task"]) == (4, 2, 1)
    local = _launcher("hydra/launcher=submitit_local", "subdomains=3")
    assert local["_target_"].endswith("submitit_launcher.LocalLauncher")
    assert (local["tasks_per_node"], local["nodes"]) == (3, 1)


def test_submitit_world_exports_the_job_as_env_vars(monkeypatch):
    from apts.runtime.env import submitit_world

    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "")  # restored (removed) by monkeypatch
    job = {"EXECUTOR": "local", "LOCAL_JOB_ID": "4242", "LOCAL_NTASKS": "3"}
    job |= {"LOCAL_JOB_NUM_NODES": "1", "LOCAL_NODEID": "0", "LOCAL_GLOBALID": "2"}
    job |= {"LOCAL_LOCALID": "2"}
    for key, value in job.items():
        monkeypatch.setenv(f"SUBMITIT_{key}", value)
    try:
        env = submitit_world()
        assert env == {"world_size": 3, "rank": 2, "local_rank": 2}
        assert os.environ["MASTER_ADDR"] == "127.0.0.1"  # one node: loopback
        port = int(os.environ["MASTER_PORT"])
        assert 20000 <= port <= 60000
        monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")  # one task: it spawns its ranks
        for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
            os.environ.pop(key)
        assert submitit_world() is None and "RANK" not in os.environ
    finally:
        for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
            os.environ.pop(key, None)


def test_sweep_over_subdomains_is_refused_before_any_job(tmp_path):
    r = cli("-m", "hydra/launcher=submitit_local", *SMALL, "subdomains=2,4", cwd=tmp_path)
    assert r.returncode == 2
    lines = [ln for ln in error_lines(r.stderr) if ln.startswith("apts-train")]
    assert len(lines) == 1 and "subdomains=2" in lines[0] and "tasks_per_node=1" in lines[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="SLURM is installed here")
def test_cluster_without_slurm_says_so_in_one_line(tmp_path):
    r = cli("-m", "hydra/launcher=submitit_slurm", *SMALL, cwd=tmp_path)
    assert r.returncode == 2 and "sbatch is not on PATH" in r.stderr
    assert "submitit_local" in error_lines(r.stderr)[-1]


@pytest.mark.slow
def test_local_executor_sweep_runs_every_job_as_two_tasks_and_survives_a_failed_one(tmp_path):
    """Five N=2 APTS jobs through submitit's local executor, one with a batch larger than
    the data: four complete (the same numbers as the project's own spawn path), the fifth
    is recorded as failed in its folder and in the sweep's last line and exit code."""
    sweep = tmp_path / "sweep"
    sizes = [200, 300, 400, 600, 5000]
    r = cli(
        "-m",
        "hydra/launcher=submitit_local",
        *APTS2,
        f"batch_size={','.join(map(str, sizes))}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=400,
    )
    assert r.returncode == 1, r.stderr[-3000:]
    last = error_lines(r.stderr)[-1]
    assert last.startswith("apts-train: error: 1 job did not complete:")
    assert "batch_size=5000" in last and "exceeds the 1200 training samples" in last

    jobs = {int(d.name.split("_", 1)[0]): d for d in sweep.iterdir() if d.name[0].isdigit()}
    assert sorted(jobs) == list(range(len(sizes)))
    for num, size in enumerate(sizes):
        summary = read_summary(jobs[num])
        assert f"batch_size={size}," in jobs[num].name
        if size > 1200:
            assert summary["status"] == "failed"
            assert "batch_size=5000 exceeds the 1200 training samples" in summary["reason"]
            assert not (jobs[num] / "metrics.jsonl").exists()
            continue
        assert summary["status"] == "completed", summary
        rows = read_metrics(jobs[num])
        assert [row["epoch"] for row in rows] == [1]
        assert rows[0]["comm_calls"] == 6 * (1200 // size)  # APTS: 3 + G all-reduces a step

    # every job ran as two submitit tasks (one per rank), each of which returned
    submitted = [d for d in (sweep / ".submitit").iterdir() if any(d.iterdir())]
    assert len(submitted) == len(sizes)
    for d in submitted:
        results = sorted(p.name.split("_", 1)[1] for p in d.glob("*_result.pkl"))
        assert results == ["0_result.pkl", "1_result.pkl"], sorted(os.listdir(d))

    # the env:// world of two tasks computes what the spawn launcher computes
    ref = tmp_path / "spawned"
    r = cli(*APTS2, "batch_size=300", f"hydra.run.dir={ref}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert without_timings(read_metrics(jobs[1])) == without_timings(read_metrics(ref))


def test_reproduce_passes_the_launcher_on_one_sweep_per_subdomains_value(tmp_path):
    cmds = sweep_commands(
        "paper_mnist_apts",
        tmp_path / "sw",
        ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=P"],
        split=True,
    )
    ns = sorted(next(a for a in c if a.startswith("subdomains=")) for c in cmds)
    assert ns == ["subdomains=2", "subdomains=4", "subdomains=6"]
    for c in cmds:
        assert "hydra.launcher.partition=P" in c and "hydra/launcher=submitit_slurm" in c
        assert "resume=auto" in c and f"hydra.sweep.dir={tmp_path / 'sw'}" in c
