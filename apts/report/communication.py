"""Who wins at equal communication: every method's accuracy within APTS's collectives.

APTS's budget C is the number of collectives an APTS configuration issued in its whole
run (``comm_calls_total`` at its last epoch, mean over seeds; one budget per APTS
configuration, e.g. per N). A method's accuracy *within* a budget is, per seed, the
validation accuracy at the last epoch whose cumulative collectives are ≤ the budget,
averaged over the seeds that have such an epoch ("–" when even epoch 1 costs more).
Methods are the configurations drawn in the plots: an lr sweep by its best lr (highest
mean final accuracy); single-process runs (no collectives) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apts.report.formatting import (
    file_slug,
    format_count,
    format_mean_std,
    format_range,
    markdown_table,
)
from apts.report.groups import Group

Panels = dict[tuple[str, str], list[Group]]
EQUAL_COMM_INTRO = (
    "APTS synchronises rarely; so do Local SGD/Adam and DiLoCo. The fair question is what "
    "each method reaches with the same number of collectives. *C* is the number of "
    "collectives an APTS configuration issued in its whole run (mean over seeds). For every"
    " configuration: the last epoch whose cumulative collectives are ≤ the budget, its "
    "collectives and the validation accuracy there (mean ± std over the seeds that have "
    "such an epoch; – when even epoch 1 costs more). An lr sweep is shown by its best lr "
    "(highest mean final accuracy); single-process runs, which issue no collectives, are "
    "left out. The figure: mean over seeds, min–max band, log x."
)
TIE = 0.005  # accuracies (%) closer than this print the same with two decimals


@dataclass
class AtBudget:
    """A configuration's accuracy within a budget: mean ± std over the seeds with an
    epoch within it (``seeds`` of ``of``), that epoch and its collectives (means)."""

    group: Group
    seeds: int
    of: int
    acc: float = float("nan")
    std: float | None = None
    epoch: float = float("nan")
    comm: float = float("nan")

    @property
    def reached(self) -> bool:
        """Some seed has an epoch within the budget."""
        return self.seeds > 0


def budget_of(g: Group) -> float:
    """Collectives of the configuration's whole run: the mean over seeds of the last
    epoch's ``comm_calls_total``."""
    return float(np.mean([r.comm_total[-1] for r in g.runs]))


def at_budget(g: Group, budget: float) -> AtBudget:
    """``g``'s accuracy at the last epoch within ``budget`` collectives, per seed, then
    averaged (see the module docstring)."""
    accs, epochs, comms = [], [], []
    for r in g.runs:
        within = np.nonzero(r.comm_total <= budget + 1e-9)[0]
        if len(within):
            i = within[-1]
            accs.append(r.acc[i])
            epochs.append(r.epochs[i])
            comms.append(r.comm_total[i])
    out = AtBudget(g, len(accs), len(g.runs))
    if accs:
        out.acc = float(np.mean(accs))
        out.std = float(np.std(accs, ddof=1)) if len(accs) > 1 else None
        out.epoch, out.comm = float(np.mean(epochs)), float(np.mean(comms))
    return out


def communicating(groups: list[Group]) -> list[Group]:
    """The configurations that issued collectives (single-process runs did not)."""
    return [g for g in groups if budget_of(g) > 0]


def winner_sentence(results: list[AtBudget], budget: float, name: str) -> str:
    """One plain sentence, from the numbers: which configuration has the highest accuracy
    within ``budget`` (called ``name``, e.g. "C") and by how many percentage points it beats
    the best of the other side (APTS against everything else)."""
    at = f"At {name} = {format_count(budget)} collectives,"
    ranked = sorted((x for x in results if x.reached), key=lambda x: -x.acc)
    if not ranked:
        return f"{at} no method has finished an epoch."
    best = ranked[0]
    is_apts = best.group.opt == "apts"
    rivals = [x for x in ranked if (x.group.opt == "apts") != is_apts]
    if not rivals:
        others = "no other method" if is_apts else "no APTS configuration"
        return (
            f"{at} {best.group.label} wins with {best.acc:.2f}% validation accuracy; "
            f"{others} finishes an epoch within the budget."
        )
    rival = rivals[0]
    gap = best.acc - rival.acc
    if gap < TIE:
        return (
            f"{at} {best.group.label} and {rival.group.label} tie at {best.acc:.2f}% "
            "validation accuracy."
        )
    side = "the best other method" if is_apts else "the best APTS configuration"
    return (
        f"{at} {best.group.label} wins with {best.acc:.2f}% validation accuracy, "
        f"{gap:.2f} points above {side}, {rival.group.label} ({rival.acc:.2f}%)."
    )


def _cells(x: AtBudget) -> list[str]:
    if not x.reached:
        return ["–", "–", "–"]
    seeds = "" if x.seeds == x.of else f" ({x.seeds}/{x.of} seeds)"
    epoch = f"{x.epoch:g}" if x.epoch == int(x.epoch) else f"{x.epoch:.1f}"
    return [epoch, format_count(x.comm), format_mean_std(x.acc, x.std) + seeds]


def budget_block(anchors: list[Group], groups: list[Group]) -> list[str]:
    """The table and the two winner sentences for the budget C of the APTS configurations
    ``anchors`` (those whose runs issued the same collectives) and for C/4."""
    c = budget_of(anchors[0])
    full = [at_budget(g, c) for g in groups]
    quarter = [at_budget(g, c / 4) for g in groups]
    header = ["configuration", "epoch (C)", "collectives (C)", "val acc % (C)"]
    header += ["epoch (C/4)", "collectives (C/4)", "val acc % (C/4)"]
    rows = [[x.group.label, *_cells(x), *_cells(y)] for x, y in zip(full, quarter, strict=True)]
    epochs = [format_range([r.epochs_run for r in a.runs]) for a in anchors]
    if len(set(epochs)) == 1:
        whose = f"all {epochs[0]} epochs of " + " and of ".join(a.label for a in anchors)
    else:
        whose = " and ".join(
            f"all {e} epochs of {a.label}" for e, a in zip(epochs, anchors, strict=True)
        )
    lines = [f"**C = {format_count(c)} collectives: {whose}; C/4 = {format_count(c / 4)}.**"]
    lines += ["", *markdown_table(header, rows), ""]
    lines += [winner_sentence(full, c, "C"), "", winner_sentence(quarter, c / 4, "C/4"), ""]
    return lines


def figure_name(panel: tuple[str, str]) -> str:
    """File name of a dataset/model's communication figure."""
    return f"comm_{file_slug(*panel)}.png"


def equal_comm_section(plot_panels: Panels, figures: dict[tuple[str, str], str]) -> list[str]:
    """Per dataset/model: the accuracy-against-communication figure (collectives and bytes)
    and, per APTS configuration, every method's accuracy within APTS's collectives C and
    within C/4, with one sentence each on who wins and by how much."""
    lines = ["## Who wins at equal communication", "", EQUAL_COMM_INTRO, ""]
    for (ds, model), gs in plot_panels.items():
        lines += [f"### {ds} / {model}", ""]
        if (ds, model) in figures:
            name = figures[(ds, model)]
            alt = f"Validation accuracy against collectives and bytes: {ds} / {model}"
            lines += [f"![{alt}]({name})", ""]
        groups = communicating(gs)
        anchors = [g for g in groups if g.opt == "apts"]
        if not anchors:
            lines += ["No APTS run with collectives here: no budget to compare at.", ""]
            continue
        budgets: dict[str, list[Group]] = {}  # one table per budget, with all its anchors
        for anchor in anchors:
            budgets.setdefault(format_count(budget_of(anchor)), []).append(anchor)
        for same in budgets.values():
            lines += budget_block(same, groups)
    return lines
