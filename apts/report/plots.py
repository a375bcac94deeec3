"""The report's figures (matplotlib, Agg canvas: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from apts.report.groups import Group

# Line style per optimizer (colour tells configurations apart): dash-dot-dot patterns for
# the local methods, so Local Adam is not read as Adam in grey-scale.
LINESTYLES = {
    "apts": "-",
    "tr": "-.",
    "adam": "--",
    "sgd": ":",
    "local_adam": (0, (6, 2, 1, 2, 1, 2)),
    "local_sgd": (0, (3, 1, 1, 1)),
    "diloco": (0, (8, 2, 2, 2)),
    "prodigy": (0, (5, 1)),
    "schedulefree_adamw": (0, (1, 1)),
}


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


def draw_curves(ax, groups: list[Group], x: str) -> list[Group]:
    """Mean accuracy over seeds (line) and min–max band against ``x`` ("epoch", "comm" or
    "bytes", see :meth:`Group.curves`), one colour per group; the points with x <= 0 are
    not drawn (log axes). Returns the groups with no point left."""
    left_out = []
    for g, color in zip(groups, colors(len(groups)), strict=True):
        xs, mean, lo, hi = g.curves(x)
        if x == "bytes":
            xs = xs / 1e6  # MB: readable tick labels
        keep = np.isfinite(xs) & (xs > 0)
        if not keep.any():
            left_out.append(g)
            continue
        style = LINESTYLES.get(g.opt, "-")
        label = legend_label(g)
        ax.plot(xs[keep], mean[keep], ls=style, color=color, lw=1.8, label=label, marker=".", ms=4)
        if len(g.runs) > 1:
            ax.fill_between(xs[keep], lo[keep], hi[keep], color=color, alpha=0.18, lw=0)
    return left_out


def plot_val_acc(by_panel: dict[tuple[str, str], list[Group]], targets: dict, path: Path) -> None:
    """Validation accuracy per epoch, one panel per dataset/model: mean line, min–max band."""
    fig, axes = new_figure(len(by_panel))
    for ax, ((ds, model), groups) in zip(axes, by_panel.items(), strict=True):
        draw_curves(ax, groups, "epoch")
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
        missing = draw_curves(ax, groups, "comm")
        left_out += missing
        if len(missing) < len(groups):
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
    """The group's label, flagged when incomplete, with its seed count when > 1 and the
    number of its runs left out because they did not complete."""
    label = g.label + (" [incomplete]" if g.incomplete_runs else "")
    label += f" [{len(g.runs)} seeds]" if len(g.runs) > 1 else ""
    return label + (f" [{len(g.excluded)} left out]" if g.excluded else "")


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


def _comm_panel(ax, groups: list[Group], x: str) -> None:
    draw_curves(ax, groups, x)
    ax.set_xscale("log")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)


def plot_comm_matched(
    panel: tuple[str, str], groups: list[Group], budgets: list[float], path: Path
) -> None:
    """One dataset/model: validation accuracy against cumulative collectives (left) and
    cumulative MB sent (right), both log x, mean over seeds with a min–max band; dotted
    vertical lines at the APTS budgets C and C/4 on the left."""
    fig, (ax_calls, ax_bytes) = new_figure(1, 2, width=15.0, row_height=5.0)
    _comm_panel(ax_calls, groups, "comm")
    _comm_panel(ax_bytes, groups, "bytes")
    for c in sorted(set(budgets)):
        ax_calls.axvline(c, color="0.3", lw=1, ls=(0, (4, 2)), label=f"APTS budget C = {c:,.0f}")
        ax_calls.axvline(c / 4, color="0.55", lw=1, ls=(0, (1, 2)), label=f"C/4 = {c / 4:,.0f}")
    for ax in (ax_calls, ax_bytes):
        plain_log_ticks(ax)
    ax_calls.set_xlabel("cumulative collectives (comm_calls_total, log scale)")
    ax_bytes.set_xlabel("cumulative MB sent in collectives (comm_bytes_total / 10⁶, log scale)")
    ax_calls.set_title(f"Accuracy vs. collectives: {panel[0]} / {panel[1]}")
    ax_bytes.set_title(f"Accuracy vs. data sent: {panel[0]} / {panel[1]}")
    handles, labels = ax_calls.get_legend_handles_labels()
    ax_bytes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax_bytes.get_legend().set_frame_on(False)
    fig.savefig(path, dpi=120)


def plot_ablations(studies: list, path: Path) -> None:
    """One row per study: final accuracy (mean ± std error bars, each seed a dot) against
    the factor value on a categorical axis (left), total collectives per run (right)."""
    fig, axes = new_figure(len(studies), 2, width=12.0, row_height=4.2)
    for i, s in enumerate(studies):
        ax_acc, ax_comm = axes[2 * i], axes[2 * i + 1]
        pos = np.arange(len(s.levels))
        means = [np.mean(lv.finals) if lv.done else np.nan for lv in s.levels]
        stds = [lv.std or 0.0 for lv in s.levels]
        ax_acc.errorbar(pos, means, yerr=stds, fmt="o-", color="C0", capsize=4, lw=1.5)
        for p, lv in zip(pos, s.levels, strict=True):
            ax_acc.plot([p] * len(lv.finals), lv.finals, ".", color="0.45", ms=5)
        ax_comm.plot(pos, [lv.comm for lv in s.levels], "s-", color="C1", lw=1.5)
        ax_comm.set_ylim(bottom=0)
        for ax, ylabel in ((ax_acc, "final validation accuracy (%)"), (ax_comm, "collectives")):
            ax.set_xticks(pos, [s.tick_label(lv) for lv in s.levels])
            ax.set_xlabel(s.axis_label)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
        ax_acc.set_title(s.title, fontsize=10)
        ax_comm.set_title("total collectives per run (mean over seeds)", fontsize=10)
    fig.savefig(path, dpi=120)
