"""The rank server (apts.runtime.prestart): which commands start it, that CPU ranks are its
forks with their modules loaded, and that it never outlives or outwaits the launcher."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from clitools import SMALL, alive, children, cli, epochs_logged, start_cli, stop, wait_for

from apts.runtime import prestart

LONG = [*SMALL, "batch_size=100", "epochs=1000", "optimizer=adam", "subdomains=2"]


def _job(**kw) -> dict:
    return {"subdomains": 2, "device": "cpu", "hydra": {"launcher": {"_target_": "basic"}}, **kw}


@pytest.mark.parametrize(
    "jobs,expected",
    [
        ([_job()], True),
        ([_job(device="auto")], True),  # resolved later; the server is cheap to leave unused
        ([_job(subdomains=1)], False),  # trains in the launcher's own process
        ([_job(subdomains=1), _job(subdomains=4)], True),  # a sweep: one job needs it
        ([_job(device="cuda")], False),  # CUDA ranks are spawned
        ([_job(hydra={"launcher": {"_target_": "hydra_plugins.submitit.X"}})], False),
        ([_job(subdomains="two")], False),  # a bad value: validation says what is wrong
        ([{"subdomains": 2}], True),  # a saved config (resume=DIR) has no hydra key
    ],
)
def test_the_server_is_wanted_for_local_cpu_ranks_only(monkeypatch, jobs, expected):
    for key in ("WORLD_SIZE", "RANK", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    assert prestart.wanted(jobs) is expected


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2", "RANK": "0"}, {"SUBMITIT_EXECUTOR": "slurm"}])
def test_no_server_where_someone_else_starts_the_ranks(monkeypatch, env):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert prestart.wanted([_job()]) is False


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _gone(pids: list[int], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_cpu_ranks_are_forks_of_the_server_which_leaves_with_a_killed_launcher(tmp_path):
    run = tmp_path / "run"
    proc = start_cli(*LONG, f"hydra.run.dir={run}", cwd=tmp_path)
    try:
        wait_for(lambda: epochs_logged(run) >= 1, proc)
        (server,) = [c for c in children(proc.pid) if b"multiprocessing.forkserver" in _cmdline(c)]
        for module in prestart.PRELOAD:
            assert module.encode() in _cmdline(server)
        ranks = children(server)
        assert len(ranks) == 2 and all(_ppid(r) == server for r in ranks)
        # a signal to the server alone is ignored: it leaves with the launcher, not before
        os.kill(server, signal.SIGTERM)
        time.sleep(0.5)
        assert alive(server) and all(alive(r) for r in ranks)
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup at all in the launcher
        proc.communicate(timeout=60)
        # the server sees its launcher go and leaves; the ranks see their parent go
        # (PR_SET_PDEATHSIG) and stop
        assert _gone([server, *ranks], 60), [p for p in [server, *ranks] if alive(p)]
    finally:
        stop(proc)


def test_a_run_leaves_no_process_and_no_temporary_folder(tmp_path):
    """After a 2-rank run (and a failing one) the launcher's temporary folders (the rank
    server's socket, the rendezvous) are gone and no process of the run is left: the
    launcher leaves through os._exit (apts.cli.run) after the exit handlers."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    r = cli(
        *SMALL, "epochs=1", "subdomains=2", f"hydra.run.dir={tmp_path}/ok", cwd=tmp_path, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    bad = cli(*SMALL, "subdomains=2", "batch_size=99999", cwd=tmp_path, env=env)
    assert bad.returncode == 2, bad.stderr[-3000:]
    # torch._dynamo's import makes torch's own cache folder (torchinductor_<user>), kept
    # on purpose between runs
    assert [p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_")] == []
    assert not [
        p for p in Path("/proc").glob("[0-9]*") if str(tmp_path).encode() in _cmdline(int(p.name))
    ]
