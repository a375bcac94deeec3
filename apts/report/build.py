"""Assemble report.md and its figures from loaded runs."""

from __future__ import annotations

from pathlib import Path

from apts.report.groups import Group, auto_target, group_runs, panels, plotted_groups, sweeps
from apts.report.paper import paper_section
from apts.report.plots import plot_acc_vs_comm, plot_val_acc
from apts.report.runs import Run, Skipped
from apts.report.sections import (
    final_accuracy_section,
    notes_section,
    plots_section,
    runs_section,
    skipped_section,
    what_was_run,
)
from apts.report.tuning import tuning_section


def targets_per_panel(
    by_panel: dict[tuple[str, str], list[Group]], target: float | None
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


def build_report(
    runs: list[Run],
    skipped: list[Skipped],
    out: Path,
    target: float | None = None,
    title: str = "APTS experiment report",
) -> Path:
    """Write ``out/report.md``, ``val_acc.png`` and ``acc_vs_comm.png``; returns report.md."""
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    by_panel = panels(groups)
    targets, target_notes = targets_per_panel(by_panel, target)
    plot_panels = {p: plotted_groups(gs) for p, gs in by_panel.items()}
    plot_val_acc(plot_panels, targets, out / "val_acc.png")
    no_comm = plot_acc_vs_comm(plot_panels, targets, out / "acc_vs_comm.png")
    hidden = [g for s in sweeps(groups) for g in s[1:]]

    lines = [f"# {title}", ""]
    lines += what_was_run(runs, skipped, groups)
    lines.append("")
    lines += final_accuracy_section(by_panel, targets)
    lines += plots_section(hidden, no_comm)
    lines += paper_section(by_panel, groups)
    lines += tuning_section(by_panel, groups)
    lines += runs_section(groups)
    lines += skipped_section(skipped)
    lines += notes_section(target, target_notes)
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
