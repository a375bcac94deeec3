"""The option checks: one set for the optimizers' constructor arguments (the L-SR1
memory, the TR rules, APTS, local SGD/Adam, DiLoCo) and the runner's config keys.

Every failure is an :class:`apts.errors.OptionError` (a ``ValueError``) whose message starts
with ``<option>=<value!r>`` and says what is allowed, e.g. ``radius=5.0 must be in
[min_radius, max_radius] = [0.0001, 1.0]``; the config check (``apts/config/validate.py``)
reports a constructor's as ``optimizer.radius=5.0 ...`` from the error's fields. Booleans
are not numbers here (``True`` is no memory size), and a flag must be a real ``bool``
(Hydra turns ``maybe`` into a string). A leaf: no torch, no other apts module but errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

from apts.errors import OptionError

__all__ = [
    "check_betas",
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
        raise OptionError(name, value, "must be a finite number")
    if hi == math.inf:
        rel = ">" if lo_open else ">="
        raise OptionError(name, value, f"must be a number {rel} {lo!r}")
    interval = f"{'(' if lo_open else '['}{lo!r}, {hi!r}{')' if hi_open else ']'}"
    named = f"{where} = " if where else ""
    raise OptionError(name, value, f"must be a number in {named}{interval}")


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer (not a bool) in [lo, hi] (no upper bound if hi is None); returns an int."""
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    ok = ok and value >= lo and (hi is None or value <= hi)
    if ok:
        return int(value)
    bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    raise OptionError(name, value, f"must be an integer {bounds}")


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (``true``/``false`` in a config, ``True``/``False`` in Python)."""
    if isinstance(value, bool):
        return value
    raise OptionError(name, value, "must be true or false")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices``: ``order='third' must be 'first' or 'second'``."""
    choices = tuple(choices)
    if isinstance(value, str) and value in choices:
        return value
    quoted = [repr(c) for c in choices]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    raise OptionError(name, value, f"must be {listed}")


def check_betas(name: str, value: Any, first_open: bool = False) -> tuple[float, float]:
    """Two decay rates in [0, 1) (the first in (0, 1) if ``first_open``); returns a tuple."""
    pair = isinstance(value, (list, tuple)) and len(value) == 2
    ok = pair and all(is_number(b) and 0 <= b < 1 for b in value)
    if ok and not (first_open and value[0] == 0):
        return (float(value[0]), float(value[1]))
    bound = "(0, 1) and [0, 1)" if first_open else "[0, 1)"
    raise OptionError(name, value, f"must be two numbers in {bound}")
