"""apts-report: the communication-matched comparison (accuracy within APTS's collectives)."""

from __future__ import annotations

from pathlib import Path

from report_tree import build, config, row, section, table, write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# APTS N=2: 36 collectives per epoch, 4 epochs -> its budget C = 144, C/4 = 36.
APTS_ACCS = [60.0, 70.0, 80.0, 85.0]
APTS = "APTS N=2 (|B|=10000)"


def local(lr: float = 0.001, seed: int = 0, h: int = 13) -> dict:
    return config("local_adam", optimizer__lr=lr, optimizer__sync_every=h, seed=seed, epochs=5)


def apts_and_ddp(root: Path) -> None:
    write_run(root / "apts", config("apts"), APTS_ACCS, comm=36)
    # DDP Adam at |B|=128: 469 all-reduces per epoch, over C from its first epoch
    write_run(root / "adam", config("adam", epochs=2), [88.0, 90.0], comm=469)
    # a single process: no collectives, not compared
    write_run(root / "n1", config("apts", subdomains=1), [50.0, 55.0, 58.0, 60.0], comm=0)


def test_apts_wins_at_its_budget(tmp_path):
    root = tmp_path / "runs"
    apts_and_ddp(root)
    # Local Adam H=52: 50 averages per epoch: epochs 1-2 (50, 100) fit in C = 144
    write_run(root / "local", local(h=52), [65.0, 75.0, 82.0, 84.0, 86.0], comm=50)
    md = build(root, tmp_path / "out")
    sec = section(md, "## Who wins at equal communication")
    assert "**C = 144 collectives: all 4 epochs of APTS N=2 (|B|=10000); C/4 = 36.**" in sec
    labels = [r["configuration"] for r in table(sec)]
    local_label = "Local Adam N=2 H=52 lr=0.001 (|B|=128)"
    assert labels == [APTS, "Adam lr=0.001 (|B|=128)", local_label]  # no N=1 run
    apts = row(sec, APTS)
    assert (apts["epoch (C)"], apts["collectives (C)"], apts["val acc % (C)"]) == (
        "4",
        "144",
        "85.00 ± –",
    )
    assert (apts["epoch (C/4)"], apts["val acc % (C/4)"]) == ("1", "60.00 ± –")
    loc = row(sec, local_label)
    assert (loc["epoch (C)"], loc["collectives (C)"], loc["val acc % (C)"]) == (
        "2",
        "100",
        "75.00 ± –",
    )
    assert loc["val acc % (C/4)"] == "–"  # 50 > 36
    assert row(sec, "Adam lr=0.001 (|B|=128)")["val acc % (C)"] == "–"  # 469 > 144
    assert (
        "At C = 144 collectives, APTS N=2 (|B|=10000) wins with 85.00% validation accuracy, "
        f"10.00 points above the best other method, {local_label} (75.00%)." in sec
    )
    assert (
        "At C/4 = 36 collectives, APTS N=2 (|B|=10000) wins with 60.00% validation "
        "accuracy; no other method finishes an epoch within the budget." in sec
    )
    figure = tmp_path / "out" / "comm_mnist_fcnn.png"
    assert figure.read_bytes()[:8] == PNG_SIGNATURE and "](comm_mnist_fcnn.png)" in sec


def test_a_baseline_wins_and_the_best_lr_represents_its_sweep(tmp_path):
    root = tmp_path / "runs"
    apts_and_ddp(root)
    # Local Adam H=13, two seeds, 36 averages per epoch (APTS's count):
    # epoch 4 (144): (90 + 92) / 2 = 91, std sqrt(2); epoch 1 (36): (70 + 72) / 2 = 71
    write_run(root / "l0", local(seed=0), [70.0, 80.0, 88.0, 90.0, 91.0], comm=36)
    write_run(root / "l1", local(seed=1), [72.0, 82.0, 86.0, 92.0, 93.0], comm=36)
    # the same method at a worse lr: hidden (its sweep is represented by lr=0.001)
    write_run(root / "l2", local(lr=0.1), [10.0, 10.0, 10.0, 10.0, 10.0], comm=36)
    md = build(root, tmp_path / "out")
    sec = section(md, "## Who wins at equal communication")
    label = "Local Adam N=2 H=13 lr=0.001 (|B|=128)"
    assert "Local Adam N=2 H=13 lr=0.1 (|B|=128)" not in sec
    loc = row(sec, label)
    assert loc["val acc % (C)"] == "91.00 ± 1.41"
    assert loc["val acc % (C/4)"] == "71.00 ± 1.41"
    assert (
        f"At C = 144 collectives, {label} wins with 91.00% validation accuracy, 6.00 points "
        "above the best APTS configuration, APTS N=2 (|B|=10000) (85.00%)." in sec
    )
    assert (
        f"At C/4 = 36 collectives, {label} wins with 71.00% validation accuracy, 11.00 points "
        "above the best APTS configuration, APTS N=2 (|B|=10000) (60.00%)." in sec
    )
    # the lr sweep of Local Adam is in the tuning table, labelled with N and H
    sweep = row(section(md, "## Tuning cost"), "Local Adam N=2 H=13 (|B|=128)")
    assert sweep["best lr (final acc)"] == "0.001 (92.00%)"


def test_no_apts_no_budget(tmp_path):
    write_run(tmp_path / "runs" / "l", local(), [70.0, 80.0, 82.0, 83.0, 84.0], comm=36)
    md = build(tmp_path / "runs", tmp_path / "out")
    sec = section(md, "## Who wins at equal communication")
    assert "No APTS run with collectives here: no budget to compare at." in sec


def test_two_apts_configurations_with_one_budget_share_one_table(tmp_path):
    """APTS N=2 and N=4 issue the same collectives (3 + G per step): one table for their
    budget, naming both, not the same table twice."""
    root = tmp_path / "runs"
    apts_and_ddp(root)
    write_run(root / "apts4", config("apts", subdomains=4), [58.0, 69.0, 79.0, 84.0], comm=36)
    write_run(root / "apts3", config("apts", subdomains=3, epochs=2), [50.0, 60.0], comm=36)
    sec = section(build(root, tmp_path / "out"), "## Who wins at equal communication")
    assert sec.count("**C = 144 collectives") == 1
    assert (
        "**C = 144 collectives: all 4 epochs of APTS N=2 (|B|=10000) and of APTS N=4 "
        "(|B|=10000); C/4 = 36.**" in sec
    )
    assert sec.count("**C = 72 collectives") == 1  # N=3's two epochs: a budget of its own
    assert sec.count("At C = 144 collectives,") == 1
