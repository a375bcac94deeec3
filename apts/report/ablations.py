"""Ablation studies: runs whose config names a ``study`` and that vary one factor.

An ablation preset sets the top-level key ``study`` (e.g. ``ablate_local_iters``) and
sweeps one config key (the *factor*) over a few values and seeds. The factor is found,
not declared: the configuration keys (as for grouping: not the seed, not where and how
it ran) whose values differ between the study's runs. Study runs stay out of the main
comparison; each study gets a table and a figure here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apts.config.doc import CONFIG_DIR
from apts.report.formatting import (
    file_slug,
    format_count,
    format_duration,
    format_mean_std,
    format_value,
    markdown_table,
    value_order,
)
from apts.report.groups import KEY_ALIASES, OPT_NAMES, config_key
from apts.report.runs import Run, as_number, hashable

ABLATION_INTRO = (
    "Runs whose config sets `study` (ablation presets). Per study the factor is the config "
    "key that varies between its runs apart from the seed. *Final val acc*: mean ± sample "
    "std over the completed seeds of the last epoch's validation accuracy; *collectives*: "
    "total per run (`comm_calls_total` at the last epoch), mean over those seeds; *wall "
    "time*: per run, mean. Runs that did not complete are counted, not averaged. Figure: "
    "mean ± sample std (error bar) and each seed (dots) per factor value, the default "
    "shaded; a line joins the values only when they are all numbers; collectives in a right "
    "panel when they differ between values."
)
HEADER = [
    "runs (completed/all)",
    "final val acc (%)",
    "final test acc (%)",
    "collectives",
    "wall time / run",
]


@dataclass
class Level:
    """The runs of a study at one value of its factor(s)."""

    value: tuple
    runs: list[Run] = field(default_factory=list)

    @property
    def done(self) -> list[Run]:
        """The completed runs: the ones that enter the statistics."""
        return [r for r in self.runs if not r.incomplete]

    @property
    def finals(self) -> list[float]:
        """Final validation accuracy (%) of each completed run."""
        return [r.final_acc for r in self.done]

    @property
    def std(self) -> float | None:
        """Sample standard deviation of the final accuracies (None below two runs)."""
        return float(np.std(self.finals, ddof=1)) if len(self.done) > 1 else None

    @property
    def comm(self) -> float:
        """Total collectives per completed run, mean (nan without one)."""
        return float(np.mean([r.comm_total[-1] for r in self.done])) if self.done else np.nan


@dataclass
class Study:
    """One study on one dataset/model: its factor keys and levels in factor order."""

    name: str
    panel: tuple[str, str]
    factors: list[str]
    levels: list[Level]
    optimizers: list[str]
    file: str = ""

    @property
    def title(self) -> str:
        """The heading: the study's name, its optimizers and dataset / model."""
        opts = ", ".join(OPT_NAMES.get(o, o) for o in self.optimizers)
        return f"{self.name}: {opts} on {self.panel[0]} / {self.panel[1]}"

    def level_label(self, level: Level) -> str:
        """The factor value(s) of a level as text: ``3``, or ``a=1, b=2``."""
        if len(self.factors) == 1:
            return format_value(level.value[0])
        pairs = zip(self.factors, level.value, strict=True)
        return ", ".join(f"{k}={format_value(v)}" for k, v in pairs) or "(all runs)"

    def tick_label(self, level: Level) -> str:
        """A level on the figure's x axis: its value(s), joined by " / "."""
        return " / ".join(format_value(v) for v in level.value) or "(all runs)"

    @property
    def numeric_levels(self) -> bool:
        """Every level is one number (not a bool, not "auto"): an ordered axis whose
        points may be joined by a line; otherwise the levels are categories."""
        return len(self.factors) == 1 and all(
            as_number(lv.value[0]) is not None for lv in self.levels
        )

    @property
    def default_index(self) -> int | None:
        """The position of the level at the configs' default (:func:`factor_defaults`)."""
        defaults = factor_defaults(self.name, self.factors, self.optimizers)
        if defaults is None:
            return None
        want = tuple(format_value(v) for v in defaults)
        found = [
            i for i, lv in enumerate(self.levels) if tuple(map(format_value, lv.value)) == want
        ]
        return found[0] if found else None

    @property
    def axis_label(self) -> str:
        """The x axis: the factor's key (with N for subdomains), or the keys joined."""
        keys = [f"{KEY_ALIASES[k]} ({k})" if k in KEY_ALIASES else k for k in self.factors]
        return " / ".join(keys) or "(no factor varies)"


def factor_defaults(study: str, factors: list[str], optimizers: list[str]) -> tuple | None:
    """The factors' default values: what the study's preset (the experiment config whose
    ``study`` is ``study``) sets, else the optimizer's config, else train.yaml; None when a
    factor has no default there (or the configs are not at hand)."""
    from omegaconf import OmegaConf

    def load(path: Path) -> dict:
        if not path.is_file():
            return {}
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}

    presets = [load(p) for p in sorted((CONFIG_DIR / "experiment").glob("*.yaml"))]
    sources = [p for p in presets if p.get("study") == study]
    sources += [load(CONFIG_DIR / "optimizer" / f"{o}.yaml") for o in optimizers[:1]]
    sources.append(load(CONFIG_DIR / "train.yaml"))
    out = []
    for key in factors:
        for src in sources:
            node: Any = src
            for part in key.split("."):
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is not _MISSING:
                out.append(hashable(node))
                break
        else:
            return None
    return tuple(out)


_MISSING = object()


def find_studies(runs: list[Run]) -> list[Study]:
    """The studies among ``runs`` (those with a ``study``), by name and dataset/model."""
    by_study: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.study is not None:
            cfg = dict(config_key(r.cfg))
            panel = (str(cfg.get("dataset.name", "?")), str(cfg.get("model.name", "?")))
            by_study.setdefault((r.study, panel), []).append(r)
    studies = [_study(name, panel, rs) for (name, panel), rs in sorted(by_study.items())]
    names = [s.name for s in studies]
    for s in studies:
        unique = names.count(s.name) == 1
        parts = [s.name] if unique else [s.name, *s.panel]
        s.file = f"ablation_{file_slug(*parts)}.png"
    return studies


def _study(name: str, panel: tuple[str, str], runs: list[Run]) -> Study:
    cfgs = [dict(config_key(r.cfg)) for r in runs]
    keys = sorted({k for c in cfgs for k in c})
    factors = [k for k in keys if len({format_value(c.get(k)) for c in cfgs}) > 1]
    levels: dict[tuple, Level] = {}
    for r, c in zip(runs, cfgs, strict=True):
        value = tuple(c.get(k) for k in factors)
        levels.setdefault(tuple(map(format_value, value)), Level(value)).runs.append(r)
    ordered = sorted(levels.values(), key=lambda lv: tuple(value_order(v) for v in lv.value))
    for lv in ordered:
        lv.runs.sort(key=lambda r: (str(r.seed), r.display))
    opts = sorted({str(c.get("optimizer.name", "?")) for c in cfgs})
    return Study(name, panel, factors, ordered, opts)


def _level_row(study: Study, lv: Level) -> list[Any]:
    done = lv.done
    left_out = [r.status for r in lv.runs if r.incomplete]
    runs = f"{len(done)}/{len(lv.runs)}" + (f" ({'; '.join(left_out)})" if left_out else "")
    if not done:
        return [study.level_label(lv), runs, "–", "–", "–", "–"]
    tests = [r.final_test_acc for r in done]
    return [
        study.level_label(lv),
        runs,
        format_mean_std(float(np.mean(lv.finals)), lv.std),
        format_mean_std(
            float(np.mean(tests)), float(np.std(tests, ddof=1)) if len(tests) > 1 else None
        ),
        format_count(lv.comm),
        format_duration(float(np.mean([r.wall_s for r in done]))),
    ]


def ablation_section(studies: list[Study]) -> list[str]:
    """Per study: which factor it varies (and a warning when more than one key varies), a
    table factor value -> final accuracy (mean ± std over seeds), collectives and wall time,
    and its figure."""
    if not studies:
        return []
    lines = ["## Ablations", "", ABLATION_INTRO, ""]
    for s in studies:
        lines += [f"### {s.title}", ""]
        if len(s.factors) == 1:
            lines += [f"Factor: `{s.factors[0]}`.", ""]
        elif s.factors:
            keys = ", ".join(f"`{k}`" for k in s.factors)
            lines.append(f"More than one key varies in this study: {keys}; a row per combination.")
            lines.append("")
        else:
            lines += ["No key varies in this study apart from the seed.", ""]
        first = s.factors[0] if len(s.factors) == 1 else "factor"
        lines += markdown_table([first, *HEADER], [_level_row(s, lv) for lv in s.levels])
        lines += ["", f"![{s.title}]({s.file})", ""]
    return lines
