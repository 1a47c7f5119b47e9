"""Durations as operators write them: ``500ms``, ``60s``, ``30m``, ``2h``, ``1d``, or plain seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d)?\s*", re.ASCII)
MAX_DURATION = 30 * 86400.0
"""No duration in waitroom is longer than 30 days; fields have tighter bounds of their own. An
infinite, NaN or astronomically long duration would switch a room or a limit off."""


def parse_duration(value: object) -> float:
    """Return the duration in seconds; raise ValueError with a message fit for a config error."""
    if isinstance(value, bool):  # bool is an int: `window: true` is a mistake, not 1 second
        raise ValueError(f"invalid duration {value!r} (use e.g. 500ms, 60s, 30m)")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # a 400-digit integer
            seconds = math.inf
    elif isinstance(value, str) and len(value) <= 40 and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"invalid duration {_short(value)} (use e.g. 500ms, 60s, 30m)")
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {_short(value)}: must be a finite number")
    if seconds < 0:
        raise ValueError(f"invalid duration {_short(value)}: must not be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"invalid duration {_short(value)}: must be at most 30d")
    return seconds


def _short(value: object) -> str:
    """A value for an error message: never a 62 MB log line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for messages and the effective config."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds}s"
