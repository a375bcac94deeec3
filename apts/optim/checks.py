"""Constructor argument checks shared by the optimizers, the L-SR1 memory and the TR rules.

Every failure is a ``ValueError`` whose message starts with ``<argument>=<value!r>`` and
says what is allowed, e.g. ``radius=5.0 must be in [min_radius, max_radius] = [0.0001,
1.0]``: the runner's config check (``apts/config/validate.py``) turns such a message into
``optimizer.radius=5.0 ...`` for the user. Booleans are not numbers here (``True`` is no
memory size), and a flag must be a real ``bool`` (Hydra turns ``maybe`` into a string).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "is_number",
]


def is_number(value: Any) -> bool:
    """A finite real number that is not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_number(
    name: str,
    value: Any,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    where: str = "",
) -> float:
    """A finite real number in the interval [lo, hi] (ends open as asked); returns a float.

    ``where`` names the bounds when they are other arguments, e.g. ``"[min_radius,
    max_radius]"``: the message then reads ``... must be in [min_radius, max_radius] =
    [0.0001, 1.0]``.
    """
    ok = is_number(value)
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if ok:
        return float(value)
    if lo == -math.inf and hi == math.inf:
        raise ValueError(f"{name}={value!r} must be a finite number")
    if hi == math.inf:
        rel = ">" if lo_open else ">="
        raise ValueError(f"{name}={value!r} must be a number {rel} {lo!r}")
    interval = f"{'(' if lo_open else '['}{lo!r}, {hi!r}{')' if hi_open else ']'}"
    named = f"{where} = " if where else ""
    raise ValueError(f"{name}={value!r} must be in {named}{interval}")


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer (not a bool) in [lo, hi] (no upper bound if hi is None); returns an int."""
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    ok = ok and value >= lo and (hi is None or value <= hi)
    if ok:
        return int(value)
    bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    raise ValueError(f"{name}={value!r} must be an integer {bounds}")


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool``."""
    if isinstance(value, bool):
        return value
    raise ValueError(f"{name}={value!r} must be True or False")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices``: ``order='third' must be 'first' or 'second'``."""
    choices = tuple(choices)
    if isinstance(value, str) and value in choices:
        return value
    quoted = [repr(c) for c in choices]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    raise ValueError(f"{name}={value!r} must be {listed}")
