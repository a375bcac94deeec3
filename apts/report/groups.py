"""Configurations (runs that differ only in the seed), their labels and statistics.

A *configuration* is the set of runs whose configs agree on every key except
``seed`` and the keys that do not change the training (:data:`IGNORED_KEYS`,
:data:`IGNORED_PREFIXES`); its runs are the seeds of a :class:`Group`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from apts.report.formatting import format_mean_std, format_value, value_order
from apts.report.runs import Run, flatten

# Config keys that do not change what is trained (where and how it runs, what is saved).
IGNORED_KEYS = {
    "seed",
    "device",
    "progress",
    "checkpoint",
    "out_dir",
    "eval_batch_size",
    "micro_batch",  # how a shard's passes are chunked: rounding only (BatchNorm aside)
    "dataset.data_dir",
    "dataset.download",
    "study",  # the ablation preset's name: studies are grouped on their own
}
IGNORED_PREFIXES = ("launcher.", "hydra.")

KEY_ALIASES = {"subdomains": "N", "batch_size": "|B|"}
OPT_NAMES = {
    "apts": "APTS",
    "tr": "TR",
    "adam": "Adam",
    "sgd": "SGD",
    "local_adam": "Local Adam",
    "local_sgd": "Local SGD",
    "diloco": "DiLoCo",
    "prodigy": "Prodigy",
    "schedulefree_adamw": "Schedule-free AdamW",
}
OPT_ORDER = {o: i for i, o in enumerate(OPT_NAMES)}
# Local SGD/Adam, DiLoCo: every rank steps on its shard, parameters averaged (DiLoCo: an
# outer step) every H (sync_every) steps; their labels show N and H as well as the lr.
LOCAL_OPTIMIZERS = ("local_adam", "local_sgd", "diloco")
LR_OPTIMIZERS = ("sgd", "adam", *LOCAL_OPTIMIZERS)

AUTO_TARGET_FACTOR = 0.99


def config_key(cfg: dict[str, Any]) -> tuple:
    """The (key, value) pairs of a (nested) config that define its configuration, by key."""
    items = [
        (k, v)
        for k, v in flatten(cfg).items()
        if k not in IGNORED_KEYS and not k.startswith(IGNORED_PREFIXES)
    ]
    return tuple(sorted(items, key=lambda kv: kv[0]))


@dataclass
class Group:
    """One configuration: its config key, its runs (one per seed) and extra label parts."""

    key: tuple
    runs: list[Run]
    extras: list[str] = field(default_factory=list)  # extra label parts ("local_memory=reset")
    # runs of this configuration that did not complete: counted, not in the statistics
    excluded: list[Run] = field(default_factory=list)

    @property
    def cfg(self) -> dict[str, Any]:
        """The configuration as {flat key: value}."""
        return dict(self.key)

    @property
    def dataset(self) -> str:
        """``dataset.name``."""
        return str(self.cfg.get("dataset.name", "?"))

    @property
    def model(self) -> str:
        """``model.name``."""
        return str(self.cfg.get("model.name", "?"))

    @property
    def panel(self) -> tuple[str, str]:
        """(dataset, model): the tables and figure panels a configuration belongs to."""
        return (self.dataset, self.model)

    @property
    def opt(self) -> str:
        """``optimizer.name``."""
        return str(self.cfg.get("optimizer.name", "?"))

    @property
    def n(self) -> Any:
        """``subdomains``: the number of ranks (APTS: subdomains N)."""
        return self.cfg.get("subdomains", "?")

    @property
    def batch_size(self) -> Any:
        """The global mini-batch size |B|."""
        return self.cfg.get("batch_size", "?")

    @property
    def lr(self) -> Any:
        """``optimizer.lr`` for optimizers that have one, else None."""
        return self.cfg.get("optimizer.lr") if self.opt in LR_OPTIMIZERS else None

    @property
    def sync_every(self) -> Any:
        """H, the local steps between parameter averages (Local SGD/Adam), else None."""
        return self.cfg.get("optimizer.sync_every") if self.opt in LOCAL_OPTIMIZERS else None

    @property
    def sweep_key(self) -> tuple:
        """The configuration without its learning rate: equal for one lr sweep."""
        return tuple(kv for kv in self.key if kv[0] != "optimizer.lr")

    def shown_keys(self) -> set[str]:
        """The config keys the label always shows."""
        shown = {"dataset.name", "model.name", "optimizer.name", "batch_size"}
        if self.opt in LR_OPTIMIZERS:
            shown.add("optimizer.lr")
        if self.opt not in LR_OPTIMIZERS or self.opt in LOCAL_OPTIMIZERS:
            shown.add("subdomains")
        if self.opt in LOCAL_OPTIMIZERS:
            shown.add("optimizer.sync_every")
        return shown

    def label_parts(self, with_lr: bool = True) -> list[str]:
        """Optimizer, N (not for DDP SGD/Adam), H (Local SGD/Adam), extras, lr and |B|."""
        parts = [OPT_NAMES.get(self.opt, self.opt)]
        if "subdomains" in self.shown_keys():
            parts.append(f"N={self.n}")
        if self.opt in LOCAL_OPTIMIZERS:
            parts.append(f"H={format_value(self.sync_every)}")
        parts += self.extras
        if with_lr and self.lr is not None:
            parts.append(f"lr={format_value(self.lr)}")
        parts.append(f"(|B|={self.batch_size})")
        return parts

    @property
    def label(self) -> str:
        """The configuration's name in tables and legends."""
        return " ".join(self.label_parts())

    @property
    def sweep_label(self) -> str:
        """The label without the learning rate."""
        return " ".join(self.label_parts(with_lr=False))

    @property
    def sort_key(self) -> tuple:
        """Table order: optimizer, N, |B|, H, extras, lr."""
        return (
            OPT_ORDER.get(self.opt, 9),
            self.opt,
            value_order(self.n),
            value_order(self.batch_size),
            value_order(self.sync_every),
            tuple(self.extras),
            value_order(self.lr),
        )

    # statistics over seeds --------------------------------------------------------
    @property
    def seeds(self) -> list[Any]:
        """The seeds of the runs, in run order."""
        return [r.seed for r in self.runs]

    @property
    def finals(self) -> np.ndarray:
        """Each run's final validation accuracy (%)."""
        return np.array([r.final_acc for r in self.runs], dtype=float)

    @property
    def final_mean(self) -> float:
        """Mean final validation accuracy over seeds."""
        return float(np.mean(self.finals))

    @property
    def final_std(self) -> float | None:
        """Sample standard deviation of the final accuracy (None for one seed)."""
        return float(np.std(self.finals, ddof=1)) if len(self.runs) > 1 else None

    @property
    def chosen_on(self) -> str:
        """``val`` when every run has a validation split, else ``test`` (see Run.chosen_on)."""
        return "val" if all(r.chosen_on == "val" for r in self.runs) else "test"

    def val_cell(self) -> str:
        """The final validation accuracy as a table cell ("–" without a validation split:
        such runs are chosen on their test accuracy)."""
        if self.chosen_on != "val":
            return "– (no split)"
        return format_mean_std(self.final_mean, self.final_std)

    def test_cell(self) -> str:
        """The final test accuracy as a table cell: mean ± std over the seeds that logged it."""
        tests = np.array([r.final_test_acc for r in self.runs], dtype=float)
        tests = tests[np.isfinite(tests)]
        if not len(tests):
            return "–"
        return format_mean_std(
            float(tests.mean()), float(tests.std(ddof=1)) if len(tests) > 1 else None
        )

    @property
    def incomplete_runs(self) -> list[Run]:
        """The runs that did not complete."""
        return [r for r in self.runs if r.incomplete]

    @property
    def total_epochs(self) -> int:
        """Epochs run, summed over the seeds, those left out included (they cost time too)."""
        return sum(r.epochs_run for r in self.runs + self.excluded)

    @property
    def total_wall_s(self) -> float:
        """Training time of all the runs, those left out included."""
        return sum(r.wall_s for r in self.runs + self.excluded)

    def curves(
        self, x: str = "epoch", y: str = "val_acc"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, mean, min, max) of the metric ``y`` per epoch over the seeds that logged it.

        ``x``: ``"epoch"``; ``"comm"`` (``"bytes"``) the mean cumulative collectives
        (bytes); ``"wall"`` the mean cumulative training time (s); ``"samples"`` the mean
        samples seen (see :meth:`Run.samples_seen`) at each epoch.
        """
        epochs = sorted({int(e) for r in self.runs for e in r.epochs})
        vals = np.full((len(self.runs), len(epochs)), np.nan)
        cumulative = np.full_like(vals, np.nan)
        col = {e: j for j, e in enumerate(epochs)}
        for i, r in enumerate(self.runs):
            xs = r.x_values(x)
            for e, rec, c in zip(r.epochs, r.records, xs, strict=True):
                v = rec.get(y)
                vals[i, col[int(e)]] = np.nan if v is None else v
                cumulative[i, col[int(e)]] = c
        with warnings.catch_warnings():  # an epoch no seed logged this metric for: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            xs = np.array(epochs, dtype=float) if x == "epoch" else np.nanmean(cumulative, 0)
            return xs, np.nanmean(vals, 0), np.nanmin(vals, 0), np.nanmax(vals, 0)

    @property
    def final_test(self) -> float | None:
        """Mean final test accuracy (%) over the seeds that logged one (None: none did)."""
        tests = [r.final_test_acc for r in self.runs if math.isfinite(r.final_test_acc)]
        return float(np.mean(tests)) if tests else None

    def to_target(self, target: float) -> tuple[list[int], list[float]]:
        """Per seed that reached ``target``: first epoch whose (validation) accuracy
        :attr:`Run.acc` is >= target, comm then."""
        epochs, comms = [], []
        for r in self.runs:
            for rec, acc in zip(r.records, r.acc, strict=True):
                if acc >= target:
                    epochs.append(int(rec["epoch"]))
                    comms.append(float(rec["_comm_total"]))
                    break
        return epochs, comms

    @property
    def status(self) -> str:
        """Either "complete" or the status of each run that did not complete (those left
        out of the statistics say so)."""
        bad = self.incomplete_runs
        if not bad and not self.excluded:
            return "complete"
        if len(self.runs) == 1 and not self.excluded:
            return bad[0].status
        parts = [f"seed {r.seed}: {r.status}" for r in bad]
        parts += [f"seed {r.seed}: {r.status}, left out" for r in self.excluded]
        return "; ".join(parts)


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by configuration, seeds in order, labels told apart, sorted for tables."""
    by_key: dict[tuple, list[Run]] = {}
    for r in runs:
        by_key.setdefault(config_key(r.cfg), []).append(r)
    groups = [
        Group(k, sorted(v, key=lambda r: (str(r.seed), r.display))) for k, v in by_key.items()
    ]
    _disambiguate(groups)
    return sorted(groups, key=lambda g: (g.panel, g.sort_key, g.label))


def completed_only(groups: list[Group]) -> list[Group]:
    """The groups with their runs that did not complete moved to ``excluded`` (labels kept);
    groups with no completed run are dropped."""
    out = []
    for g in groups:
        done = [r for r in g.runs if not r.incomplete]
        if done:
            out.append(Group(g.key, done, g.extras, [r for r in g.runs if r.incomplete]))
    return out


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
        differing = [k for k in keys if len({format_value(c.get(k)) for c in cfgs}) > 1]
        for g in same:
            g.extras = [
                f"{KEY_ALIASES.get(k, k.split('.')[-1])}={format_value(g.cfg.get(k, '–'))}"
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
    """Groups by (dataset, model), in order."""
    out: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        out.setdefault(g.panel, []).append(g)
    return out


def auto_target(groups: list[Group]) -> tuple[float, str]:
    """0.99 x the lowest of the per-optimizer best mean final accuracies, and how."""
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


def method_key(g: Group) -> tuple:
    """A *method*: an optimizer at one global mini-batch size on one dataset/model. Its
    configurations (N, H, lr, other options) are candidates for :func:`best_per_method`."""
    return (g.panel, g.opt, g.batch_size)


def best_per_method(groups: list[Group]) -> list[tuple[Group, int]]:
    """Per method, the configuration with the highest mean final validation accuracy (the
    choice is made on validation, never on test) and how many it was chosen from."""
    by_method: dict[tuple, list[Group]] = {}
    for g in groups:
        by_method.setdefault(method_key(g), []).append(g)
    best = [(max(gs, key=lambda g: _nan_low(g.final_mean)), len(gs)) for gs in by_method.values()]
    return sorted(best, key=lambda b: (b[0].panel, b[0].sort_key))
