"""apts-report: *Time on a network*, against α-β costs computed by hand, and the check of the
model against a (fabricated) ``make bench-net`` result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_tree import build, config, row, section, table, write_run

from apts import report

SEC = "## Time on a network"
APTS = "APTS N=2 (|B|=10000)"
ADAM = "Adam lr=0.001 (|B|=128)"
LOCAL = "Local Adam N=4 H=13 lr=0.001 (|B|=128)"
LINK_NAMES = ["100 Mbit/s Ethernet", "1 GbE", "10 GbE", "100 Gb/s InfiniBand (EDR/HDR100)"]


def tree(root: Path, ddp: bool = True) -> None:
    """Runs whose projections are worked out by hand below (links of apts.report.netcost.LINKS:
    100 Mbit/s α = 100 µs, β = 12.5 MB/s; 1 GbE α = 50 µs, β = 125 MB/s)."""
    # APTS N=2, per epoch 5 all-reduces of 25 MB in all; seed 0: compute 5 − 1 = 4 s,
    # 100 Mbit/s: 4 + 5·2·1e-4 + 25e6/12.5e6 = 6.001 s; 1 GbE: 4 + 0.0005 + 0.2 = 4.2005 s.
    # seed 1: compute 6 s: 8.001 s and 6.2005 s.
    kw = {"comm": 5, "bytes_per_call": 5_000_000, "comm_s": 1.0}
    write_run(root / "a0", config("apts", epochs=3), [50.0, 70.0, 90.0], wall=5.0, **kw)
    write_run(root / "a1", config("apts", epochs=3, seed=1), [50.0, 55.0, 65.0], wall=7.0, **kw)
    # Local Adam N=4: 10 averages of 1 MB (10 MB) per epoch, compute 2 − 0.5 = 1.5 s;
    # 100 Mbit/s: 1.5 + 10·6·1e-4 + 1.5·10e6/12.5e6 = 2.706 s; 1 GbE: 1.5 + 0.003 + 0.12
    local = config("local_adam", epochs=3, subdomains=4)
    write_run(
        root / "l",
        local,
        [40.0, 55.0, 62.0],
        comm=10,
        bytes_per_call=1_000_000,
        wall=2.0,
        comm_s=0.5,
    )
    # a single process: no collectives, left out
    write_run(root / "n1", config("apts", subdomains=1, epochs=3), [50.0, 60.0, 70.0], comm=0)
    if ddp:
        # DDP Adam N=2: 469 all-reduces of 1000 B per epoch, nothing timed (no comm_s);
        # 100 Mbit/s: 0.5 + 469·2·1e-4 + 469000/12.5e6 = 0.63132; 1 GbE: 0.5 + 0.0469 + 0.003752
        adam = config("adam", epochs=3)
        write_run(root / "d", adam, [65.0, 80.0, 85.0], comm=469, bytes_per_call=1000, wall=0.5)


def test_projection_on_each_link_by_hand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no outputs/bench/net.json here
    tree(tmp_path / "runs")
    sec = section(build(tmp_path / "runs", tmp_path / "out", "--target", "60"), SEC)
    per_epoch, to_target = (table(t) for t in sec.split("Projected time to")[:2])
    assert [r["configuration"] for r in per_epoch] == [APTS, ADAM, LOCAL]  # no N=1 run
    apts, adam, local = per_epoch
    # means over the two seeds: compute (4 + 6)/2, 100 Mbit/s (6.001 + 8.001)/2
    assert apts["compute s/epoch (measured)"] == "5.0"
    assert (apts["collectives / epoch"], apts["MB reduced / epoch"]) == ("5", "25")
    assert (apts["100 Mbit/s Ethernet"], apts["1 GbE"]) == ("7.0", "5.2")
    assert (local["compute s/epoch (measured)"], local["100 Mbit/s Ethernet"]) == ("1.5", "2.7")
    assert local["1 GbE"] == "1.6"
    assert (adam["100 Mbit/s Ethernet"], adam["1 GbE"]) == ("≤ 0.631", "≤ 0.551")
    # 10 GbE: 0.5 + 469·2·2e-5 + 469000/1.25e9 = 0.519135; InfiniBand: 0.5 + 0.000938 + 3.752e-5
    assert (adam["10 GbE"], adam[LINK_NAMES[3]]) == ("≤ 0.519", "≤ 0.501")

    # to 60%: APTS seed 0 at epoch 2 (2·6.001), seed 1 at epoch 3 (3·8.001): mean 18.0025 s;
    # 1 GbE: (2·4.2005 + 3·6.2005)/2 = 13.5015 s
    tt = {r["configuration"]: r for r in to_target}
    assert tt[APTS]["epoch to 60.00%"] == "2.5"
    assert (tt[APTS]["100 Mbit/s Ethernet"], tt[APTS]["1 GbE"]) == ("18.0", "13.5")
    # Local Adam at epoch 3: 3·2.706 = 8.118, 3·1.623 = 4.869; DDP at epoch 1
    assert (tt[LOCAL]["100 Mbit/s Ethernet"], tt[LOCAL]["1 GbE"]) == ("8.1", "4.9")
    assert (tt[ADAM]["epoch to 60.00%"], tt[ADAM]["100 Mbit/s Ethernet"]) == ("1", "≤ 0.631")
    assert "**upper bounds** (≤)" in sec
    assert "Measured" in sec and "Modelled" in sec
    assert "`make bench-net` (as root) writes `outputs/bench/net.json`" in sec


def test_runs_without_per_epoch_bytes_are_named_not_projected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree(tmp_path / "runs", ddp=False)
    metrics = tmp_path / "runs" / "l" / "metrics.jsonl"  # an older log: no comm_bytes
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    metrics.write_text("".join(json.dumps({**r, "comm_bytes": None}) + "\n" for r in rows))
    sec = section(build(tmp_path / "runs", tmp_path / "out"), SEC)
    assert [r["configuration"] for r in table(sec.split("Projected time to")[0])] == [APTS]
    assert f"comm_calls or comm_bytes): {LOCAL}." in sec


def test_target_not_reached_and_no_ddp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree(tmp_path / "runs", ddp=False)
    sec = section(build(tmp_path / "runs", tmp_path / "out", "--target", "80"), SEC)
    tt = row(sec.split("Projected time to 80.00% (s):")[1], APTS)
    # only seed 0 reaches 80% (epoch 3: 3·6.001 s on 100 Mbit/s)
    assert tt["100 Mbit/s Ethernet"] == "18.0 (1/2 seeds)"
    assert row(sec.split("Projected time to")[1], LOCAL)["1 GbE"] == "not reached"
    assert "upper bound" not in sec and "≤" not in sec


def bench_result() -> dict:
    """A bench-net result: one link of α = 200 µs, β = 12 MB/s as measured."""

    def epochs(calls: int, nbytes: float, comm_s: list[float] | None) -> list[dict]:
        times = comm_s or [None, None]
        out = [{"comm_calls": calls, "comm_bytes": nbytes, "wall_s": 3.0} for _ in times]
        for e, s in zip(out, times, strict=True):
            if s is not None:
                e["comm_s"] = s
        return out

    def run(label: str, n: int, overlapped: bool, metrics: list[dict]) -> dict:
        return {"model": "mnist-fcnn", "method": label, "label": label, "N": n,
                "rate": "100mbit", "overlapped": overlapped, "metrics": metrics}  # fmt: skip

    link = {"rate": "100mbit", "bits_per_s": 1e8, "measured_bytes_per_s": 1.2e7, "alpha_s": 2e-4}
    return {
        "links": [link],
        "rows": [
            run("APTS", 2, False, epochs(6, 12e6, [1.1, 1.3])),
            run("Local Adam", 4, False, epochs(7, 8e6, [1.5, 1.5])),
            run("DDP Adam", 2, True, epochs(79, 3.2e6, None)),
        ],
    }


def test_measured_against_predicted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree(tmp_path / "runs")
    bench = tmp_path / "outputs" / "bench" / "net.json"  # found at the default path
    bench.parent.mkdir(parents=True)
    bench.write_text(json.dumps(bench_result()))
    sec = section(build(tmp_path / "runs", tmp_path / "out"), "### Measured vs predicted")
    meas = "in collectives, measured (s/epoch)"
    # APTS N=2: 6·2·2e-4 + 12e6/1.2e7 = 1.0024 s predicted, (1.1 + 1.3)/2 = 1.2 measured
    rows = {r["method"]: r for r in table(sec)}
    apts = rows["APTS"]
    assert (apts["model"], apts["N"], apts["link (tbf rate)"]) == ("mnist-fcnn", "2", "100mbit")
    assert (apts[meas], apts["predicted (s/epoch)"], apts["measured / predicted"]) == (
        "1.200",
        "1.002",
        "1.20",
    )
    # Local Adam N=4: 7·6·2e-4 + 1.5·8e6/1.2e7 = 1.0084; 1.5/1.0084 = 1.4875
    local = rows["Local Adam"]
    assert (local["predicted (s/epoch)"], local["measured / predicted"]) == ("1.008", "1.49")
    # DDP: 79·2·2e-4 + 3.2e6/1.2e7 = 0.29827, its all-reduces not timed
    ddp = rows["DDP Adam"]
    assert (ddp[meas], ddp["predicted (s/epoch)"], ddp["measured / predicted"]) == (
        "overlapped",
        "0.298",
        "–",
    )
    assert "make bench-net` (as root) writes" not in sec


def test_explicit_net_bench_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree(tmp_path / "runs")
    bench = tmp_path / "elsewhere.json"
    bench.write_text(json.dumps(bench_result()))
    md = build(tmp_path / "runs", tmp_path / "out", "--net-bench", str(bench))
    assert len(table(section(md, "### Measured vs predicted"))) == 3


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "No such file"),
        ("{not json", "not JSON"),
        ({"links": [], "rows": []}, "no runs in it"),
        ({"links": [{"rate": "1gbit"}], "rows": []}, "missing 'alpha_s'"),
        (
            {**bench_result(), "rows": [{**bench_result()["rows"][0], "rate": "1gbit"}]},
            "rate '1gbit' not among its links",
        ),
    ],
)
def test_unusable_net_bench_is_one_line_and_no_report(tmp_path, capsys, content, message):
    tree(tmp_path / "runs")
    bench = tmp_path / "net.json"
    if content is not None:
        bench.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "runs"), "--out", str(out), "--net-bench", str(bench)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"apts-report: error: --net-bench {bench}") and message in err
    assert len(err.splitlines()) == 1
    assert not (out / "report.md").exists()
