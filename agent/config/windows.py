"""Validation of maintenance windows' ``cron`` and ``timezone`` (the config's half).

Next to the models that need it (:class:`agent.config.sections.MaintenanceWindow`); which
windows are active at a moment is decided in :mod:`agent.core.windows`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


def validate_cron(expr: str) -> str:
    """Return ``expr`` stripped if it is a 5-field cron expression (or an ``@`` alias) that fires.

    Raises ``ValueError`` with a readable message otherwise. Six-field expressions are
    refused: croniter would read the sixth field as seconds, cron users would not.
    """
    from croniter import croniter

    text = " ".join(expr.split())
    if text.startswith("@"):
        if text.lower() not in _ALIASES:
            raise ValueError(f"unknown cron alias {text!r} (known: {', '.join(sorted(_ALIASES))})")
    elif len(text.split()) != 5:
        raise ValueError(f"cron must have 5 fields: minute hour day-of-month month day-of-week (got {expr!r})")
    if not croniter.is_valid(text):
        raise ValueError(f"not a valid cron expression: {expr!r}")
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception:  # croniter's CroniterBadDateError: e.g. "0 0 30 2 *"
        raise ValueError(f"cron expression {expr!r} never fires") from None
    return text


def validate_timezone(name: str) -> str:
    """Return ``name`` if it is an IANA timezone (``Europe/Berlin``, ``UTC``); else ``ValueError``."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (use an IANA name such as Europe/Berlin or UTC)") from None
    return name


__all__ = ["validate_cron", "validate_timezone"]
