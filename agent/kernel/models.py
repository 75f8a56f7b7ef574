"""The bases the engine and every plugin share: frozen config models, per-process clients.

They live in the kernel, not in ``checks``, because the config, the engine, the actions
and the notification channels build on them alike; ``checks.base`` re-exports them for
the probe modules.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Frozen(BaseModel):
    """Base of every config model: unknown keys are errors, values never change after load."""

    # allow_inf_nan=False: a NaN or infinite number in a config is an error, never a
    # threshold that every comparison fails (a NaN budget would never block).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, allow_inf_nan=False)



class Resources:
    """Clients shared by all probes of one process, created on first use and closed once.

    ``shared("docker", factory)`` returns the same object to every container check, so a
    hundred container checks use one Docker connection pool. ``close`` runs each
    registered closer (sync or async) at shutdown.
    """

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._closers: list[Callable[[], Any]] = []

    def shared(self, key: str, factory: Callable[[], T], closer: Callable[[T], Any] | None = None) -> T:
        """Return the object stored under ``key``, creating it with ``factory`` the first time."""
        if key not in self._items:
            item = factory()
            self._items[key] = item
            if closer is not None:
                self._closers.append(lambda: closer(item))
        value: T = self._items[key]
        return value

    async def close(self) -> None:
        """Close every shared client; errors are swallowed (we are shutting down)."""
        closers, self._closers, self._items = self._closers, [], {}
        for closer in reversed(closers):
            try:
                outcome = closer()
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:  # noqa: S112 - best effort at shutdown
                continue


@dataclass(frozen=True)
class Thresholds:
    """How many consecutive runs move a check down or back up, and what counts as flapping."""

    failure_threshold: int = 3
    success_threshold: int = 2
    flap_window: float = 600.0
    flap_threshold: int = 6
