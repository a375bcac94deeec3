"""apts-report: ablation studies (runs with a ``study``): one table and one figure each,
and nothing of them in the main comparison."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from report_tree import build, config, row, section, table, write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ablate_local_iters, APTS N=2, 4 epochs, seeds 0, 1, 2. Final accuracies per L:
#   L=0: 80, 82, 84       -> 82.00 ± 2.00
#   L=1: 85, 86, 90       -> 87.00 ± sqrt((4 + 1 + 9) / 2) = sqrt(7) = 2.65
#   L=3: 88, 88, (seed 2 diverged at epoch 2) -> 88.00 ± 0.00 over 2 of 3 runs
# collectives per epoch 30 + 6 L (so 120, 144, 192 in 4 epochs); seed s runs (s + 1) s/epoch
FINALS = {0: [80.0, 82.0, 84.0], 1: [85.0, 86.0, 90.0], 3: [88.0, 88.0, None]}


def study_run(root: Path, study: str, seed: int, final: float | None, **over) -> None:
    cfg = config("apts", seed=seed, study=study, **over)
    li = cfg["optimizer"]["local_iters"]
    name = "_".join(f"{k}={v}" for k, v in over.items()) + f"_s{seed}"
    if final is None:
        write_run(
            root / study / name,
            cfg,
            [50.0, 60.0],
            comm=30 + 6 * li,
            status="diverged",
            summary={"reason": "non-finite loss", "step": 9},
        )
    else:
        accs = [final - 30, final - 20, final - 10, final]
        write_run(root / study / name, cfg, accs, comm=30 + 6 * li, wall=seed + 1.0)


@pytest.fixture(scope="module")
def ablation_md(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("abl") / "runs"
    for li, finals in FINALS.items():
        for seed, final in enumerate(finals):
            study_run(root, "ablate_local_iters", seed, final, optimizer__local_iters=li)
    for n, final in ((2, 86.0), (4, 84.0), (8, 80.0)):
        study_run(root, "ablate_subdomains", 0, final, subdomains=n)
    for gamma, final in (("auto", 70.0), (0.01, 75.0), (0.001, 86.0)):
        study_run(root, "ablate_gamma", 0, final, optimizer__gamma=gamma)
    for li, mem in ((1, 3), (3, 5)):  # two keys vary together
        study_run(root, "ablate_mixed", 0, 80.0, optimizer__local_iters=li, optimizer__memory=mem)
    # the main comparison: one APTS run outside every study
    write_run(root / "main" / "apts", config("apts"), [60.0, 70.0, 80.0, 85.0])
    out = root.parent / "out"
    return out, build(root, out)


def test_ablation_table_mean_std_collectives_wall(ablation_md):
    _, md = ablation_md
    sec = section(md, "### ablate_local_iters: APTS on mnist / fcnn")
    assert "Factor: `optimizer.local_iters`." in sec
    assert [r["optimizer.local_iters"] for r in table(sec)] == ["0", "1", "3"]
    l0, l1, l3 = (row(sec, v) for v in ("0", "1", "3"))
    assert l0["final val acc (%)"] == "82.00 ± 2.00"
    assert l1["final val acc (%)"] == f"87.00 ± {math.sqrt(7):.2f}" == "87.00 ± 2.65"
    assert l3["final val acc (%)"] == "88.00 ± 0.00"
    assert l0["runs (completed/all)"] == "3/3"
    assert l3["runs (completed/all)"] == "2/3 (diverged (2/4 epochs))"
    assert (l0["collectives"], l1["collectives"], l3["collectives"]) == ("120", "144", "192")
    # wall: seed s takes (s + 1) s per epoch, 4 epochs: mean of 4, 8, 12 = 8; L=3: 4, 8 -> 6
    assert (l0["wall time / run"], l3["wall time / run"]) == ("8.0 s", "6.0 s")


def test_factor_order_numbers_then_strings_and_two_keys(ablation_md):
    _, md = ablation_md
    gamma = section(md, "### ablate_gamma")
    assert [r["optimizer.gamma"] for r in table(gamma)] == ["0.001", "0.01", "auto"]
    mixed = section(md, "### ablate_mixed")
    assert (
        "More than one key varies in this study: `optimizer.local_iters`, `optimizer.memory`"
        in (mixed)
    )
    assert [r["factor"] for r in table(mixed)] == [
        "optimizer.local_iters=1, optimizer.memory=3",
        "optimizer.local_iters=3, optimizer.memory=5",
    ]


def test_studies_stay_out_of_the_main_comparison(ablation_md):
    out, md = ablation_md
    final = section(md, "## Final validation accuracy")
    assert [r["configuration"] for r in table(final)] == ["APTS N=2 (|B|=10000)"]
    assert row(final, "APTS N=2 (|B|=10000)")["seeds"] == "1 (0)"
    assert "**Ablations:** 17 runs in 4 studies (ablate_gamma, ablate_local_iters, " in md
    runs = section(md, "## Runs")
    assert row(runs, "runs/ablate_subdomains/subdomains=8_s0")["configuration"] == (
        "ablate_subdomains: APTS N=8 (|B|=10000)"
    )
    # the diverged study run is listed with the others that did not complete
    status = row(
        section(md, "## Run status"), "runs/ablate_local_iters/optimizer__local_iters=3_s2"
    )
    assert (status["status"], status["reason"]) == ("diverged", "non-finite loss (step 9)")


def test_ablation_figures(ablation_md):
    out, md = ablation_md
    for name in ("ablation_ablate_local_iters.png", "ablation_ablate_subdomains.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
        assert f"]({name})" in md
    assert not (out / "acc_vs_n.png").exists()  # each figure written once
    n = section(md, "### ablate_subdomains")
    assert [r["subdomains"] for r in table(n)] == ["2", "4", "8"]


def _studies(out: Path) -> dict:
    from apts.report import load_runs
    from apts.report.ablations import find_studies

    runs, _, _ = load_runs([out.parent / "runs"])
    return {s.name: s for s in find_studies([r for r in runs if r.study is not None])}


def test_ablation_figure_marks_default_categories_and_error_bars(ablation_md, tmp_path):
    from apts.report.ablation_plots import plot_ablations

    out, _ = ablation_md
    studies = _studies(out)
    # L: numbers (a line joins them), collectives differ (right panel), default L = 3
    # (configs/optimizer/apts.yaml)
    fig = plot_ablations(studies["ablate_local_iters"], tmp_path / "l.png")
    acc, comm = fig.axes
    assert [t.get_text() for t in acc.get_xticklabels()] == ["0", "1", "3\n(default)"]
    assert acc.lines[0].get_linestyle() == "-"
    assert [round(y) for y in comm.lines[0].get_ydata()] == [120, 144, 192]
    legend = [t.get_text() for t in acc.get_legend().get_texts()]
    assert legend[0] == "mean ± sample std over 2/3 seeds (error bar)"
    assert "each seed's final accuracy" in legend and "default (APTS's configs)" in legend
    # gamma: "auto" makes the levels categories, nothing joins them; the same collectives
    # at every level: no right panel, the title says how many
    fig = plot_ablations(studies["ablate_gamma"], tmp_path / "g.png")
    (acc,) = fig.axes
    assert acc.lines[0].get_linestyle() == "None"
    assert [t.get_text() for t in acc.get_xticklabels()] == ["0.001\n(default)", "0.01", "auto"]
    assert "collectives: 192 per run at every level" in acc.get_title()
    assert "(categories)" in acc.get_xlabel()
    # subdomains: the default (train.yaml's 1: no preset names this study) is not a level
    fig = plot_ablations(studies["ablate_subdomains"], tmp_path / "n.png")
    assert not any("default" in t.get_text() for t in fig.axes[0].get_xticklabels())


def test_factor_defaults_come_from_the_study_preset():
    from apts.report.ablations import factor_defaults

    # configs/experiment/ablate_subdomains.yaml (study: subdomains) sets subdomains: 2
    assert factor_defaults("subdomains", ["subdomains"], ["apts"]) == (2,)
    assert factor_defaults("gamma", ["optimizer.gamma"], ["apts"]) == (0.001,)
    assert factor_defaults("x", ["batch_size", "optimizer.memory"], ["apts"]) == (10000, 10)
    assert factor_defaults("x", ["no.such.key"], ["apts"]) is None
