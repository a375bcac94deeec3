"""Assemble report.md and its figures from loaded runs."""

from __future__ import annotations

from pathlib import Path

from apts.report.ablation_plots import plot_ablations
from apts.report.ablations import ablation_section, find_studies
from apts.report.communication import (
    budget_of,
    communicating,
    equal_comm_section,
    figure_name,
)
from apts.report.groups import (
    Group,
    auto_target,
    completed_only,
    group_runs,
    panels,
    plotted_groups,
    sweeps,
)
from apts.report.multirun import Multirun
from apts.report.network import BenchRow, network_section
from apts.report.paper import paper_section
from apts.report.plots import (
    plot_acc_vs_comm,
    plot_acc_vs_cost,
    plot_comm_matched,
    plot_loss,
    plot_val_acc,
)
from apts.report.runs import Run, Skipped
from apts.report.sections import (
    final_accuracy_section,
    notes_section,
    plots_section,
    runs_section,
    what_was_run,
)
from apts.report.status import status_section
from apts.report.tuning import tuning_section
from apts.report.zero_tuning import zero_tuning_section

Panels = dict[tuple[str, str], list[Group]]


def targets_per_panel(
    by_panel: Panels, target: float | None
) -> tuple[dict[tuple[str, str], float], list[str]]:
    """The target accuracy of each dataset/model (``target``, or :func:`auto_target`) and,
    for automatic ones, a note line that says how it was chosen."""
    targets: dict[tuple[str, str], float] = {}
    notes: list[str] = []
    for p, gs in by_panel.items():
        if target is not None:
            targets[p] = target
        else:
            targets[p], how = auto_target(gs)
            notes.append(f"- **{p[0]} / {p[1]}**: target {targets[p]:.2f}% = {how}.")
    return targets, notes


def comm_figures(plot_panels: Panels, out: Path) -> dict[tuple[str, str], str]:
    """Draw each dataset/model's accuracy-against-communication figure; their file names."""
    names = {}
    for panel, gs in plot_panels.items():
        groups = communicating(gs)
        if groups:
            budgets = [budget_of(g) for g in groups if g.opt == "apts"]
            names[panel] = figure_name(panel)
            plot_comm_matched(panel, groups, budgets, out / names[panel])
    return names


def comparison_sections(
    groups: list[Group], out: Path, target: float | None, net_bench: list[BenchRow] | None = None
) -> tuple:
    """The main comparison (completed runs outside any study): final accuracy, plots, equal
    communication, time on a network (checked against ``net_bench``), published numbers,
    tuning cost, every method at its defaults; returns (lines, target notes)."""
    by_panel = panels(groups)
    targets, target_notes = targets_per_panel(by_panel, target)
    plot_panels = {p: plotted_groups(gs) for p, gs in by_panel.items()}
    plot_val_acc(by_panel, targets, out / "val_acc.png")
    plot_acc_vs_cost(by_panel, out / "acc_vs_cost.png")
    plot_loss(by_panel, out / "loss.png")
    no_comm = plot_acc_vs_comm(plot_panels, targets, out / "acc_vs_comm.png")
    hidden = [g for s in sweeps(groups) for g in s[1:]]
    lines = final_accuracy_section(by_panel, targets)
    lines += plots_section(hidden, no_comm)
    lines += equal_comm_section(plot_panels, comm_figures(plot_panels, out))
    lines += network_section(plot_panels, targets, net_bench)
    lines += paper_section(by_panel, groups)
    lines += tuning_section(by_panel, groups)
    lines += zero_tuning_section(by_panel)
    return lines, target_notes


def ablation_sections(study_runs: list[Run], out: Path) -> list[str]:
    """The ablation studies' tables and figures (one file per study)."""
    studies = find_studies(study_runs)
    for s in studies:
        plot_ablations(s, out / s.file)
    return ablation_section(studies)


def splits_sentence(runs: list[Run]) -> str:
    """How the report chooses: on validation, with test beside it (and which runs had no
    validation split, so that their choices rest on test)."""
    line = (
        "**Splits:** every choice in this report (best learning rate, target accuracy, "
        "equal-communication winner, ablation levels) is made on validation accuracy "
        "(`dataset.val_size` samples held out of the training set); test accuracy is "
        "reported beside it and never used to choose."
    )
    without = [r for r in runs if r.chosen_on != "val"]
    if without:
        line += (
            f" {len(without)} of {len(runs)} runs have no validation split (`val_size=0`, "
            "or logged before it existed): they are compared on test accuracy, their "
            'validation cells read "– (no split)".'
        )
    return line


def build_report(
    runs: list[Run],
    skipped: list[Skipped],
    out: Path,
    target: float | None = None,
    title: str = "APTS experiment report",
    multiruns: list[Multirun] | None = None,
    net_bench: list[BenchRow] | None = None,
) -> Path:
    """Write ``out/report.md`` and its figures; returns the path of report.md.

    ``net_bench``: the runs of a ``make bench-net`` result (:func:`load_net_bench`), the
    check of *Time on a network*; None: the section says how to make one.

    Runs with a ``study`` go to *Ablations* only; runs that did not complete are listed
    in *Run status* and *Runs* and left out of every statistic.
    """
    out.mkdir(parents=True, exist_ok=True)
    main_runs = [r for r in runs if r.study is None]
    study_runs = [r for r in runs if r.study is not None]
    all_groups = group_runs(main_runs)
    study_groups = group_runs(study_runs)
    labels = {id(r): g.label for g in all_groups + study_groups for r in g.runs}
    groups = completed_only(all_groups)

    lines = [f"# {title}", ""]
    lines += what_was_run(main_runs, skipped, all_groups, study_runs)
    lines += ["", splits_sentence(runs), ""]
    lines += status_section(runs, skipped, multiruns or [], labels)
    target_notes: list[str] | None = None
    if groups:
        comparison, target_notes = comparison_sections(groups, out, target, net_bench)
        lines += comparison
    elif main_runs:
        outside = " outside the ablation studies" if study_runs else ""
        lines += [f"No run{outside} completed: no accuracy table to show.", ""]
    lines += ablation_sections(study_runs, out)
    lines += runs_section(all_groups + study_groups)
    lines += notes_section(target, target_notes)
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
