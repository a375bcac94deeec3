"""The report's zero-tuning table, on a hand-made run tree: which configurations are at
their defaults, their order, cells and sentences, runs with and without a validation split."""

from __future__ import annotations

import pytest
from report_tree import build, config, row, section, table, write_run

from apts.report.groups import Group
from apts.report.zero_tuning import at_defaults, optimizer_defaults

HEADING = "## Without tuning"


def _cfg(opt: str, batch: int, dataset: str = "mnist", **kw):
    return config(opt, batch_size=batch, epochs=2, dataset__name=dataset, **kw)


@pytest.fixture(scope="module")
def md(tmp_path_factory) -> str:
    tree = tmp_path_factory.mktemp("tree")
    runs = [
        # (name, config, val accs, test accs, collectives per epoch)
        ("apts", _cfg("apts", 10000), [80, 85], [79, 84.5], 36),
        ("adam_big", _cfg("adam", 10000), [70, 78], [69, 77], 6),
        ("adam_small", _cfg("adam", 128), [84, 86], [83, 85], 469),
        ("adam_tuned", _cfg("adam", 128, optimizer__lr=0.003), [90, 91], [89, 90], 469),
        ("prodigy_big", _cfg("prodigy", 10000), [60, 75], [59, 74], 6),
        ("prodigy_small", _cfg("prodigy", 128), [85, 87.5], [84, 86.5], 469),
        ("sf_big", _cfg("schedulefree_adamw", 10000), [65, 77], [64, 76], 6),
        ("sf_small", _cfg("schedulefree_adamw", 128), [83, 86.5], [82, 85.5], 469),
        ("diloco", _cfg("diloco", 128), [84, 86.2], [83, 85.2], 37),
        ("local_h52", _cfg("local_adam", 128, optimizer__sync_every=52), [85, 88], [84, 87], 10),
    ]
    for name, cfg, accs, tests, comm in runs:
        write_run(tree / name, cfg, accs, test_accs=tests, comm=comm)
    # runs from before the validation split: their val_acc was the test split
    write_run(tree / "old_apts", _cfg("apts", 10000, "fashion_mnist"), [84, 86], split="legacy")
    write_run(tree / "old_adam", _cfg("adam", 128, "fashion_mnist"), [85, 87], split="legacy")
    return build(tree, tree / "report")


def test_only_configurations_at_their_defaults_in_size_then_validation_order(md):
    rows = table(_panel(md, "mnist"))
    assert [r["configuration"] for r in rows] == [
        "APTS N=2 (|B|=10000)",
        "Adam lr=0.001 (|B|=10000)",
        "Schedule-free AdamW N=2 (|B|=10000)",
        "Prodigy N=2 (|B|=10000)",
        "Prodigy N=2 (|B|=128)",
        "Schedule-free AdamW N=2 (|B|=128)",
        "DiLoCo N=2 H=13 lr=0.001 (|B|=128)",
        "Adam lr=0.001 (|B|=128)",
    ]  # Adam at lr=0.003 (the best run) and Local Adam at H=52 were tuned: not here
    apts = row(_panel(md, "mnist"), "APTS N=2 (|B|=10000)")
    assert apts["|B|"] == "10000"
    assert apts["final val acc (%)"] == "85.00 ± –"
    assert apts["final test acc (%)"] == "84.50 ± –"
    assert apts["collectives"] == "72"
    assert row(_panel(md, "mnist"), "Adam lr=0.001 (|B|=128)")["collectives"] == "938"


def test_one_sentence_per_batch_size_from_the_numbers(md):
    text = _panel(md, "mnist")
    assert (
        "At |B| = 10000: best without tuning is APTS N=2 (|B|=10000) (85.00% validation, "
        "84.50% test; 72 collectives). APTS N=2 (|B|=10000) is 7.00 points ahead of "
        "Adam lr=0.001 (|B|=10000) with 6.0× more collectives, the best other method at "
        "this |B|." in text
    )
    assert (
        "At |B| = 128: best without tuning is Prodigy N=2 (|B|=128) (87.50% validation, "
        "86.50% test; 938 collectives). APTS does not run at this |B|; at its own: "
        "APTS N=2 (|B|=10000) is 2.50 points behind Prodigy N=2 (|B|=128) with 13.0× fewer "
        "collectives (85.00% validation, 84.50% test; 72 collectives)." in text
    )
    assert text.index("At |B| = 10000") < text.index("At |B| = 128")


def test_runs_without_a_validation_split_are_compared_on_test_and_say_so(md):
    text = _panel(md, "fashion_mnist")
    apts = row(text, "APTS N=2 (|B|=10000)")
    assert apts["final val acc (%)"] == "– (no split)"
    assert apts["final test acc (%)"] == "86.00 ± –"
    assert (
        "At |B| = 10000: best without tuning is APTS N=2 (|B|=10000) (86.00% test (no "
        "validation split); 72 collectives)." in text
    )
    assert (
        "APTS N=2 (|B|=10000) is 1.00 points behind Adam lr=0.001 (|B|=128) with as many "
        "collectives (86.00% test (no validation split); 72 collectives)." in text
    )


def test_defaults_come_from_the_optimizer_config_files():
    assert optimizer_defaults("adam")["lr"] == 0.001
    assert optimizer_defaults("schedulefree_adamw")["lr"] == 0.0025
    assert optimizer_defaults("nonexistent") is None

    def group(opt: str, **kw) -> Group:
        from apts.report.groups import config_key

        return Group(config_key(config(opt, **kw)), [])

    assert at_defaults(group("apts", optimizer__gamma=0.01))  # nothing to tune
    assert at_defaults(group("prodigy", optimizer__lr=1))  # 1 == 1.0
    assert not at_defaults(group("prodigy", optimizer__lr=2.0))
    assert not at_defaults(group("diloco", optimizer__outer_lr=1.0))
    assert not at_defaults(group("local_adam", optimizer__sync_every=52))
    assert at_defaults(group("local_adam"))


def _panel(md: str, dataset: str) -> str:
    return section(section(md, HEADING), f"### {dataset} / fcnn")
