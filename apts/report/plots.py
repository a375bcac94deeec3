"""The report's figures (matplotlib, Agg canvas: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from apts.report.groups import Group

LINESTYLES = {"apts": "-", "tr": "-.", "adam": "--", "sgd": ":"}


def new_figure(n_rows: int, n_cols: int = 1, width: float = 9.5, row_height: float = 4.6):
    """A figure on an Agg canvas and its axes, row by row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, row_height * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(n_rows, n_cols, i + 1) for i in range(n_rows * n_cols)]
    return fig, axes


def colors(n: int) -> list:
    """``n`` distinct colours (tab10, tab20 beyond ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_val_acc(by_panel: dict[tuple[str, str], list[Group]], targets: dict, path: Path) -> None:
    """Validation accuracy per epoch, one panel per dataset/model: mean line, min–max band."""
    fig, axes = new_figure(len(by_panel))
    for ax, ((ds, model), groups) in zip(axes, by_panel.items(), strict=True):
        for g, color in zip(groups, colors(len(groups)), strict=True):
            x, mean, lo, hi = g.curves("epoch")
            label = legend_label(g)
            style = LINESTYLES.get(g.opt, "-")
            ax.plot(x, mean, style, color=color, lw=1.8, label=label, marker=".", ms=4)
            if len(g.runs) > 1:
                ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
        target_line(ax, targets.get((ds, model)))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"Validation accuracy per epoch: {ds} / {model}")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        legend(ax)
    fig.savefig(path, dpi=120)


def plot_acc_vs_comm(
    by_panel: dict[tuple[str, str], list[Group]], targets: dict, path: Path
) -> list[Group]:
    """Accuracy against cumulative collectives (log x); returns the configurations left out
    because they recorded no collectives."""
    left_out = []
    fig, axes = new_figure(len(by_panel))
    for ax, ((ds, model), groups) in zip(axes, by_panel.items(), strict=True):
        shown = 0
        for g, color in zip(groups, colors(len(groups)), strict=True):
            x, mean, lo, hi = g.curves("comm")
            keep = np.isfinite(x) & (x > 0)
            if not keep.any():
                left_out.append(g)
                continue
            shown += 1
            style = LINESTYLES.get(g.opt, "-")
            label = legend_label(g)
            ax.plot(x[keep], mean[keep], style, color=color, lw=1.8, label=label, marker=".", ms=4)
            if len(g.runs) > 1:
                ax.fill_between(x[keep], lo[keep], hi[keep], color=color, alpha=0.18, lw=0)
        if shown:
            ax.set_xscale("log")
            plain_log_ticks(ax)
            target_line(ax, targets.get((ds, model)))
            legend(ax)
        else:
            no_data(ax, "no collectives recorded (single-process runs)")
        ax.set_xlabel("cumulative collectives (comm_calls_total, log scale)")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"Validation accuracy vs. communication: {ds} / {model}")
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    return left_out


def no_data(ax, text: str) -> None:
    """A panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def legend_label(g: Group) -> str:
    """The group's label, flagged when incomplete and with its seed count when > 1."""
    label = g.label + (" [incomplete]" if g.incomplete_runs else "")
    return label + (f" [{len(g.runs)} seeds]" if len(g.runs) > 1 else "")


def plain_log_ticks(ax, axis: str = "x") -> None:
    """Log-axis tick labels as plain numbers (36, 1,000), minor ones only on a short range."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    which = ax.xaxis if axis == "x" else ax.yaxis
    which.set_major_formatter(plain)
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    short = lo > 0 and math.log10(hi / lo) < 1.5
    which.set_minor_formatter(plain if short else NullFormatter())


def target_line(ax, target: float | None) -> None:
    """A dotted grey horizontal line at the target accuracy, when there is one."""
    if target is not None and math.isfinite(target):
        ax.axhline(target, color="0.4", lw=1, ls=(0, (2, 3)), label=f"target {target:.2f}%")


def legend(ax) -> None:
    """The legend outside the axes, to the right."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
