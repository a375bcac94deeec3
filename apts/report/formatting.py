"""How numbers, values and tables are written in the report (markdown)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from apts.report.runs import as_number


def format_value(v: Any) -> str:
    """A config value as written in labels: floats as ``%g``, tuples as ``[a,b]``."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    return str(v)


def file_slug(*parts: str) -> str:
    """``parts`` joined by "_", each reduced to letters, digits, "_", "-" and "." (a name that
    is safe in a file name and in a markdown link)."""
    return "_".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p).strip("-") for p in parts)


def plural(n: int, word: str, words: str | None = None) -> str:
    """``n`` and the word, in the plural unless n is 1 (1 run, 2 runs, 3 studies)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def format_number(x: float, digits: int = 1) -> str:
    """``x`` rounded to ``digits`` decimals, trailing zeros dropped (3.50 -> 3.5, 4.0 -> 4)."""
    s = f"{round(x, digits):.{digits}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def format_count(x: float) -> str:
    """A count with thousands separators, no decimals (9380 -> 9,380)."""
    return f"{x:,.0f}"


def format_duration(s: float) -> str:
    """Seconds as s, min (from 10 min) or h (from 2 h), one decimal."""
    if s >= 7200:
        return f"{s / 3600:.1f} h"
    if s >= 600:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def format_mean_std(mean: float, std: float | None) -> str:
    """``mean ± std`` with two decimals; "–" for the std of a single value."""
    return f"{mean:.2f} ± " + ("–" if std is None else f"{std:.2f}")


def format_range(values: list[int]) -> str:
    """``lo–hi``, or one number when all values agree."""
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def value_order(v: Any) -> tuple:
    """Sort key: numbers first, ascending, then everything else by its text."""
    return (as_number(v) is None, as_number(v) or 0.0, str(v))


def format_seeds(seeds: list[Any], unique: bool = False) -> str:
    """Seeds in numeric order, comma separated (``unique``: each seed once)."""
    vals = set(seeds) if unique else seeds
    return ", ".join(str(s) for s in sorted(vals, key=value_order))


def format_to_target(values: list[float], n: int, fmt: Callable[[float], str]) -> str:
    """Mean of the per-seed values that reached a target; "(k/n seeds)" when not all did."""
    if not values:
        return "not reached"
    s = fmt(float(np.mean(values)))
    return s if len(values) == n else f"{s} ({len(values)}/{n} seeds)"


def markdown_cell(s: Any) -> str:
    """``s`` as one table cell: pipes escaped, on one line."""
    return str(s).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """The lines of a markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
    return out
