"""What one probe run produced: a frozen :class:`Result`, and the :class:`Status` order.

Status values follow the Nagios plugin convention (0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN) so the exit code of ``paramedic check`` is the status itself. *Worst* is by
``rank``: OK < WARNING < UNKNOWN < CRITICAL, so a known outage outranks a check that
could not tell.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Status(enum.IntEnum):
    """A check's verdict; the integer value is the Nagios exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def rank(self) -> int:
        """Badness order used by :func:`worst`."""
        return _RANK[self]


_RANK = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


def worst(statuses: Iterable[Status]) -> Status:
    """The worst of ``statuses`` by :attr:`Status.rank`; OK for none."""
    return max(statuses, key=lambda s: s.rank, default=Status.OK)


@dataclass(frozen=True)
class ConditionOutcome:
    """One condition evaluated over observations: did it hold, and what was the value."""

    expr: str
    ok: bool
    actual: Any
    severity: str = "critical"

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: ``{"expr", "ok", "actual"}`` (plus severity)."""
        return {"expr": self.expr, "ok": self.ok, "actual": self.actual, "severity": self.severity}


@dataclass(frozen=True)
class Result:
    """The outcome of one probe run. ``error`` names the error class when the probe failed."""

    name: str
    type: str
    status: Status
    message: str
    duration_ms: float
    observations: Mapping[str, Any] = field(default_factory=dict)
    conditions: tuple[ConditionOutcome, ...] = ()
    error: str | None = None
    started_at: float = 0.0
    attempts: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape documented for ``paramedic check --output json``."""
        return {
            "name": self.name,
            "type": self.type,
            "status": self.status.name,
            "message": self.message,
            "duration_ms": round(self.duration_ms, 3),
            "observations": dict(self.observations),
            "conditions": [c.as_dict() for c in self.conditions],
            "error": self.error,
            "attempts": self.attempts,
        }
