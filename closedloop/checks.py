"""Argument checks shared by every module: one wording for the same mistake everywhere.

Each returns the value in its proper type or raises :class:`SettingsError` (a ``UsageError``,
exit 2 on the command line, and a ``ValueError`` for library callers) naming the argument, the
bad value and what is accepted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from closedloop.errors import UsageError

__all__ = ["SettingsError", "non_empty_text", "non_negative_float", "positive_float", "positive_int"]


class SettingsError(UsageError, ValueError):
    """A setting out of range (exit 2); also a ``ValueError`` for library callers."""


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (a bool or a float is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SettingsError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def positive_float(value: Any, name: str, unit: str = "") -> float:
    """``value`` as a finite float > 0; ``unit`` (e.g. ``"seconds"``) is named in the message."""
    number = _float(value)
    if not math.isfinite(number) or number <= 0:
        what = f"a positive number of {unit}" if unit else "a positive number"
        raise SettingsError(f"{name} must be {what}; got {value!r}.")
    return number


def non_negative_float(value: Any, name: str, unit: str = "") -> float:
    """``value`` as a finite float >= 0."""
    number = _float(value)
    if not math.isfinite(number) or number < 0:
        what = f"a number of {unit} >= 0" if unit else "a number >= 0"
        raise SettingsError(f"{name} must be {what}; got {value!r}.")
    return number


def non_empty_text(value: Any, name: str) -> str:
    """``value`` as a stripped, non-empty string."""
    text = str(value).strip() if value is not None else ""
    if not text:
        raise SettingsError(f"{name} must not be empty.")
    return text


def _float(value: Any) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
