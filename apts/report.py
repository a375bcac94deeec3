"""apts-report: tables and plots from finished (or interrupted) run directories.

Usage::

    apts-report RUN_DIR... [--out DIR] [--target ACC] [--title T]

Every directory under the given paths that holds a ``config.yaml`` or a
``metrics.jsonl`` is a run (``.hydra/`` folders and other hidden folders are not
searched), so single runs, Hydra multirun sweeps and trees of sweeps can be mixed.
The report reads only what the runner wrote (``config.yaml``, ``metrics.jsonl``,
``summary.json``) and writes ``report.md``, ``val_acc.png`` and ``acc_vs_comm.png``
into ``--out`` (default ``outputs/report``).

Definitions used in the report:

- *configuration*: runs whose configs agree on every key except ``seed`` and the
  keys that do not change the training (device, progress, checkpoint, out_dir,
  eval_batch_size, dataset.data_dir, dataset.download, launcher.*). The seeds of a
  configuration form one group. The label shows the optimizer, N (``subdomains``,
  not for SGD/Adam), the learning rate (SGD/Adam) and |B|, plus any other key that
  is needed to tell two configurations apart.
- *final accuracy*: the last logged epoch's ``val_acc`` of each seed; mean and
  sample standard deviation over seeds ("–" for one seed).
- *target accuracy*: ``--target``, or per dataset/model 0.99 x the lowest of the
  per-optimizer best mean final accuracies, a level that every optimizer reaches
  with its best configuration.
- *epochs to target*: per seed the first epoch whose ``val_acc`` is at least the
  target; the mean over the seeds that reached it ("(k/n seeds)" when not all did,
  "not reached" when none did). *Collectives to target*: ``comm_calls_total`` at
  that epoch, averaged the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"

PROG = "apts-report"

# Config keys that do not change what is trained (where and how it runs, what is saved).
IGNORED_KEYS = {
    "seed",
    "device",
    "progress",
    "checkpoint",
    "out_dir",
    "eval_batch_size",
    "dataset.data_dir",
    "dataset.download",
}
IGNORED_PREFIXES = ("launcher.", "hydra.")

KEY_ALIASES = {"subdomains": "N", "batch_size": "|B|"}
OPT_NAMES = {"apts": "APTS", "tr": "TR", "adam": "Adam", "sgd": "SGD"}
OPT_ORDER = {"apts": 0, "tr": 1, "adam": 2, "sgd": 3}
LR_OPTIMIZERS = ("sgd", "adam")
LINESTYLES = {"apts": "-", "tr": "-.", "adam": "--", "sgd": ":"}

# Published validation accuracies (%), the authors' results: 100 epochs, |B| = 10000,
# 5% overlap. Keys: normalised dataset name -> [(optimizer, N or None, accuracy)].
PAPER_SETTING = "100 epochs, |B|=10000, 5% overlap"
PAPER = {
    "mnist": [
        ("adam", None, 98.03),
        ("apts", 2, 98.24),
        ("apts", 4, 97.33),
        ("apts", 6, 95.98),
    ],
    "cifar10": [
        ("adam", None, 53.88),
        ("apts", 2, 54.11),
        ("apts", 4, 53.70),
        ("apts", 6, 52.32),
    ],
}
PAPER_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}
AUTO_TARGET_FACTOR = 0.99


class NoRuns(Exception):
    """Nothing to report; the message is the one-line error."""


# --------------------------------------------------------------------------- loading


@dataclass
class Run:
    path: Path
    display: str
    cfg: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def flat(self) -> dict[str, Any]:
        return _flatten(self.cfg)

    @property
    def seed(self) -> Any:
        return self.cfg.get("seed", "?")

    @property
    def planned_epochs(self) -> int | None:
        e = self.cfg.get("epochs")
        return int(e) if isinstance(e, (int, float)) and not isinstance(e, bool) else None

    @property
    def epochs(self) -> np.ndarray:
        return np.array([r["epoch"] for r in self.records], dtype=float)

    @property
    def acc(self) -> np.ndarray:
        return np.array([r["val_acc"] for r in self.records], dtype=float)

    @property
    def comm_total(self) -> np.ndarray:
        return np.array([r["_comm_total"] for r in self.records], dtype=float)

    @property
    def epochs_run(self) -> int:
        return int(self.records[-1]["epoch"])

    @property
    def final_acc(self) -> float:
        return float(self.records[-1]["val_acc"])

    @property
    def wall_s(self) -> float:
        return float(sum(_num(r.get("wall_s")) or 0.0 for r in self.records))

    @property
    def completed(self) -> bool:
        return self.summary is not None and self.summary.get("status") == "completed"

    @property
    def incomplete(self) -> bool:
        planned = self.planned_epochs
        return not self.completed or (planned is not None and self.epochs_run < planned)

    @property
    def status(self) -> str:
        if not self.incomplete:
            return "complete"
        planned = self.planned_epochs
        frac = f"{self.epochs_run}/{planned if planned is not None else '?'} epochs"
        if self.summary is None:
            if planned is not None and self.epochs_run >= planned:
                frac += ", no summary.json"
        elif not self.completed:
            frac += f", status {self.summary.get('status')!r}"
        return f"incomplete ({frac})"


@dataclass
class Skipped:
    display: str
    reason: str


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = _hashable(d)
    return out


def _hashable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _hashable(x)) for k, x in v.items()))
    return v


def find_run_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) with a config.yaml or metrics.jsonl."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if CONFIG in filenames or METRICS in filenames:
            found.append(Path(dirpath))
    return found


def _load_config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(cfg, dict):
        raise ValueError("not a mapping")
    return cfg


def load_run(path: Path, display: str) -> Run | Skipped:
    if not (path / CONFIG).is_file():
        return Skipped(display, f"no {CONFIG}")
    try:
        cfg = _load_config(path / CONFIG)
    except Exception as e:  # noqa: BLE001 - any unreadable config is a skipped run
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Skipped(display, f"unreadable {CONFIG}: {msg}")
    metrics = path / METRICS
    if not metrics.is_file():
        return Skipped(display, f"{METRICS} missing")
    notes: list[str] = []
    by_epoch: dict[int, dict[str, Any]] = {}
    bad_lines = []
    try:
        lines = metrics.read_text(errors="replace").splitlines()
    except OSError as e:
        return Skipped(display, f"{METRICS} unreadable: {e.strerror or e}")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad_lines.append(i)
            continue
        if not isinstance(rec, dict) or _num(rec.get("epoch")) is None:
            bad_lines.append(i)
            continue
        acc = _num(rec.get("val_acc"))
        if acc is None or not math.isfinite(acc):
            bad_lines.append(i)
            continue
        ep = int(rec["epoch"])
        if ep in by_epoch:
            notes.append(f"epoch {ep} logged twice in {METRICS}; kept the later line")
        by_epoch[ep] = rec
    if bad_lines:
        where = ", ".join(str(i) for i in bad_lines[:5]) + (" ..." if len(bad_lines) > 5 else "")
        notes.append(
            f"skipped {len(bad_lines)} malformed line(s) of {METRICS} (line {where})"
            if len(bad_lines) > 1
            else f"skipped a malformed line of {METRICS} (line {where})"
        )
    if not by_epoch:
        reason = f"{METRICS} empty" if not bad_lines else f"{METRICS} has no valid line"
        return Skipped(display, reason)
    records = [by_epoch[e] for e in sorted(by_epoch)]
    running = 0.0
    for r in records:
        total = _num(r.get("comm_calls_total"))
        running += _num(r.get("comm_calls")) or 0.0
        r["_comm_total"] = total if total is not None else running
    summary = None
    if (path / SUMMARY).is_file():
        try:
            summary = json.loads((path / SUMMARY).read_text())
            if not isinstance(summary, dict):
                raise ValueError
        except (ValueError, OSError):
            summary = None
            notes.append(f"{SUMMARY} unreadable; treated as missing")
    return Run(path, display, cfg, records, summary, notes)


def load_runs(paths: list[Path]) -> tuple[list[Run], list[Skipped], list[str]]:
    runs: list[Run] = []
    skipped: list[Skipped] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for root in paths:
        if not root.exists():
            problems.append(f"{root}: no such directory")
            continue
        if not root.is_dir():
            problems.append(f"{root}: not a directory")
            continue
        base = root.resolve().parent
        for d in find_run_dirs(root):
            real = d.resolve()
            if real in seen:
                continue
            seen.add(real)
            display = os.path.relpath(real, base)
            item = load_run(d, display)
            (runs if isinstance(item, Run) else skipped).append(item)
    return runs, skipped, problems


# --------------------------------------------------------------------------- grouping


def _config_key(run: Run) -> tuple:
    items = [
        (k, v)
        for k, v in run.flat.items()
        if k not in IGNORED_KEYS and not k.startswith(IGNORED_PREFIXES)
    ]
    return tuple(sorted(items, key=lambda kv: kv[0]))


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


@dataclass
class Group:
    key: tuple
    runs: list[Run]
    extras: list[str] = field(default_factory=list)  # extra label parts ("local_memory=reset")

    @property
    def cfg(self) -> dict[str, Any]:
        return dict(self.key)

    @property
    def dataset(self) -> str:
        return str(self.cfg.get("dataset.name", "?"))

    @property
    def model(self) -> str:
        return str(self.cfg.get("model.name", "?"))

    @property
    def panel(self) -> tuple[str, str]:
        return (self.dataset, self.model)

    @property
    def opt(self) -> str:
        return str(self.cfg.get("optimizer.name", "?"))

    @property
    def n(self) -> Any:
        return self.cfg.get("subdomains", "?")

    @property
    def batch_size(self) -> Any:
        return self.cfg.get("batch_size", "?")

    @property
    def lr(self) -> Any:
        return self.cfg.get("optimizer.lr") if self.opt in LR_OPTIMIZERS else None

    @property
    def sweep_key(self) -> tuple:
        return tuple(kv for kv in self.key if kv[0] != "optimizer.lr")

    def shown_keys(self) -> set[str]:
        shown = {"dataset.name", "model.name", "optimizer.name", "batch_size"}
        if self.opt in LR_OPTIMIZERS:
            shown.add("optimizer.lr")
        else:
            shown.add("subdomains")
        return shown

    def label_parts(self, with_lr: bool = True) -> list[str]:
        parts = [OPT_NAMES.get(self.opt, self.opt)]
        if self.opt not in LR_OPTIMIZERS:
            parts.append(f"N={self.n}")
        parts += self.extras
        if with_lr and self.lr is not None:
            parts.append(f"lr={_fmt_value(self.lr)}")
        parts.append(f"(|B|={self.batch_size})")
        return parts

    @property
    def label(self) -> str:
        return " ".join(self.label_parts())

    @property
    def sweep_label(self) -> str:
        return " ".join(self.label_parts(with_lr=False))

    @property
    def sort_key(self) -> tuple:
        def num(v):
            x = _num(v)
            return (0, x, "") if x is not None else (1, 0.0, str(v))

        return (
            OPT_ORDER.get(self.opt, 9),
            self.opt,
            num(self.n),
            num(self.batch_size),
            tuple(self.extras),
            num(self.lr),
        )

    # statistics over seeds --------------------------------------------------------
    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    @property
    def finals(self) -> np.ndarray:
        return np.array([r.final_acc for r in self.runs], dtype=float)

    @property
    def final_mean(self) -> float:
        return float(np.mean(self.finals))

    @property
    def final_std(self) -> float | None:
        return float(np.std(self.finals, ddof=1)) if len(self.runs) > 1 else None

    @property
    def incomplete_runs(self) -> list[Run]:
        return [r for r in self.runs if r.incomplete]

    @property
    def total_epochs(self) -> int:
        return sum(r.epochs_run for r in self.runs)

    def curves(self, x: str = "epoch") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, mean acc, min acc, max acc) per epoch over the seeds that logged that epoch.

        ``x="comm"`` gives the mean cumulative collectives at each epoch instead of the epoch.
        """
        epochs = sorted({int(e) for r in self.runs for e in r.epochs})
        acc = np.full((len(self.runs), len(epochs)), np.nan)
        comm = np.full_like(acc, np.nan)
        col = {e: j for j, e in enumerate(epochs)}
        for i, r in enumerate(self.runs):
            for e, a, c in zip(r.epochs, r.acc, r.comm_total, strict=True):
                acc[i, col[int(e)]] = a
                comm[i, col[int(e)]] = c
        xs = np.array(epochs, dtype=float) if x == "epoch" else np.nanmean(comm, axis=0)
        return xs, np.nanmean(acc, axis=0), np.nanmin(acc, axis=0), np.nanmax(acc, axis=0)

    def to_target(self, target: float) -> tuple[list[int], list[float]]:
        """Per seed that reached ``target``: first epoch with val_acc >= target, comm then."""
        epochs, comms = [], []
        for r in self.runs:
            for rec in r.records:
                if rec["val_acc"] >= target:
                    epochs.append(int(rec["epoch"]))
                    comms.append(float(rec["_comm_total"]))
                    break
        return epochs, comms


def group_runs(runs: list[Run]) -> list[Group]:
    by_key: dict[tuple, list[Run]] = {}
    for r in runs:
        by_key.setdefault(_config_key(r), []).append(r)
    groups = [
        Group(k, sorted(v, key=lambda r: (str(r.seed), r.display))) for k, v in by_key.items()
    ]
    _disambiguate(groups)
    return sorted(groups, key=lambda g: (g.panel, g.sort_key, g.label))


def _disambiguate(groups: list[Group]) -> None:
    """Add the config keys that differ to the labels of groups that would look the same."""
    by_label: dict[tuple, list[Group]] = {}
    for g in groups:
        by_label.setdefault((g.panel, g.label), []).append(g)
    for same in by_label.values():
        if len(same) < 2:
            continue
        cfgs = [g.cfg for g in same]
        keys = sorted({k for c in cfgs for k in c} - same[0].shown_keys())
        differing = [k for k in keys if len({_fmt_value(c.get(k)) for c in cfgs}) > 1]
        for g in same:
            g.extras = [
                f"{KEY_ALIASES.get(k, k.split('.')[-1])}={_fmt_value(g.cfg.get(k, '–'))}"
                for k in differing
            ]


def sweeps(groups: list[Group]) -> list[list[Group]]:
    """SGD/Adam configurations that differ only in the learning rate, best first."""
    by_key: dict[tuple, list[Group]] = {}
    for g in groups:
        if g.opt in LR_OPTIMIZERS:
            by_key.setdefault(g.sweep_key, []).append(g)
    out = [sorted(v, key=lambda g: -_nan_low(g.final_mean)) for v in by_key.values()]
    return sorted(out, key=lambda s: (s[0].panel, s[0].sort_key))


def _nan_low(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def plotted_groups(groups: list[Group]) -> list[Group]:
    """All configurations, except that an SGD/Adam lr sweep shows only its best lr."""
    hidden = {id(g) for s in sweeps(groups) for g in s[1:]}
    return [g for g in groups if id(g) not in hidden]


def panels(groups: list[Group]) -> dict[tuple[str, str], list[Group]]:
    out: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        out.setdefault(g.panel, []).append(g)
    return out


def auto_target(groups: list[Group]) -> tuple[float, str]:
    """0.99 x the lowest of the per-optimizer best mean final accuracies."""
    best: dict[str, Group] = {}
    for g in groups:
        if math.isnan(g.final_mean):
            continue
        if g.opt not in best or g.final_mean > best[g.opt].final_mean:
            best[g.opt] = g
    if not best:
        return math.nan, "no finite final accuracy"
    low = min(best.values(), key=lambda g: g.final_mean)
    listing = ", ".join(
        f"{b.label}: {b.final_mean:.2f}%"
        for o, b in sorted(best.items(), key=lambda kv: OPT_ORDER.get(kv[0], 9))
    )
    how = (
        f"{AUTO_TARGET_FACTOR:g} × {low.final_mean:.2f}%, the lowest of the best mean final "
        f"accuracies per optimizer ({listing})"
    )
    return AUTO_TARGET_FACTOR * low.final_mean, how


# --------------------------------------------------------------------------- formatting


def _f_num(x: float, digits: int = 1) -> str:
    s = f"{round(x, digits):.{digits}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def _f_int(x: float) -> str:
    return f"{x:,.0f}"


def _f_time(s: float) -> str:
    if s >= 7200:
        return f"{s / 3600:.1f} h"
    if s >= 600:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def _f_acc(mean: float, std: float | None) -> str:
    return f"{mean:.2f} ± " + ("–" if std is None else f"{std:.2f}")


def _f_range(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _f_seeds(seeds: list[Any], unique: bool = False) -> str:
    vals = set(seeds) if unique else seeds
    return ", ".join(
        str(s) for s in sorted(vals, key=lambda v: (_num(v) is None, _num(v) or 0.0, str(v)))
    )


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def _f_target(values: list[float], n: int, fmt) -> str:
    if not values:
        return "not reached"
    s = fmt(float(np.mean(values)))
    return s if len(values) == n else f"{s} ({len(values)}/{n} seeds)"


def _status(g: Group) -> str:
    bad = g.incomplete_runs
    if not bad:
        return "complete"
    if len(g.runs) == 1:
        return bad[0].status
    return "; ".join(f"seed {r.seed}: {r.status}" for r in bad)


def _norm_dataset(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# --------------------------------------------------------------------------- plots


def _figure(n_panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 4.6 * n_panels), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(n_panels, 1, i + 1) for i in range(n_panels)]
    return fig, axes


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_val_acc(by_panel: dict[tuple[str, str], list[Group]], targets: dict, path: Path) -> None:
    fig, axes = _figure(len(by_panel))
    for ax, ((ds, model), groups) in zip(axes, by_panel.items(), strict=True):
        for g, color in zip(groups, _colors(len(groups)), strict=True):
            x, mean, lo, hi = g.curves("epoch")
            label = _legend_label(g)
            style = LINESTYLES.get(g.opt, "-")
            ax.plot(x, mean, style, color=color, lw=1.8, label=label, marker=".", ms=4)
            if len(g.runs) > 1:
                ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
        _target_line(ax, targets.get((ds, model)))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"Validation accuracy per epoch: {ds} / {model}")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _legend(ax)
    fig.savefig(path, dpi=120)


def plot_acc_vs_comm(
    by_panel: dict[tuple[str, str], list[Group]], targets: dict, path: Path
) -> list[Group]:
    """Plot; returns the configurations left out because they recorded no collectives."""
    left_out = []
    fig, axes = _figure(len(by_panel))
    for ax, ((ds, model), groups) in zip(axes, by_panel.items(), strict=True):
        shown = 0
        for g, color in zip(groups, _colors(len(groups)), strict=True):
            x, mean, lo, hi = g.curves("comm")
            keep = np.isfinite(x) & (x > 0)
            if not keep.any():
                left_out.append(g)
                continue
            shown += 1
            style = LINESTYLES.get(g.opt, "-")
            label = _legend_label(g)
            ax.plot(x[keep], mean[keep], style, color=color, lw=1.8, label=label, marker=".", ms=4)
            if len(g.runs) > 1:
                ax.fill_between(x[keep], lo[keep], hi[keep], color=color, alpha=0.18, lw=0)
        if shown:
            ax.set_xscale("log")
            _plain_log_ticks(ax)
            _target_line(ax, targets.get((ds, model)))
            _legend(ax)
        else:
            ax.text(
                0.5,
                0.5,
                "no collectives recorded (single-process runs)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_xlabel("cumulative collectives (comm_calls_total, log scale)")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"Validation accuracy vs. communication: {ds} / {model}")
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    return left_out


def _legend_label(g: Group) -> str:
    label = g.label + (" [incomplete]" if g.incomplete_runs else "")
    return label + (f" [{len(g.runs)} seeds]" if len(g.runs) > 1 else "")


def _plain_log_ticks(ax) -> None:
    """Log-axis tick labels as plain numbers (36, 1,000), minor ones only on a short range."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    lo, hi = ax.get_xlim()
    short = lo > 0 and math.log10(hi / lo) < 1.5
    ax.xaxis.set_minor_formatter(plain if short else NullFormatter())


def _target_line(ax, target: float | None) -> None:
    if target is not None and math.isfinite(target):
        ax.axhline(target, color="0.4", lw=1, ls=(0, (2, 3)), label=f"target {target:.2f}%")


def _legend(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


# --------------------------------------------------------------------------- report


def build_report(
    runs: list[Run],
    skipped: list[Skipped],
    out: Path,
    target: float | None = None,
    title: str = "APTS experiment report",
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    by_panel = panels(groups)
    targets: dict[tuple[str, str], float] = {}
    target_notes: list[str] = []
    for p, gs in by_panel.items():
        if target is not None:
            targets[p] = target
        else:
            targets[p], how = auto_target(gs)
            target_notes.append(f"- **{p[0]} / {p[1]}**: target {targets[p]:.2f}% = {how}.")
    plot_panels = {p: plotted_groups(gs) for p, gs in by_panel.items()}
    plot_val_acc(plot_panels, targets, out / "val_acc.png")
    no_comm = plot_acc_vs_comm(plot_panels, targets, out / "acc_vs_comm.png")

    L: list[str] = [f"# {title}", ""]
    L += _what_was_run(runs, skipped, groups)
    L.append("")

    # final accuracy ------------------------------------------------------------------
    L += ["## Final validation accuracy", ""]
    L.append(
        "Mean ± sample standard deviation over seeds of the last logged epoch's validation "
        "accuracy. *Epochs to target*: per seed the first epoch with validation accuracy ≥ the "
        "target, averaged over the seeds that reached it; *collectives to target*: the "
        "cumulative collectives (`comm_calls_total`) at that epoch, averaged the same way. "
        "*Total collectives* and *wall time* (sum of the per-epoch training time `wall_s`) "
        "are per run, averaged over seeds."
    )
    L.append("")
    for (ds, model), gs in by_panel.items():
        t = targets[(ds, model)]
        ts = f"{t:.2f}%" if math.isfinite(t) else "target"
        L += [f"### {ds} / {model} (" + (f"target {ts})" if math.isfinite(t) else "no target)"), ""]
        rows = []
        for g in gs:
            ep, comm = g.to_target(t) if math.isfinite(t) else ([], [])
            rows.append(
                [
                    g.label,
                    f"{len(g.runs)} ({_f_seeds(g.seeds)})",
                    _f_range([r.epochs_run for r in g.runs]),
                    _f_acc(g.final_mean, g.final_std),
                    _f_target(ep, len(g.runs), _f_num),
                    _f_target(comm, len(g.runs), _f_int),
                    _f_int(float(np.mean([r.comm_total[-1] for r in g.runs]))),
                    _f_time(float(np.mean([r.wall_s for r in g.runs]))),
                    _status(g),
                ]
            )
        L += _md_table(
            [
                "configuration",
                "seeds",
                "epochs",
                "final val acc (%)",
                f"epochs to {ts}",
                f"collectives to {ts}",
                "total collectives",
                "wall time / run",
                "status",
            ],
            rows,
        )
        L.append("")

    # plots -------------------------------------------------------------------------------
    hidden = [g for s in sweeps(groups) for g in s[1:]]
    L += ["## Plots", ""]
    caption = "Line: mean over seeds; band: min–max over seeds; dotted grey line: target accuracy."
    if hidden:
        caption += (
            " SGD/Adam learning-rate sweeps are shown by their best learning rate only (highest "
            "mean final accuracy); the whole grid is in the tables above and below."
        )
    L += ["![Validation accuracy per epoch](val_acc.png)", "", caption, ""]
    L += ["![Validation accuracy against cumulative collectives](acc_vs_comm.png)", ""]
    comm_caption = "Validation accuracy against the cumulative number of collectives, log scale."
    if no_comm:
        comm_caption += (
            " Not shown, because they recorded no collectives (single process, N=1): "
            + ", ".join(f"{g.label} ({g.dataset})" for g in no_comm)
            + "."
        )
    L += [comm_caption, ""]

    # paper --------------------------------------------------------------------------------
    L += _paper_section(by_panel, groups)

    # tuning cost ----------------------------------------------------------------------------
    L += _tuning_section(by_panel, groups)

    # runs -----------------------------------------------------------------------------------
    L += ["## Runs", ""]
    rows = []
    for g in groups:
        for r in g.runs:
            rows.append(
                [
                    r.display,
                    f"{g.dataset} / {g.model}",
                    g.label,
                    r.seed,
                    r.epochs_run,
                    f"{r.final_acc:.2f}",
                    r.status,
                    "; ".join(r.notes) or "",
                ]
            )
    L += _md_table(
        [
            "run",
            "dataset / model",
            "configuration",
            "seed",
            "epochs",
            "final val acc (%)",
            "status",
            "notes",
        ],
        rows,
    )
    L.append("")
    dup = [g for g in groups if len(set(map(str, g.seeds))) < len(g.runs)]
    for g in dup:
        L.append(
            f"Note: {g.label} ({g.dataset}) has runs with the same seed "
            f"({', '.join(map(str, g.seeds))}); they are counted as separate runs."
        )
    if dup:
        L.append("")

    if skipped:
        L += ["## Skipped runs", ""]
        L += _md_table(["run", "reason"], [[s.display, s.reason] for s in skipped])
        L.append("")

    # notes -------------------------------------------------------------------------------
    L += ["## Notes", ""]
    if target is not None:
        L.append(f"- Target accuracy: {target:.2f}%, set with `--target`.")
    else:
        L.append(
            f"- Target accuracy, chosen automatically per dataset/model as {AUTO_TARGET_FACTOR:g} "
            "× the lowest of the per-optimizer best mean final accuracies: a level every "
            "optimizer reaches with its best configuration, so *epochs/collectives to target* "
            "compare how quickly each gets there. Override with `--target ACC`."
        )
        L += ["  " + n for n in target_notes]
    L.append(
        "- Configurations: runs whose configs agree on every key except `seed` and keys that do "
        "not change training (device, progress, checkpoint, out_dir, eval_batch_size, data "
        "location, launcher); label parts beyond optimizer, N, lr and |B| show the keys that "
        "tell otherwise equal labels apart."
    )
    L.append(
        "- A run is *incomplete* when it logged fewer epochs than its config's `epochs` or has "
        "no `summary.json`; it is still included, with its last logged epoch as its final "
        "accuracy."
    )
    L.append(
        "- A line of `metrics.jsonl` that is not JSON, or has no numeric `epoch` or no finite "
        "`val_acc`, is skipped and listed in the run's notes (table *Runs*)."
    )
    L.append("")
    path = out / "report.md"
    path.write_text("\n".join(L))
    return path


def _what_was_run(runs: list[Run], skipped: list[Skipped], groups: list[Group]) -> list[str]:
    datasets = sorted({g.dataset for g in groups})
    models = sorted({g.model for g in groups})
    opts = []
    for o in sorted({g.opt for g in groups}, key=lambda o: (OPT_ORDER.get(o, 9), o)):
        ns = sorted(
            {g.n for g in groups if g.opt == o},
            key=lambda v: (_num(v) is None, _num(v) or 0.0, str(v)),
        )
        opts.append(f"{OPT_NAMES.get(o, o)} (N={', '.join(map(str, ns))})")
    seeds = _f_seeds([r.seed for r in runs], unique=True)
    epochs = _f_range([r.epochs_run for r in runs])
    n_inc = sum(r.incomplete for r in runs)
    line = (
        f"**What was run:** {len(runs)} runs in {len(groups)} configurations"
        + (f" ({n_inc} incomplete)" if n_inc else "")
        + (f", {len(skipped)} skipped" if skipped else "")
        + f" — datasets: {', '.join(datasets)}; models: {', '.join(models)}; "
        + f"optimizers: {'; '.join(opts)}; seeds: {seeds}; epochs: {epochs}."
    )
    return [line]


def _paper_section(by_panel: dict, groups: list[Group]) -> list[str]:
    L = ["## Comparison with the published numbers", ""]
    L.append(
        f"Published: the authors' validation accuracy (%), {PAPER_SETTING}. Ours: mean ± std "
        "over seeds of the final validation accuracy; SGD/Adam sweeps by their best "
        "learning rate. Differences in epochs, |B| or overlap are shown beside each row."
    )
    L.append("")
    best_only = {id(g) for g in plotted_groups(groups)}
    for (ds, model), gs in by_panel.items():
        key = _norm_dataset(ds)
        if key not in PAPER:
            L += [
                f"- **{ds} / {model}**: no published number for this dataset (published: "
                + ", ".join(PAPER_NAMES.values())
                + ").",
                "",
            ]
            continue
        L += [f"### {PAPER_NAMES[key]} ({ds} / {model})", ""]
        rows = []
        for opt, n, acc in PAPER[key]:
            method = OPT_NAMES[opt] + (f" N={n}" if n is not None else "")
            ours = [
                g
                for g in gs
                if g.opt == opt and id(g) in best_only and (n is None or _num(g.n) == n)
            ]
            if not ours:
                rows.append([method, f"{acc:.2f}", "not run", "–", "–", "–", "–"])
            for g in ours:
                epochs = _f_range([r.epochs_run for r in g.runs])
                overlap = g.cfg.get("overlap", "?")
                ov = f"{_num(overlap) * 100:g}%" if _num(overlap) is not None else str(overlap)
                diff = g.final_mean - acc
                rows.append(
                    [
                        method,
                        f"{acc:.2f}",
                        g.label,
                        _f_acc(g.final_mean, g.final_std),
                        f"{diff:+.2f}",
                        epochs,
                        ov,
                    ]
                )
        L += _md_table(
            [
                "method",
                "published (%)",
                "ours: configuration",
                "ours (%)",
                "ours − published",
                "our epochs",
                "our overlap",
            ],
            rows,
        )
        L.append("")
    return L


def _tuning_section(by_panel: dict, groups: list[Group]) -> list[str]:
    L = ["## Tuning cost", ""]
    L.append(
        "SGD/Adam need a learning rate; a sweep is the set of their configurations that differ "
        "only in `optimizer.lr`. *Epochs spent* counts every epoch of every run and seed of the "
        "sweep. APTS/TR have no learning rate: one run (per N and seed) at its settings."
    )
    L.append("")
    all_sweeps = sweeps(groups)
    for (ds, model), gs in by_panel.items():
        ss = [s for s in all_sweeps if s[0].panel == (ds, model)]
        others = [g for g in gs if g.opt not in LR_OPTIMIZERS]
        L += [f"### {ds} / {model}", ""]
        if ss:
            rows = []
            for s in ss:
                best, worst = s[0], s[-1]
                lrs = sorted((g.lr for g in s), key=lambda v: _num(v) or 0.0)
                rows.append(
                    [
                        s[0].sweep_label,
                        ", ".join(_fmt_value(v) for v in lrs),
                        sum(len(g.runs) for g in s),
                        f"{_fmt_value(best.lr)} ({best.final_mean:.2f}%)",
                        f"{_fmt_value(worst.lr)} ({worst.final_mean:.2f}%)" if len(s) > 1 else "–",
                        sum(g.total_epochs for g in s),
                        _f_time(sum(r.wall_s for g in s for r in g.runs)),
                    ]
                )
            L += _md_table(
                [
                    "sweep",
                    "learning rates",
                    "runs",
                    "best lr (final acc)",
                    "worst lr (final acc)",
                    "epochs spent",
                    "wall time spent",
                ],
                rows,
            )
            L.append("")
        else:
            L += ["No SGD/Adam learning-rate sweep for this dataset/model.", ""]
        if others:
            rows = [
                [
                    g.label,
                    len(g.runs),
                    _f_range([r.epochs_run for r in g.runs]),
                    g.total_epochs,
                    _f_time(sum(r.wall_s for r in g.runs)),
                    _f_acc(g.final_mean, g.final_std),
                ]
                for g in others
            ]
            L += _md_table(
                [
                    "configuration (no lr)",
                    "runs",
                    "epochs per run",
                    "epochs spent",
                    "wall time spent",
                    "final val acc (%)",
                ],
                rows,
            )
            L.append("")
        for s in ss:
            if len(s) < 2:
                continue
            spent = sum(g.total_epochs for g in s)
            line = (
                f"{s[0].sweep_label}: {len(s)} learning rates, {spent} epochs in all, to find "
                f"lr={_fmt_value(s[0].lr)} ({s[0].final_mean:.2f}%; "
                f"worst lr={_fmt_value(s[-1].lr)}: {s[-1].final_mean:.2f}%)"
            )
            if others:
                cmp = ", ".join(
                    f"{g.label} {_f_range([r.epochs_run for r in g.runs])} epochs per run "
                    f"({g.final_mean:.2f}%)"
                    for g in others
                )
                line += f"; without a sweep: {cmp}"
            L += [line + ".", ""]
    return L


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Tables and plots (report.md, val_acc.png, acc_vs_comm.png) from run "
        "directories written by apts-train; searches the given directories recursively.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or sweep directories")
    p.add_argument(
        "--out", default="outputs/report", help="output directory (default: outputs/report)"
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        metavar="ACC",
        help="target validation accuracy in %% for epochs/collectives-to-target (default: "
        f"per dataset, {AUTO_TARGET_FACTOR:g} x the lowest per-optimizer best final accuracy)",
    )
    p.add_argument("--title", default="APTS experiment report", help="report title")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs, skipped, problems = load_runs([Path(p) for p in args.runs])
    try:
        if not runs:
            where = ", ".join(args.runs)
            if skipped:
                reasons = "; ".join(f"{s.display}: {s.reason}" for s in skipped[:3])
                more = " ..." if len(skipped) > 3 else ""
                raise NoRuns(f"no usable runs under {where} ({reasons}{more})")
            if problems:
                raise NoRuns("; ".join(problems))
            raise NoRuns(f"no runs (config.yaml or metrics.jsonl) found under {where}")
        if args.target is not None and not math.isfinite(args.target):
            raise NoRuns(f"--target must be a finite number, got {args.target}")
    except NoRuns as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    for msg in problems:
        print(f"{PROG}: warning: {msg}", file=sys.stderr)
    path = build_report(runs, skipped, Path(args.out), target=args.target, title=args.title)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
