"""The validation split (``dataset.val_size``): held out of the training set from the seed,
evaluated every epoch beside the test split, and the split every choice of the report is
made on; runs without one (``val_size=0``, or logged before it existed) are read as such."""

from __future__ import annotations

import pytest
import torch
from clitools import SMALL, cli, error_lines, read_metrics
from report_tree import build, config, row, section, write_run

from apts.data.dataset import Dataset, channel_stats, hold_out, val_count


def numbered(n: int) -> Dataset:
    """A dataset whose training image i carries its index in its first two pixels."""
    x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n) % 256
    x[:, 0, 0, 1] = torch.arange(n) // 256
    x[:, 0, 1:, :] = torch.randint(0, 256, (n, 3, 4), generator=torch.Generator().manual_seed(1))
    y = torch.arange(n) % 10
    mean, std = channel_stats(x)
    test_x = torch.zeros(7, 1, 4, 4, dtype=torch.uint8)
    return Dataset("t", x, y, test_x, torch.zeros(7, dtype=torch.int64), mean, std, 10)


def index_of(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()).tolist()


def test_hold_out_partitions_the_training_set_from_the_seed():
    ds = numbered(1000)
    a = hold_out(ds, 100, seed=3)
    val, train = index_of(a.val_x), index_of(a.train_x)
    assert len(val) == 100 and len(train) == 900
    assert sorted(val + train) == list(range(1000))  # a partition: nothing lost or repeated
    assert val == sorted(val) and train == sorted(train)  # the files' order is kept
    assert a.val_y.tolist() == [i % 10 for i in val]  # labels follow their images
    assert a.train_y.tolist() == [i % 10 for i in train]
    assert torch.equal(a.test_x, ds.test_x)  # the test split is untouched
    # statistics from the remaining training images only
    assert (a.mean, a.std) == channel_stats(ds.train_x[torch.tensor(train)])
    assert index_of(hold_out(ds, 100, seed=3).val_x) == val  # same seed, same split
    assert index_of(hold_out(ds, 100, seed=4).val_x) != val
    assert a.source[-1] == {"validation": {"held_out": 100, "of_train": 1000, "seed": 3}}


def test_val_size_zero_keeps_the_dataset_and_a_fraction_is_a_share():
    ds = numbered(1000)
    assert hold_out(ds, 0, seed=0) is ds and ds.val_x is None
    assert val_count(0.1, 1000) == 100 and val_count(250, 1000) == 250
    assert len(hold_out(ds, 0.25, seed=0).val_y) == 250
    with pytest.raises(ValueError, match="must leave training samples"):
        hold_out(ds, 1000, seed=0)


def test_a_run_logs_validation_and_test_and_val_size_zero_logs_test_only(tmp_path):
    for val_size, keys in [
        ("0.25", {"val_acc", "val_loss", "test_acc", "test_loss"}),
        ("0", set()),
    ]:
        run = tmp_path / f"v{val_size}"
        args = (*SMALL, "optimizer=adam", "epochs=1", f"dataset.val_size={val_size}")
        r = cli(*args, f"hydra.run.dir={run}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        rec = read_metrics(run)[0]
        if keys:
            assert keys <= rec.keys()
        else:
            assert {"test_acc", "test_loss"} <= rec.keys() and "val_acc" not in rec


def test_a_val_size_that_leaves_nothing_to_train_on_is_one_line(tmp_path):
    r = cli(*SMALL, "dataset.val_size=1320", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    (line,) = error_lines(r.stderr)
    assert "dataset.val_size=1320 leaves none of the 1320 training samples" in line


def _sweep(root, split: str = "val"):
    """An Adam lr sweep where validation and test disagree on the best lr."""
    for lr, val, test in [(0.001, 80.0, 90.0), (0.01, 85.0, 70.0)]:
        cfg = config("adam", optimizer__lr=lr)
        if split != "val":
            cfg["dataset"].pop("val_size")
        write_run(root / f"adam_{lr}", cfg, [val] * 4, test_accs=[test] * 4, split=split)


def test_the_report_chooses_on_validation_and_shows_test_beside_it(tmp_path):
    _sweep(tmp_path / "runs")
    md = build(tmp_path / "runs", tmp_path / "out")
    assert "every choice in this report" in md and "have no validation split" not in md
    sweep = row(section(md, "## Tuning cost"), "Adam (|B|=128)")
    assert sweep["best lr (final acc)"] == "0.01 (85.00%)"  # validation's choice, not test's
    assert sweep["best lr's test acc (%)"] == "70.00 ± –"
    final = row(section(md, "## Final validation accuracy"), "Adam lr=0.01 (|B|=128)")
    assert (final["final val acc (%)"], final["final test acc (%)"]) == ("85.00 ± –", "70.00 ± –")


@pytest.mark.parametrize("split", ["none", "legacy"])
def test_runs_without_a_validation_split_are_compared_on_test_and_say_so(tmp_path, split):
    # val_size=0 logs test_acc only; a run from before the split logged the test split's
    # accuracy as val_acc: both are read as test accuracies and marked
    _sweep(tmp_path / "runs", split)
    md = build(tmp_path / "runs", tmp_path / "out")
    assert "2 of 2 runs have no validation split" in md
    final = row(section(md, "## Final validation accuracy"), "Adam lr=0.01 (|B|=128)")
    assert final["final val acc (%)"] == "– (no split)"
    assert final["final test acc (%)"] == "85.00 ± –"  # the accuracies written as test
