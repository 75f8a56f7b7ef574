"""Durations as people write them in config: ``500ms``, ``10s``, ``5m``, ``1h30m``, ``2d``.

Parsed once at config load into float seconds. A bare number is seconds. The pydantic
type :data:`Duration` reports a bad value as ``input should be a valid duration``, so a
config error reads ``checks[2].timeout: input should be a valid duration (got '5 parsecs')``.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema, field_validator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_BARE = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(text: str) -> float:
    """Return the duration in seconds, or raise ``ValueError`` naming the bad input."""
    cleaned = text.strip().replace(" ", "")
    if _BARE.fullmatch(cleaned):
        return float(cleaned)
    if not _WHOLE.fullmatch(cleaned):
        raise ValueError(f"input should be a valid duration like 500ms, 10s, 5m, 1h (got {text!r})")
    return sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(cleaned))


def format_duration(seconds: float) -> str:
    """The shortest readable form: ``0.25`` -> ``250ms``, ``90`` -> ``1m30s``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


#: The longest duration a config may give (ten years): a NaN or infinite one would switch a
#: guardrail off (a NaN cooldown never blocks) or stop a loop (an infinite interval).
MAX_DURATION = 10 * 365 * 86400.0


def _coerce(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("input should be a valid duration, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError("input should be a finite duration (got NaN or infinity)")
        if seconds < 0:
            raise ValueError("input should be a valid duration, not negative")
    elif isinstance(value, str):
        seconds = parse_duration(value)
    else:
        raise ValueError(f"input should be a valid duration like 10s (got {type(value).__name__})")
    if seconds > MAX_DURATION:
        raise ValueError(f"input should be a duration of at most 10 years (got {format_duration(seconds)})")
    return seconds


#: What a config may write for a :data:`Duration`, as JSON Schema (``paramedic schema``):
#: a number of seconds, or a string :func:`parse_duration` accepts.
DURATION_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*(?:\d+(?:\.\d+)? *(?:ms|s|m|h|d|w) *)+$|^\s*\d+(?:\.\d+)?\s*$"},
    ],
    "description": "a duration: 500ms, 10s, 5m, 1h30m, 2d, 1w, or a number of seconds",
}

Duration = Annotated[float, BeforeValidator(_coerce), PlainSerializer(format_duration, return_type=str),
                     WithJsonSchema(DURATION_JSON_SCHEMA)]
"""Seconds as a float; accepts ``500ms``/``10s``/``5m`` or a bare number of seconds."""


def positive(field: str) -> Any:
    """A pydantic field validator for a model body: ``_positive_x = positive("x")``.

    Rejects a value of 0 or less with ``FIELD must be greater than 0`` (a zero timeout or
    window would make a check fail at once or a budget never count), so every such rule
    reads alike and lives once.
    """

    def check(cls: type, value: float) -> float:
        if value <= 0:
            raise ValueError(f"{field} must be greater than 0")
        return value

    return field_validator(field)(check)

