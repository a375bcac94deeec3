"""Without tuning: every method at its defaults, no sweep (the zero-tuning table).

A configuration is *at its defaults* when each option one would otherwise tune (``lr``,
``sync_every``, ``outer_lr``, ``outer_momentum``: those its optimizer has) equals the value
in ``configs/optimizer/<name>.yaml``: Adam at lr = 1e-3, Local Adam and DiLoCo at lr = 1e-3
and H = 13, Prodigy at lr = 1 (its multiplier), schedule-free AdamW at lr = 0.0025. APTS and
TR have no such option: every one of their configurations counts (APTS at its own |B|).
The batch size and N are the experiment's, not the method's, and are shown.

Rows are ordered by |B| (largest first), then by the accuracy choices are made on
(validation; test for runs without a validation split); the test accuracy is beside it,
never used to choose. Under each table one sentence per |B| says who is best there and
where APTS stands, by how many points and at how many collectives.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from apts.config.paths import CONFIG_DIR
from apts.report.communication import budget_of
from apts.report.formatting import format_count, markdown_table
from apts.report.groups import OPT_NAMES, Group
from apts.report.runs import as_number

TUNED_KEYS = ("lr", "sync_every", "outer_lr", "outer_momentum")
ZERO_TUNING_INTRO = (
    "Every method at its defaults, with no sweep: the options one would otherwise tune "
    "(learning rate; Local Adam/SGD's and DiLoCo's H and outer step) at the values of "
    "`configs/optimizer/<name>.yaml` (Adam lr = 1e-3, Prodigy lr = 1, schedule-free AdamW "
    "lr = 0.0025, Local Adam and DiLoCo lr = 1e-3 with H = 13); APTS and TR have none and "
    "run at their own |B|. Rows by |B|, then by validation accuracy; *collectives* are per "
    "run (mean over seeds)."
)
HEADER = ["configuration", "\\|B\\|", "final val acc (%)", "final test acc (%)", "collectives"]


@cache
def optimizer_defaults(name: str) -> dict[str, Any] | None:
    """The ``optimizer`` block of ``configs/optimizer/<name>.yaml`` (None: no such file)."""
    path = CONFIG_DIR / "optimizer" / f"{name}.yaml"
    if not path.is_file():
        return None
    block = OmegaConf.to_container(OmegaConf.load(path)).get("optimizer", {})
    return block if isinstance(block, dict) else None


def _same(a: Any, b: Any) -> bool:
    x, y = as_number(a), as_number(b)
    if x is not None and y is not None:
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def at_defaults(g: Group) -> bool:
    """Whether ``g``'s tunable options (:data:`TUNED_KEYS`) are its optimizer's defaults."""
    defaults = optimizer_defaults(g.opt)
    if defaults is None:
        return False
    cfg = g.cfg
    return all(
        _same(cfg.get(f"optimizer.{k}", defaults[k]), defaults[k])
        for k in TUNED_KEYS
        if k in defaults
    )


def _order(g: Group) -> tuple:
    return (-(as_number(g.batch_size) or 0.0), -_acc(g), g.label)


def _acc(g: Group) -> float:
    return -math.inf if math.isnan(g.final_mean) else g.final_mean


def _test(g: Group) -> float:
    tests = np.array([r.final_test_acc for r in g.runs], dtype=float)
    tests = tests[np.isfinite(tests)]
    return float(tests.mean()) if len(tests) else math.nan


def _split(g: Group) -> str:
    return "validation" if g.chosen_on == "val" else "test (no validation split)"


def _figures(g: Group) -> str:
    test = _test(g)
    beside = f", {test:.2f}% test" if g.chosen_on == "val" and math.isfinite(test) else ""
    return f"{g.final_mean:.2f}% {_split(g)}{beside}; {format_count(budget_of(g))} collectives"


def _versus(apts: Group, other: Group) -> str:
    """APTS's standing against ``other``: points ahead/behind and the collectives ratio."""
    gap = apts.final_mean - other.final_mean
    side = "ahead of" if gap > 0 else "behind"
    if abs(gap) < 0.005:
        text = f"{apts.label} ties with {other.label}"
    else:
        text = f"{apts.label} is {abs(gap):.2f} points {side} {other.label}"
    c_apts, c_other = budget_of(apts), budget_of(other)
    if c_apts > 0 and c_other > 0:
        ratio = c_other / c_apts
        if round(ratio, 1) == 1.0:
            text += " with as many collectives"
        elif ratio > 1:
            text += f" with {ratio:.1f}× fewer collectives"
        else:
            text += f" with {1 / ratio:.1f}× more collectives"
    return text


def batch_sentence(batch: Any, rows: list[Group], apts_best: Group | None) -> str:
    """Who is best at ``batch`` (by the choosing accuracy) and where APTS stands."""
    ranked = sorted(rows, key=lambda g: -_acc(g))
    best = ranked[0]
    line = f"At |B| = {batch}: best without tuning is {best.label} ({_figures(best)})."
    if apts_best is None:
        return line
    here = [g for g in ranked if g.opt == "apts"]
    if here:
        rivals = [g for g in ranked if g.opt != "apts"]
        if rivals:
            line += f" {_versus(here[0], rivals[0])}, the best other method at this |B|."
        return line
    return line + (
        f" APTS does not run at this |B|; at its own: {_versus(apts_best, best)} "
        f"({_figures(apts_best)})."
    )


def zero_tuning_section(by_panel: dict[tuple[str, str], list[Group]]) -> list[str]:
    """Per dataset/model: the configurations at their defaults (see the module docstring)
    in one table with their validation and test accuracy and collectives, and one
    sentence per |B|."""
    lines = ["## Without tuning: every method at its defaults", "", ZERO_TUNING_INTRO, ""]
    any_rows = False
    for (ds, model), gs in by_panel.items():
        rows = sorted((g for g in gs if at_defaults(g)), key=_order)
        if not rows:
            continue
        any_rows = True
        lines += [f"### {ds} / {model}", ""]
        table = [
            [g.label, g.batch_size, g.val_cell(), g.test_cell(), format_count(budget_of(g))]
            for g in rows
        ]
        lines += [*markdown_table(HEADER, table), ""]
        apts = [g for g in rows if g.opt == "apts"]
        apts_best = max(apts, key=_acc) if apts else None
        for batch in sorted({g.batch_size for g in rows}, key=lambda b: -(as_number(b) or 0)):
            at = [g for g in rows if g.batch_size == batch]
            lines += [batch_sentence(batch, at, apts_best), ""]
    if not any_rows:
        names = ", ".join(OPT_NAMES[o] for o in ("apts", "adam", "prodigy", "schedulefree_adamw"))
        lines += [f"No configuration at its defaults here ({names}, ...).", ""]
    return lines
