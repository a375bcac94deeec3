"""The ablation figures: one study's final validation accuracy against its factor's levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apts.report.plots import new_figure


def plot_ablations(s, path: Path):
    """One study: final validation accuracy against the factor's levels, each level a
    category on the x axis (joined by a line only when every level is a number), mean ±
    sample std over seeds as error bars, each seed a dot, the default level marked. The
    collectives per run get a right panel only when they differ between levels (the title
    gives them otherwise). Returns the figure."""
    from matplotlib.lines import Line2D

    comm = [lv.comm for lv in s.levels]
    finite = [c for c in comm if np.isfinite(c)]
    comm_varies = len({round(c) for c in finite}) > 1
    fig, axes = new_figure(1, 2 if comm_varies else 1, width=13.0 if comm_varies else 9.0)
    ax_acc = axes[0]
    pos = np.arange(len(s.levels))
    means = [np.mean(lv.finals) if lv.done else np.nan for lv in s.levels]
    stds = [lv.std or 0.0 for lv in s.levels]
    numeric = s.numeric_levels
    ax_acc.errorbar(pos, means, yerr=stds, fmt="o-" if numeric else "o", color="C0", capsize=5,
                    lw=1.5, ms=7, zorder=3)  # fmt: skip
    for p, lv in zip(pos, s.levels, strict=True):
        ax_acc.plot([p] * len(lv.finals), lv.finals, ".", color="0.45", ms=6, zorder=2)
    default = s.default_index
    ticks = [s.tick_label(lv) + ("\n(default)" if i == default else "") for i, lv in
             enumerate(s.levels)]  # fmt: skip
    if default is not None:
        for ax in axes:
            ax.axvspan(default - 0.4, default + 0.4, color="gold", alpha=0.25, lw=0, zorder=0)
    seeds = sorted({len(lv.done) for lv in s.levels if lv.done})
    n_seeds = "/".join(map(str, seeds)) or "0"
    handles = [
        Line2D([], [], color="C0", marker="o", ls="-" if numeric else "none"),
        Line2D([], [], color="0.45", marker=".", ls="none", ms=8),
    ]
    labels = [
        f"mean ± sample std over {n_seeds} seed{'s' * (n_seeds != '1')} (error bar)",
        "each seed's final accuracy",
    ]
    if default is not None:
        handles.append(Line2D([], [], color="gold", alpha=0.5, lw=10))
        labels.append("default (APTS's configs)")
    ax_acc.legend(handles, labels, fontsize=8, loc="best")
    ax_acc.set_ylabel("final validation accuracy (%)")
    title = s.title
    if not comm_varies and finite:
        title += f"\ncollectives: {finite[0]:,.0f} per run at every level"
    ax_acc.set_title(title, fontsize=10)
    if comm_varies:
        ax_comm = axes[1]
        ax_comm.plot(pos, comm, "s-" if numeric else "s", color="C1", lw=1.5)
        ax_comm.set_ylim(bottom=0)
        ax_comm.set_ylabel("collectives per run (mean over seeds)")
        ax_comm.set_title("collectives per run", fontsize=10)
    for ax in axes:
        ax.set_xticks(pos, ticks)
        ax.set_xlim(-0.6, len(s.levels) - 0.4)
        ax.set_xlabel(s.axis_label + ("" if numeric else " (categories)"))
        ax.grid(True, axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)
    return fig
