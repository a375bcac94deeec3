"""The report's figures (matplotlib, Agg canvas: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from apts.report.groups import Group, best_per_method

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


# The headline figures: a colour per method family, a line style per variant.
FAMILIES = {
    "apts": "APTS / TR",
    "tr": "APTS / TR",
    "adam": "Adam",
    "local_adam": "Adam",
    "sgd": "SGD",
    "local_sgd": "SGD",
    "diloco": "DiLoCo",
    "prodigy": "Prodigy",
    "schedulefree_adamw": "Schedule-free AdamW",
}
# optimizers that step locally and average every H steps (besides local_*)
PERIODIC = ("diloco",)
FAMILY_COLORS = {"APTS / TR": "tab:blue", "Adam": "tab:orange", "SGD": "tab:green"}
SPARE_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
LARGE_BATCH = 1000  # |B| at or above: the large mini-batch regime of APTS and the paper
VARIANT_STYLES = {
    f"DDP, |B| ≥ {LARGE_BATCH}": "-",
    f"DDP, |B| < {LARGE_BATCH}": (0, (5, 2)),
    "local steps, averaged every H": (0, (1, 1.5)),
    "global trust region only": (0, (6, 2, 1, 2)),
}


def family(g: Group) -> str:
    """The method family a colour stands for (the optimizer's own name when unknown)."""
    return FAMILIES.get(g.opt, g.opt)


def variant(g: Group) -> str:
    """How a method runs, which its line style stands for: TR alone, local steps with
    periodic averaging, or data-parallel at a large or a small mini-batch."""
    if g.opt == "tr":
        return "global trust region only"
    if g.opt.startswith("local_") or g.opt in PERIODIC:
        return "local steps, averaged every H"
    large = isinstance(g.batch_size, (int, float)) and g.batch_size >= LARGE_BATCH
    return f"DDP, |B| {'≥' if large else '<'} {LARGE_BATCH}"


def family_colors(groups: list[Group]) -> dict[str, str]:
    """A fixed colour per known family, spare ones for the rest (in name order)."""
    out = dict(FAMILY_COLORS)
    extra = sorted({family(g) for g in groups} - set(out))
    out.update(zip(extra, SPARE_COLORS * (1 + len(extra) // len(SPARE_COLORS)), strict=False))
    return out


def method_label(g: Group, of: int) -> str:
    """The chosen configuration's label, how many it was chosen from, its final test
    accuracy when the runs log one."""
    label = legend_label(g) + (f" — best of {of}" if of > 1 else "")
    return label + (f"; test {g.final_test:.2f}%" if g.final_test is not None else "")


def draw_methods(ax, best: list[tuple[Group, int]], x: str, y: str, colors: dict) -> int:
    """One line per method (mean over seeds, min–max band); returns how many were drawn."""
    drawn = 0
    for g, of in best:
        # "acc": the accuracy choices are made on (validation; test for runs without a split)
        xs, mean, lo, hi = g.curves(x, f"{g.chosen_on}_acc" if y == "acc" else y)
        keep = np.isfinite(xs) & np.isfinite(mean)
        if not keep.any():
            continue
        color, style = colors[family(g)], VARIANT_STYLES[variant(g)]
        ax.plot(xs[keep], mean[keep], ls=style, color=color, lw=2, label=method_label(g, of))
        if len(g.runs) > 1:
            ax.fill_between(xs[keep], lo[keep], hi[keep], color=color, alpha=0.15, lw=0)
        drawn += 1
    return drawn


def accuracy_floor(best: list[tuple[Group, int]]) -> float | None:
    """The lower end of an accuracy axis that shows where the methods end up: 5 points
    below the lowest final mean (early epochs below it are cut, and the axis says so)."""
    finals = [g.final_mean for g, _ in best if np.isfinite(g.final_mean)]
    return max(0.0, min(finals) - 5.0) if finals else None


def _accuracy_axis(ax, floor: float | None, ylabel: str) -> None:
    top = ax.get_ylim()[1]
    if floor is not None and floor < top:
        ax.set_ylim(floor, top)
        ylabel += f" (axis from {floor:.0f}%)"
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def style_legend(ax, groups: list[Group], colors: dict) -> None:
    """The methods' legend, then what colours and line styles stand for."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    fams = sorted({family(g) for g in groups}, key=list(colors).index)
    variants = [v for v in VARIANT_STYLES if v in {variant(g) for g in groups}]
    handles += [Line2D([], [], color="none")]
    labels += ["colour: method family; line: variant"]
    handles += [Line2D([], [], color=colors[f], lw=6) for f in fams]
    labels += fams
    handles += [Line2D([], [], color="0.2", lw=2, ls=VARIANT_STYLES[v]) for v in variants]
    labels += variants
    ax.legend(
        handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False
    )


def plot_val_acc(by_panel: dict[tuple[str, str], list[Group]], targets: dict, path: Path):
    """The headline: validation accuracy per epoch, one line per method (its best
    configuration on validation), a colour per family, a style per variant; one panel per
    dataset/model. Returns the figure."""
    fig, axes = new_figure(len(by_panel), width=11.0)
    for ax, ((ds, model), groups) in zip(axes, by_panel.items(), strict=True):
        best = best_per_method(groups)
        colors = family_colors(groups)
        draw_methods(ax, best, "epoch", "acc", colors)
        target_line(ax, targets.get((ds, model)))
        ax.set_xlabel("epoch")
        _accuracy_axis(ax, accuracy_floor(best), "validation accuracy (%)")
        ax.set_title(
            f"Validation accuracy per epoch, best configuration per method: {ds} / {model}"
        )
        ax.xaxis.get_major_locator().set_params(integer=True)
        style_legend(ax, [g for g, _ in best], colors)
    fig.savefig(path, dpi=120)
    return fig


def plot_acc_vs_cost(by_panel: dict[tuple[str, str], list[Group]], path: Path):
    """Validation accuracy against training time (left) and samples seen (right), one
    line per method as in :func:`plot_val_acc`. Returns the figure."""
    fig, axes = new_figure(len(by_panel), 2, width=16.0, row_height=5.0)
    for i, ((ds, model), groups) in enumerate(by_panel.items()):
        best = best_per_method(groups)
        colors = family_colors(groups)
        floor = accuracy_floor(best)
        ax_t, ax_s = axes[2 * i], axes[2 * i + 1]
        for ax, x, xlabel in (
            (ax_t, "wall", "training time (s, cumulative wall_s)"),
            (ax_s, "samples", "training samples seen"),
        ):
            if draw_methods(ax, best, x, "acc", colors):
                _accuracy_axis(ax, floor, "validation accuracy (%)")
            else:
                no_data(ax, f"no run logged {x}")
            ax.set_xlabel(xlabel)
        ax_t.set_title(f"Accuracy vs. training time: {ds} / {model}")
        ax_s.set_title(f"Accuracy vs. samples seen: {ds} / {model}")
        style_legend(ax_s, [g for g, _ in best], colors)
    fig.savefig(path, dpi=120)
    return fig


def plot_loss(by_panel: dict[tuple[str, str], list[Group]], path: Path):
    """Training loss (left) and validation loss (right) per epoch, log y, one line per
    method as in :func:`plot_val_acc`. Returns the figure."""
    fig, axes = new_figure(len(by_panel), 2, width=16.0, row_height=5.0)
    for i, ((ds, model), groups) in enumerate(by_panel.items()):
        best = best_per_method(groups)
        colors = family_colors(groups)
        for ax, y, name in (
            (axes[2 * i], "train_loss", "training loss (mean over the epoch)"),
            (axes[2 * i + 1], "val_loss", "validation loss"),
        ):
            if draw_methods(ax, best, "epoch", y, colors):
                ax.set_yscale("log")
            else:
                no_data(ax, f"no run logged {y}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"{name}, log scale")
            ax.set_title(f"{name.split(' (')[0].capitalize()}: {ds} / {model}")
            ax.grid(True, which="both", alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        style_legend(axes[2 * i + 1], [g for g, _ in best], colors)
    fig.savefig(path, dpi=120)
    return fig


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
    methods = ax_calls.get_legend_handles_labels()
    budget_lines = []
    for c in sorted(set(budgets)):
        # thick translucent black: no configuration line is drawn like it
        for value, ls, name in ((c, "-", "C"), (c / 4, (0, (1, 1)), "C/4")):
            line = ax_calls.axvline(value, color="black", lw=3.5, alpha=0.3, ls=ls)
            budget_lines.append((line, f"{name} = {value:,.0f} collectives"))
    for ax in (ax_calls, ax_bytes):
        plain_log_ticks(ax)
    ax_calls.set_xlabel("cumulative collectives (comm_calls_total, log scale)")
    ax_bytes.set_xlabel("cumulative MB sent in collectives (comm_bytes_total / 10⁶, log scale)")
    ax_calls.set_title(f"Accuracy vs. collectives: {panel[0]} / {panel[1]}")
    ax_bytes.set_title(f"Accuracy vs. data sent: {panel[0]} / {panel[1]}")
    from matplotlib.lines import Line2D

    handles, labels = list(methods[0]), list(methods[1])
    if budget_lines:
        handles.append(Line2D([], [], color="none"))
        labels.append("vertical lines (left): APTS's budgets")
        handles += [h for h, _ in budget_lines]
        labels += [text for _, text in budget_lines]
    ax_bytes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax_bytes.get_legend().set_frame_on(False)
    fig.savefig(path, dpi=120)
    return fig
