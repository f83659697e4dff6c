"""Argument checks with one message shape: ``name=value is not valid: <what to do>``.

Every public function that takes a number, a count or a choice from a learner checks it here before
allocating anything, so a bad value fails at once with a sentence that names it and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["invalid", "check_int", "check_number", "check_choice"]


def invalid(name: str, value: Any, fix: str) -> ValueError:
    """The error to raise for a bad ``name=value``: ``raise invalid("top_k", 0, "use a whole number >= 1.")``."""
    return ValueError(f"{name}={value!r} is not valid: {fix}")


def check_int(name: str, value: Any, minimum: int = 0, fix: str | None = None) -> int:
    """``value`` as an int if it is a whole number >= ``minimum`` (bools are refused), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise invalid(name, value, fix or f"use a whole number >= {minimum}.")
    return value


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    fix: str | None = None,
) -> float:
    """``value`` as a float if it is a finite number within [low, high] (ends open where asked), else ValueError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if fix is None:
            lo = "" if low is None else f"{'(' if low_open else '['}{low:g}, "
            hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
            fix = f"use a finite number in {lo or '(-inf, '}{hi or 'inf)'}."
        raise invalid(name, value, fix)
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else ValueError listing them."""
    options = tuple(choices)
    if value not in options:
        raise invalid(name, value, f"use one of {', '.join(options)}.")
    return value
