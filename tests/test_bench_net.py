"""benchmarks/bench_net.py: the skip path, the namespaces it makes and removes, a shaped link,
and a 2-rank training run across two namespaces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_net

SCRIPT = Path(bench_net.__file__)

REASON = bench_net.skip_reason()
needs_netns = pytest.mark.skipif(REASON is not None, reason=f"no network namespaces: {REASON}")


def _ours() -> list[str]:
    prefix = f"{bench_net.BASE}-{os.getpid()}-"
    return [n for n in bench_net.list_namespaces() if n.startswith(prefix)]


def test_parse_rate():
    assert bench_net.parse_rate("100mbit") == 100e6
    assert bench_net.parse_rate("10gbit") == 10e9
    assert bench_net.parse_rate("1.5Gbit") == 1.5e9
    with pytest.raises(Exception, match="use e.g."):
        bench_net.parse_rate("fast")


@pytest.mark.parametrize("why", ["not root", "no ip"])
def test_skip_prints_one_line_and_exits_0(monkeypatch, capsys, tmp_path, why):
    monkeypatch.setattr(os, "geteuid", lambda: 1000 if why == "not root" else 0)
    if why == "no ip":
        monkeypatch.setattr(shutil, "which", lambda tool: None)
    out = tmp_path / "out"
    assert bench_net.main(["--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench-net: skipped: ")
    assert ("root" in lines[0]) == (why == "not root")
    assert captured.err == ""
    assert not out.exists()  # nothing written


def test_a_bad_rate_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        bench_net.main(["--rates", "fast"])
    assert e.value.code == 2
    assert "use e.g. 100mbit" in capsys.readouterr().err


@needs_netns
def test_network_is_made_shaped_and_removed():
    rate = 20e6
    with bench_net.Network(2) as net:
        names = set(_ours())
        assert names == {net.switch, net.ns(0), net.ns(1)}
        # nothing of it in the host's namespace
        host = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert f"{bench_net.SUBNET}." not in host and " p0@" not in host
        net.shape(rate)
        for ns, dev in ((net.ns(0), "eth0"), (net.switch, "p0"), (net.switch, "p1")):
            q = subprocess.run(["tc", "-n", ns, "qdisc", "show", "dev", dev], capture_output=True)
            assert b"tbf" in q.stdout and b"rate 20Mbit" in q.stdout
        nbytes, burst = 2_000_000, 64 * 1024  # burst: bench_net's bucket at this rate
        tx0 = net.tx_bytes(0)
        alpha, beta = bench_net.measure_link(net, nbytes=nbytes)
        assert net.tx_bytes(0) - tx0 >= nbytes  # the transfer went over rank 0's link
        assert alpha > 0
        # a token bucket delivers at most rate·T + burst in T seconds: unshaped, a veth
        # carries gigabits per second
        assert 0 < beta * 8 <= rate * nbytes / (nbytes - burst) * 1.01
    assert _ours() == []


@needs_netns
def test_leftovers_of_a_dead_run_are_removed():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid that no longer runs: a crashed run's
    dead = f"{bench_net.BASE}-{p.pid}-r0"
    alive = f"{bench_net.BASE}-{os.getpid()}-stale-test"
    try:
        for name in (dead, alive):
            subprocess.run(["ip", "netns", "add", name], check=True)
        removed = bench_net.remove_stale()
        names = bench_net.list_namespaces()
        assert dead in removed and dead not in names
        assert alive in names  # its owner (this process) still runs
    finally:
        for name in (dead, alive):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@needs_netns
@pytest.mark.slow
def test_two_ranks_train_across_a_shaped_link(tmp_path):
    n_train, batch = 2000, 1000
    cmd = [sys.executable, str(SCRIPT), "--ranks", "2", "--rates", "100mbit"]
    cmd += ["--models", "mnist-fcnn", "--methods", "apts", "--n-train", str(n_train)]
    cmd += ["--large-batch", str(batch), "--out", str(tmp_path)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    result = json.loads((tmp_path / "net.json").read_text())
    (row,) = result["rows"]
    params = 784 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    assert row["params"] == params
    # 2 APTS iterations of 3 + G = 6 all-reduces of [gradient, loss]: n + 1 float32 each
    assert row["comm_calls"] == 12 and row["comm_bytes"] == 12 * 4 * (params + 1)
    ring = 2 * (2 - 1) / 2 * row["comm_bytes"]
    assert row["ring_bytes_per_rank"] == ring
    # every rank put at least the ring's bytes on its link (plus headers, start-up)
    assert all(tx >= ring for tx in row["tx_bytes"])
    assert row["comm_s"] > 0 and row["pred_comm_s"] > 0
    (link,) = result["links"]
    assert link["bits_per_s"] == 100e6
    assert (
        "| mnist-fcnn | APTS \\|B\\|=10000 | 2 | 100 Mbit/s |" in (tmp_path / "net.md").read_text()
    )
    # its namespaces (named after its pid) are gone
    assert not [n for n in bench_net.list_namespaces() if f"-{p.pid}-" in n]
