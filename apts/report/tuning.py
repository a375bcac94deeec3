"""What the learning-rate sweeps of the baselines cost, beside the runs that need none."""

from __future__ import annotations

from apts.report.formatting import (
    format_duration,
    format_range,
    format_value,
    markdown_table,
)
from apts.report.groups import LR_OPTIMIZERS, Group, sweeps
from apts.report.runs import as_number

TUNING_INTRO = (
    "SGD/Adam (DDP and Local) and DiLoCo need a learning rate; a sweep is the set of their "
    "configurations that differ only in `optimizer.lr`. *Epochs spent* counts every epoch "
    "of every run and seed of the sweep, runs that did not complete included. APTS/TR have "
    "no learning rate, Prodigy and schedule-free AdamW run at their authors' defaults: one "
    "run (per N, |B| and seed) at its settings."
)
SWEEP_HEADER = [
    "sweep",
    "learning rates",
    "runs",
    "best lr (final acc)",
    "worst lr (final acc)",
    "best lr's test acc (%)",
    "epochs spent",
    "wall time spent",
]
NO_LR_HEADER = [
    "configuration (no lr)",
    "runs",
    "epochs per run",
    "epochs spent",
    "wall time spent",
    "final val acc (%)",
    "final test acc (%)",
]


def tuning_section(by_panel: dict[tuple[str, str], list[Group]], groups: list[Group]) -> list[str]:
    """Per dataset/model: each SGD/Adam lr sweep (its learning rates, best and worst, the
    epochs and wall time it took), the configurations without a learning rate, and one line
    per sweep that puts the two side by side."""
    lines = ["## Tuning cost", "", TUNING_INTRO, ""]
    all_sweeps = sweeps(groups)
    for (ds, model), gs in by_panel.items():
        panel_sweeps = [s for s in all_sweeps if s[0].panel == (ds, model)]
        others = [g for g in gs if g.opt not in LR_OPTIMIZERS]
        lines += [f"### {ds} / {model}", ""]
        if panel_sweeps:
            lines += markdown_table(SWEEP_HEADER, [_sweep_row(s) for s in panel_sweeps])
            lines.append("")
        else:
            lines += ["No learning-rate sweep for this dataset/model.", ""]
        if others:
            lines += markdown_table(NO_LR_HEADER, [_no_lr_row(g) for g in others])
            lines.append("")
        for s in panel_sweeps:
            if len(s) >= 2:
                lines += [_sweep_sentence(s, others), ""]
    return lines


def _sweep_row(s: list[Group]) -> list:
    best, worst = s[0], s[-1]
    lrs = sorted((g.lr for g in s), key=lambda v: as_number(v) or 0.0)
    return [
        s[0].sweep_label,
        ", ".join(format_value(v) for v in lrs),
        sum(len(g.runs) for g in s),
        f"{format_value(best.lr)} ({best.final_mean:.2f}%)",
        f"{format_value(worst.lr)} ({worst.final_mean:.2f}%)" if len(s) > 1 else "–",
        best.test_cell(),
        sum(g.total_epochs for g in s),
        format_duration(sum(g.total_wall_s for g in s)),
    ]


def _no_lr_row(g: Group) -> list:
    return [
        g.label,
        len(g.runs),
        format_range([r.epochs_run for r in g.runs]),
        g.total_epochs,
        format_duration(g.total_wall_s),
        g.val_cell(),
        g.test_cell(),
    ]


def _sweep_sentence(s: list[Group], others: list[Group]) -> str:
    spent = sum(g.total_epochs for g in s)
    line = (
        f"{s[0].sweep_label}: {len(s)} learning rates, {spent} epochs in all, to find "
        f"lr={format_value(s[0].lr)} ({s[0].final_mean:.2f}%; "
        f"worst lr={format_value(s[-1].lr)}: {s[-1].final_mean:.2f}%)"
    )
    if others:
        cmp = ", ".join(
            f"{g.label} {format_range([r.epochs_run for r in g.runs])} epochs per run "
            f"({g.final_mean:.2f}%)"
            for g in others
        )
        line += f"; without a sweep: {cmp}"
    return line + "."
