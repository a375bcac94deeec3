"""apts-report on hand-built run directories: tables, flags, skipped runs, plots, exit codes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from report_tree import row, section
from report_tree import table as rows

from apts import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------- fixtures

APTS_OPT = """\
optimizer:
  name: apts
  local_iters: 3
  global_iters: 3
  foc: true
  local_memory: keep
  radius: 0.1
"""

ADAM_OPT = """\
optimizer:
  name: adam
  lr: {lr}
  betas:
  - 0.9
  - 0.999
  weight_decay: 0.0
"""


def config_text(
    *,
    optimizer: str,
    seed: int,
    subdomains: int,
    epochs: int,
    lr: float | None = None,
    batch_size: int = 10000,
    dataset: str = "mnist",
    model: str = "fcnn",
    device: str = "cpu",
) -> str:
    head = f"""\
seed: {seed}
subdomains: {subdomains}
epochs: {epochs}
batch_size: {batch_size}
overlap: {0.05 if optimizer == "apts" else 0.0}
device: {device}
eval_batch_size: 5000
progress: false
checkpoint: true
out_dir: null
dataset:
  name: {dataset}
  data_dir: data
  download: true
  augment: false
model:
  name: {model}
"""
    opt = APTS_OPT if optimizer == "apts" else ADAM_OPT.format(lr=lr)
    tail = """\
launcher:
  name: local
  master_addr: 127.0.0.1
  port: 0
  timeout_s: 600
"""
    return head + opt + tail


def write_run(
    d: Path,
    *,
    accs: list[float],
    comm_per_epoch: int,
    wall: float = 1.0,
    epochs: int | None = None,
    complete: bool = True,
    malformed_after: int | None = None,
    **cfg,
) -> Path:
    """One run directory in the runner's format; ``epochs`` (planned) defaults to len(accs)."""
    d.mkdir(parents=True)
    epochs = len(accs) if epochs is None else epochs
    (d / "config.yaml").write_text(config_text(epochs=epochs, **cfg))
    # Hydra's own copy: unresolved, and must not be taken for a run
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text(
        config_text(epochs=epochs, **cfg).replace("data_dir: data", "data_dir: ${oc.env:X,data}")
    )
    lines, total, elapsed = [], 0, 0.0
    for i, acc in enumerate(accs, start=1):
        total += comm_per_epoch
        elapsed += wall
        rec = {
            "epoch": i,
            "train_loss": 1.0 / i,
            "val_loss": 1.1 / i,
            "val_acc": acc,
            "test_loss": 1.2 / i,
            "test_acc": acc - 1,
            "comm_calls": comm_per_epoch,
            "comm_bytes": 1000 * comm_per_epoch,
            "comm_calls_total": total,
            "comm_bytes_total": 1000 * total,
            "grad_evals": 1.0,
            "steps": 6,
            "wall_s": wall,
            "elapsed_s": elapsed,
            "fwd_bwd_s": wall / 2,
            "comm_by_kind": {"calls": {"optimizer": total, "metrics": i}, "bytes": {}},
        }
        lines.append(json.dumps(rec))
        if malformed_after == i:
            lines.append('{"epoch": 99, "val_acc": 12.5, "oops"')
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if complete:
        (d / "summary.json").write_text(
            json.dumps({"status": "completed", **json.loads(lines[-1])})
        )
    return d


# Hand-picked numbers:
#   APTS N=2, seeds 0/1: finals 90, 88 -> mean 89.00, sample std sqrt(2) = 1.41
#   Adam lr=0.001: final 70; lr=0.01: final 87 (best)
#   auto target = 0.99 * min(best APTS 89, best Adam 87) = 86.13
APTS2_S0 = [50.0, 70.0, 80.0, 90.0]
APTS2_S1 = [60.0, 75.0, 87.0, 88.0]
ADAM_LO = [40.0, 55.0, 65.0, 70.0]
ADAM_HI = [70.0, 80.0, 86.0, 87.0]
APTS4_STOPPED = [30.0, 45.0]
APTS1 = [20.0, 30.0, 40.0, 50.0]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """The default report of one fixture tree, built once: (out dir, report.md text)."""
    base = tmp_path_factory.mktemp("report")
    tree = build_tree(base)
    out = base / "out"
    return out, run_report(tree, out)


def build_tree(tmp_path: Path) -> Path:
    root = tmp_path / "experiments"
    sweep = root / "apts_sweep"
    for j, (seed, accs, wall) in enumerate([(0, APTS2_S0, 1.0), (1, APTS2_S1, 2.0)]):
        write_run(
            sweep / f"{j}_seed={seed}",
            optimizer="apts",
            seed=seed,
            subdomains=2,
            accs=accs,
            comm_per_epoch=36,
            wall=wall,
        )
    (sweep / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    grid = root / "nested" / "adam_grid"
    write_run(
        grid / "0_optimizer.lr=0.001",
        optimizer="adam",
        lr=0.001,
        seed=0,
        subdomains=2,
        accs=ADAM_LO,
        comm_per_epoch=6,
    )
    write_run(
        grid / "1_optimizer.lr=0.01",
        optimizer="adam",
        lr=0.01,
        seed=0,
        subdomains=2,
        accs=ADAM_HI,
        comm_per_epoch=6,
        device="cuda",  # device does not make a separate configuration
        malformed_after=2,
    )
    (grid / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    write_run(
        root / "nested" / "deeper" / "apts_n4_stopped",
        optimizer="apts",
        seed=0,
        subdomains=4,
        accs=APTS4_STOPPED,
        epochs=4,
        complete=False,
        comm_per_epoch=36,
    )
    write_run(
        root / "single" / "apts_n1",
        optimizer="apts",
        seed=0,
        subdomains=1,
        accs=APTS1,
        comm_per_epoch=0,
    )
    no_metrics = root / "broken" / "no_metrics"
    no_metrics.mkdir(parents=True)
    (no_metrics / "config.yaml").write_text(
        config_text(optimizer="apts", seed=5, subdomains=2, epochs=4)
    )
    empty = root / "broken" / "empty_metrics"
    empty.mkdir(parents=True)
    (empty / "config.yaml").write_text(
        config_text(optimizer="apts", seed=6, subdomains=2, epochs=4)
    )
    (empty / "metrics.jsonl").write_text("")
    return root


# --------------------------------------------------------------------------- helpers


def run_report(tree: Path, out: Path, *extra: str, capsys=None) -> str:
    rc = report.main([str(tree), "--out", str(out), *extra])
    assert rc == 0
    if capsys is not None:
        printed = capsys.readouterr().out.strip()
        assert printed == str(out / "report.md")
    return (out / "report.md").read_text()


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_SIGNATURE


# --------------------------------------------------------------------------- tests


def test_final_table_auto_target(built):
    _, md = built
    final = section(md, "## Final validation accuracy")
    target = 0.99 * min(89.0, 87.0)  # lowest of the per-optimizer best mean final accuracies
    ts = f"{target:.2f}%"
    assert ts == "86.13%"
    assert f"### mnist / fcnn (target {ts})" in final

    apts2 = row(final, "APTS N=2 (|B|=10000)")
    std = math.sqrt(((90 - 89) ** 2 + (88 - 89) ** 2) / (2 - 1))
    assert apts2["final val acc (%)"] == f"{89:.2f} ± {std:.2f}" == "89.00 ± 1.41"
    assert apts2["seeds"] == "2 (0, 1)"
    assert apts2["epochs"] == "4"
    # seed 0 reaches 86.13 at epoch 4 (90), seed 1 at epoch 3 (87): mean 3.5
    assert apts2[f"epochs to {ts}"] == "3.5"
    # collectives then: 4*36 = 144 and 3*36 = 108 -> 126
    assert apts2[f"collectives to {ts}"] == "126"
    assert apts2["total collectives"] == "144"
    assert apts2["wall time / run"] == "6.0 s"  # (4*1.0 + 4*2.0) / 2
    assert apts2["status"] == "complete"

    hi = row(final, "Adam lr=0.01 (|B|=10000)")
    assert hi["final val acc (%)"] == "87.00 ± –"
    assert hi[f"epochs to {ts}"] == "4"
    assert hi[f"collectives to {ts}"] == "24"
    assert hi["status"] == "complete"
    lo = row(final, "Adam lr=0.001 (|B|=10000)")
    assert lo["final val acc (%)"] == "70.00 ± –"
    assert lo[f"epochs to {ts}"] == lo[f"collectives to {ts}"] == "not reached"

    # the run stopped after 2 of 4 epochs is left out of the table, listed in Run status
    assert "APTS N=4" not in final
    stopped = row(section(md, "## Run status"), "experiments/nested/deeper/apts_n4_stopped")
    assert (stopped["status"], stopped["epoch reached"]) == ("incomplete", "2/4")

    n1 = row(final, "APTS N=1 (|B|=10000)")
    assert n1["total collectives"] == "0"

    notes = section(md, "## Notes")
    assert "86.13% = 0.99 × 87.00%" in notes


def test_explicit_target_and_partial_seeds(tree, tmp_path, capsys):
    md = run_report(tree, tmp_path / "t80", "--target", "80", capsys=capsys)
    final = section(md, "## Final validation accuracy")
    apts2 = row(final, "APTS N=2 (|B|=10000)")
    assert apts2["epochs to 80.00%"] == "3"  # both seeds at epoch 3 (80 and 87)
    assert apts2["collectives to 80.00%"] == "108"
    hi = row(final, "Adam lr=0.01 (|B|=10000)")
    assert (hi["epochs to 80.00%"], hi["collectives to 80.00%"]) == ("2", "12")
    assert "set with `--target`" in md

    md = run_report(tree, tmp_path / "t885", "--target", "88.5")
    apts2 = row(section(md, "## Final validation accuracy"), "APTS N=2 (|B|=10000)")
    assert apts2["epochs to 88.50%"] == "4 (1/2 seeds)"  # only seed 0 gets to 90
    assert apts2["collectives to 88.50%"] == "144 (1/2 seeds)"


def test_tuning_cost(built):
    _, md = built
    tuning = section(md, "## Tuning cost")
    sweep = row(tuning, "Adam (|B|=10000)")
    assert sweep["learning rates"] == "0.001, 0.01"
    assert sweep["runs"] == "2"
    assert sweep["best lr (final acc)"] == "0.01 (87.00%)"
    assert sweep["worst lr (final acc)"] == "0.001 (70.00%)"
    assert sweep["epochs spent"] == "8"
    apts2 = row(tuning, "APTS N=2 (|B|=10000)")
    assert (apts2["runs"], apts2["epochs per run"], apts2["epochs spent"]) == ("2", "4", "8")
    assert "APTS N=4" not in tuning  # its only run did not complete


def test_paper_comparison(built):
    _, md = built
    paper = section(md, "## Comparison with the published numbers")
    assert "### MNIST (mnist / fcnn)" in paper
    table = rows(paper)
    adam = [r for r in table if r["method"] == "Adam"]
    assert len(adam) == 1  # the sweep by its best lr only
    assert adam[0]["published (%)"] == "98.03"
    assert adam[0]["ours: configuration"] == "Adam lr=0.01 (|B|=10000)"
    assert adam[0]["ours − published"] == f"{87 - 98.03:+.2f}"
    n2 = next(r for r in table if r["method"] == "APTS N=2")
    assert (n2["published (%)"], n2["ours (%)"]) == ("98.24", "89.00 ± 1.41")
    n6 = next(r for r in table if r["method"] == "APTS N=6")
    assert n6["ours: configuration"] == "not run"


def test_flags_skipped_and_malformed(built):
    _, md = built
    runs = section(md, "## Runs")
    stopped = row(runs, "experiments/nested/deeper/apts_n4_stopped")
    assert stopped["status"] == "incomplete (2/4 epochs)"
    bad = row(runs, "experiments/nested/adam_grid/1_optimizer.lr=0.01")
    assert "malformed line of metrics.jsonl (line 3)" in bad["notes"]
    assert bad["epochs"] == "4"  # the good lines are all kept
    status = section(md, "## Run status")
    skipped = {r["run"]: r["reason"] for r in rows(status) if r["status"] == "no results"}
    assert skipped == {
        "experiments/broken/empty_metrics": "metrics.jsonl empty",
        "experiments/broken/no_metrics": "metrics.jsonl missing",
    }
    assert ".hydra" not in md
    what = next(line for line in md.splitlines() if line.startswith("**What was run:**"))
    assert "6 runs in 5 configurations (1 incomplete), 2 skipped" in what
    assert "APTS (N=1, 2, 4); Adam (N=2)" in what
    assert "seeds: 0, 1" in what
    # the single-process run has no collectives: left out of the log-scale plot, and said so
    assert "Not shown, because they recorded no collectives" in md
    assert "APTS N=1 (|B|=10000) (mnist)" in md


def test_plots_written(built):
    out, md = built
    for name in ("val_acc.png", "acc_vs_comm.png"):
        assert is_png(out / name), name
        assert f"]({name})" in md
    import matplotlib.image as mpimg

    img = mpimg.imread(out / "val_acc.png")
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600


def test_two_datasets_and_no_published_number(tree, tmp_path):
    write_run(
        tree / "fm" / "adam",
        optimizer="adam",
        lr=0.001,
        seed=3,
        subdomains=2,
        dataset="fashion_mnist",
        accs=[60.0, 70.0],
        comm_per_epoch=6,
    )
    out = tmp_path / "out"
    md = run_report(tree, out)
    assert "**fashion_mnist / fcnn**: no published number for this dataset" in md
    assert "### fashion_mnist / fcnn (target 69.30%)" in md  # one optimizer: 0.99 x 70
    assert "### mnist / fcnn (target 86.13%)" in md
    assert is_png(out / "val_acc.png") and is_png(out / "acc_vs_comm.png")


def test_labels_disambiguate_other_settings(tmp_path):
    for mem in ("keep", "reset"):
        d = write_run(
            tmp_path / "runs" / mem,
            optimizer="apts",
            seed=0,
            subdomains=4,
            accs=[50.0, 60.0],
            comm_per_epoch=36,
        )
        cfg = d / "config.yaml"
        cfg.write_text(cfg.read_text().replace("local_memory: keep", f"local_memory: {mem}"))
    md = run_report(tmp_path / "runs", tmp_path / "out")
    final = section(md, "## Final validation accuracy")
    assert row(final, "APTS N=4 local_memory=keep (|B|=10000)")["seeds"] == "1 (0)"
    assert row(final, "APTS N=4 local_memory=reset (|B|=10000)")["seeds"] == "1 (0)"


def test_no_runs_exit_2(tmp_path, capsys):
    empty = tmp_path / "nothing"
    (empty / "sub").mkdir(parents=True)
    assert report.main([str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apts-report: error:") and err.count("\n") == 1
    assert not (tmp_path / "out" / "report.md").exists()

    assert report.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and err.count("\n") == 1

    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "config.yaml").write_text(
        config_text(optimizer="apts", seed=0, subdomains=2, epochs=2)
    )
    assert report.main([str(only_broken), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no usable runs" in err and "metrics.jsonl missing" in err and err.count("\n") == 1


def test_module_entry_point(tree, tmp_path):
    out = tmp_path / "cli_out"
    r = subprocess.run(
        [sys.executable, "-m", "apts.report", str(tree), "--out", str(out), "--title", "T"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out / "report.md")
    assert (out / "report.md").read_text().startswith("# T\n")
    r = subprocess.run(
        [sys.executable, "-m", "apts.report", str(tmp_path / "void")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_baseline_labels_show_n_when_it_varies(tmp_path):
    for n in (2, 4):
        write_run(
            tmp_path / "runs" / f"n{n}",
            optimizer="adam",
            lr=0.001,
            seed=0,
            subdomains=n,
            accs=[50.0, 60.0],
            comm_per_epoch=6,
        )
    md = run_report(tmp_path / "runs", tmp_path / "out")
    final = section(md, "## Final validation accuracy")
    assert row(final, "Adam N=2 lr=0.001 (|B|=10000)")["epochs"] == "2"
    assert row(final, "Adam N=4 lr=0.001 (|B|=10000)")["epochs"] == "2"


def test_a_real_preset_sweep_lands_in_one_dir_per_job_and_the_report_finds_all(tmp_path):
    """apts-train -m over a preset (the smoke preset, two seeds x two optimizers), then
    apts-report on the sweep directory."""
    sweep = tmp_path / "sweep"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "apts.cli",
            "-m",
            "experiment=smoke",
            "epochs=1",
            "subdomains=1",
            "optimizer=sgd,adam",
            "seed=0,1",
            "progress=false",
            "checkpoint=false",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.jsonl"))
    assert len(jobs) == 4 and len({j.name for j in jobs}) == 4
    out = tmp_path / "report"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "4 runs in 2 configurations" in md
    # the grid planned in multirun.yaml, matched to the job directories Hydra made
    assert "- `sweep`: 4 jobs planned (optimizer (2) × seed (2)), 4 found, 0 missing." in md
    assert md.count("| 2 (0, 1) |") == 2  # each optimizer: both seeds grouped


def test_headline_one_line_per_method_chosen_on_validation(tmp_path):
    """val_acc.png: per method (optimizer, |B|) its best configuration by final validation
    accuracy, a colour per family (Adam and Local Adam share one), a style per variant;
    acc_vs_cost.png puts them on training time and samples seen; loss.png on the loss."""
    from report_tree import config, write_run

    from apts.report import load_runs
    from apts.report.groups import completed_only, group_runs, panels
    from apts.report.plots import plot_acc_vs_cost, plot_loss, plot_val_acc

    root = tmp_path / "runs"
    runs = {  # name: (config, accs); the best of each method ends highest on validation
        "apts2": (config("apts", epochs=3, subdomains=2), [70.0, 80.0, 86.0]),
        "apts4": (config("apts", epochs=3, subdomains=4), [70.0, 80.0, 85.0]),
        "adam_small_1": (config("adam", epochs=3, optimizer__lr=0.001), [80.0, 85.0, 87.0]),
        "adam_small_2": (config("adam", epochs=3, optimizer__lr=0.01), [80.0, 84.0, 86.5]),
        "adam_large": (config("adam", epochs=3, batch_size=10000), [60.0, 75.0, 84.0]),
        "local2": (config("local_adam", epochs=3, optimizer__sync_every=13), [81.0, 85.0, 87.5]),
        "local4": (config("local_adam", epochs=3, subdomains=4), [81.0, 85.0, 87.2]),
    }
    for name, (cfg, accs) in runs.items():
        # test accuracy that would pick differently: the choice must not look at it
        extra = {"test_acc": 99.0 if name in ("apts4", "local4") else 50.0, "steps": 10}
        d = write_run(root / name, cfg, accs)
        lines = [
            {**json.loads(ln), **extra} for ln in (d / "metrics.jsonl").read_text().splitlines()
        ]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    loaded, _, _ = load_runs([root])
    by_panel = panels(completed_only(group_runs(loaded)))
    fig = plot_val_acc(by_panel, {}, tmp_path / "val_acc.png")
    ax = fig.axes[0]
    drawn = {ln.get_label(): ln for ln in ax.lines}
    assert sorted(drawn) == sorted(
        [
            "APTS N=2 (|B|=10000) — best of 2; test 50.00%",
            "Adam lr=0.001 (|B|=128) — best of 2; test 50.00%",
            "Adam lr=0.001 (|B|=10000); test 50.00%",
            "Local Adam N=2 H=13 lr=0.001 (|B|=128) — best of 2; test 50.00%",
        ]
    )
    color = {
        label.split(" ")[0] + label.split(" ")[1]: ln.get_color() for label, ln in drawn.items()
    }
    style = {label: str(ln._unscaled_dash_pattern) for label, ln in drawn.items()}  # dashes
    assert color["Adamlr=0.001"] == color["LocalAdam"] != color["APTSN=2"]
    assert len(set(style.values())) == 3  # large batch, small batch, local
    assert ax.get_ylim()[0] == pytest.approx(84.0 - 5.0)  # 5 points below the lowest final
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"APTS / TR", "Adam", "local steps, averaged every H"} <= set(legend)
    # samples seen: 10 steps x |B| per epoch
    fig = plot_acc_vs_cost(by_panel, tmp_path / "acc_vs_cost.png")
    samples = {ln.get_label().split(" —")[0]: ln.get_xdata() for ln in fig.axes[1].lines}
    assert list(samples["APTS N=2 (|B|=10000)"]) == [1e5, 2e5, 3e5]
    assert list(samples["Adam lr=0.001 (|B|=128)"]) == [1280, 2560, 3840]
    fig = plot_loss(by_panel, tmp_path / "loss.png")
    assert fig.axes[0].get_yscale() == "log" and len(fig.axes[0].lines) == 4
