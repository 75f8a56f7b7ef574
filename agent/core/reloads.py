"""What a SIGHUP reload changed, as the one log line the daemon writes about it.

Pure: two configs in, a sentence and a JSON-ready record out. It names checks only by
count, runbooks and notification channels by name, and never shows a value: a channel's
URL, key or password never reaches a log line (a "changed" channel may have changed
nothing but its secret)::

    config reloaded: 3 checks (1 added, 1 changed); runbooks: web-down [changed];
    guardrails changed; notification channels: hook [changed], ops [added],
    old [removed, 2 pending marked failed]; notification retry/retention changed
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.config.model import Config


@dataclass(frozen=True)
class Named:
    """Items matched by name between two configs: which were added, changed, removed or kept."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def differs(self) -> bool:
        """Whether anything was added, changed or removed."""
        return bool(self.added or self.changed or self.removed)

    def as_dict(self) -> dict[str, list[str]]:
        """JSON shape for the log line's ``reload`` field."""
        return {"added": list(self.added), "changed": list(self.changed), "removed": list(self.removed),
                "unchanged": list(self.unchanged)}


def named(old: Iterable[tuple[str, object]], new: Iterable[tuple[str, object]]) -> Named:
    """Compare ``(name, definition)`` pairs: new order for what is there, old order for what went."""
    before, after = dict(old), dict(new)
    return Named(
        added=tuple(n for n in after if n not in before),
        changed=tuple(n for n in after if n in before and before[n] != after[n]),
        removed=tuple(n for n in before if n not in after),
        unchanged=tuple(n for n in after if n in before and before[n] == after[n]),
    )


def _listing(changes: Named, notes: Mapping[str, str] | None = None) -> str:
    """``hook [changed], ops [added], old [removed, 2 pending marked failed], log``; ``none`` if empty."""
    notes = notes or {}

    def label(name: str, mark: str) -> str:
        said = ", ".join(m for m in (mark, notes.get(name)) if m)
        return f"{name} [{said}]" if said else name

    items = [*(label(n, "changed") for n in changes.changed), *(label(n, "added") for n in changes.added),
             *(label(n, "removed") for n in changes.removed), *(label(n, "") for n in changes.unchanged)]
    return ", ".join(items) or "none"


def summary(old: Config, new: Config, *, notifications_active: bool,
            abandoned: Mapping[str, Iterable[int]] | None = None) -> tuple[str, dict[str, Any]]:
    """The reload's log message (after ``config reloaded: ``) and its structured record.

    ``notifications_active``: whether the daemon sends notices under the new config (it has
    an incident layer); ``abandoned``: ids of pending rows of removed channels marked failed.
    """
    checks = named(((c.name, c) for c in old.checks), ((c.name, c) for c in new.checks))
    books = named(((b.name, b) for b in old.runbooks), ((b.name, b) for b in new.runbooks))
    channels = named(((c.name, c) for c in old.notifications.channels),
                     ((c.name, c) for c in new.notifications.channels))
    dropped = {name: len(list(ids)) for name, ids in (abandoned or {}).items()}
    counts = [f"{len(getattr(checks, k))} {k}" for k in ("added", "changed", "removed") if getattr(checks, k)]
    parts = [f"{len(new.checks)} checks" + (f" ({', '.join(counts)})" if counts else ""),
             f"runbooks: {_listing(books)}"]
    guardrails_changed = old.guardrails != new.guardrails or old.maintenance != new.maintenance
    if guardrails_changed:
        parts.append("guardrails changed")
    old_n, new_n = old.notifications, new.notifications
    delivery_changed = (old_n.retry, old_n.retention) != (new_n.retry, new_n.retention)
    incidents_changed = old.incidents != new.incidents
    if notifications_active:
        notes = {name: f"{count} pending marked failed" for name, count in dropped.items() if count}
        parts.append(f"notification channels: {_listing(channels, notes)}")
        if delivery_changed:
            parts.append("notification retry/retention changed")
        if incidents_changed:
            parts.append("incident settings changed")
    elif new.notifications.channels or channels.removed:
        parts.append("notifications and incidents not in use (no runbooks)")
    record = {
        "checks": {k: len(v) for k, v in checks.as_dict().items()},
        "runbooks": books.as_dict(),
        "channels": channels.as_dict(),
        "abandoned": dropped,
        "guardrails_changed": guardrails_changed,
        "notification_delivery_changed": delivery_changed,
        "incident_settings_changed": incidents_changed,
        "notifications_active": notifications_active,
    }
    return "; ".join(parts), record
