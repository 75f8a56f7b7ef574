"""The daemon's incident layer: :class:`~agent.incidents.Incidents` plus its notifier, built and run together.

Built by :meth:`agent.daemon.Daemon._start_remedy` when the config has runbooks (no
runbook, no incident): the notifier's dispatcher starts, the incident layer hears every
state transition (``Daemon.on_transition``) and every decision of the runbook engine
(``Remedy.events``), and a ticker sends reminders and response-time escalations. On
shutdown (after the engine drained and the last results were flushed) evidence still
being collected gets a few seconds, then the dispatcher stops; notices not yet sent stay
in the outbox and go out at the next start.

A SIGHUP reload gives the incident layer the new ``incidents:`` settings; notification
*channels* are built once, at start: a change to ``notifications:`` needs a restart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from agent.config import Config
from agent.evidence import EvidenceCollector
from agent.incidents import Incidents, cancel
from agent.remedy_events import SafeEvents

#: How often reminders and response-time escalations are looked for.
TICK_INTERVAL = 15.0


@dataclass
class IncidentLayer:
    """What the daemon holds: the service, its notifier, the ticker task."""

    incidents: Incidents
    notifier: Any
    ticker: asyncio.Task[None] | None = None

    def reconfigure(self, config: Config) -> None:
        """A reloaded config (channels are not rebuilt: see the module doc)."""
        self.incidents.reconfigure(config)

    def prune(self) -> int:
        """Forget old sent/failed outbox rows (the daemon's maintenance loop)."""
        return int(self.notifier.prune())

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the ticker, let evidence collections finish briefly, stop the dispatcher."""
        await cancel(self.ticker)
        self.ticker = None
        await self.incidents.drain(timeout=grace)
        await self.notifier.stop(grace)


async def start(daemon: Any) -> IncidentLayer | None:
    """Build and start the layer for ``daemon`` (which has its store and runbook engine)."""
    config: Config = daemon.config
    if not config.runbooks or daemon.store is None or daemon.remedy is None:
        return None
    from agent.notify.outbox import Notifier

    notifier = Notifier(config.notifications, daemon.store, redactor=config.redactor, clock=daemon.clock)
    incidents = Incidents(config, daemon.store, notifier, collector=EvidenceCollector(config, daemon.resources),
                          clock=daemon.clock)
    daemon.remedy.events = SafeEvents(incidents)
    daemon.on_transition.append(incidents.on_transition)
    await notifier.start()
    layer = IncidentLayer(incidents, notifier)
    layer.ticker = asyncio.create_task(incidents.run_forever(TICK_INTERVAL), name="incidents")
    return layer
