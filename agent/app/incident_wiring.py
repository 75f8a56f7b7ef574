"""The daemon's incident layer: :class:`~agent.runtime.incidents.Incidents` plus its notifier, built and run together.

Built by :meth:`agent.app.daemon.Daemon._start_remedy` when the config has runbooks (no
runbook, no incident), before the runbook engine, which gets the incidents as its
``events`` through its constructor: the incident layer hears every state transition
(``Daemon.on_transition``) and every decision of the engine; then the notifier's
dispatcher starts and a ticker sends reminders and response-time escalations. On
shutdown (after the engine drained and the last results were flushed) evidence still
being collected gets a few seconds, then the dispatcher stops; notices not yet sent stay
in the outbox and go out at the next start.

A SIGHUP reload is applied in two steps, so a channel that cannot be built rejects the
whole reload instead of leaving half of it applied: :meth:`IncidentLayer.prepare` builds
the new channels before the daemon changes anything, :meth:`IncidentLayer.reconfigure`
then gives the incident layer the new ``incidents:`` settings and the notifier the new
channels, routes, templates and retry settings (``Notifier.apply``: pending notices of a
channel still there go to its new definition, those of a removed channel are marked
failed). A config that gains its first runbook on reload gets the layer then
(``Daemon._start_remedy``); one that loses its last runbook keeps it, so the incidents
still open resolve, remind and notify.

``paramedic check --remediate`` (a cron run) gets the same layer for the length of one
run (:func:`for_cron`, :func:`finish_cron`): it hears the run's transitions and the
engine's decisions, ticks once, gives evidence still being collected at most
:data:`CRON_EVIDENCE_WAIT` seconds, then sends what is due in the outbox for at most
:data:`CRON_DELIVERY_BUDGET` seconds (no dispatcher task: ``Notifier.deliver_due``).
What is not delivered stays in the outbox, with its retry time, for the next run or the
daemon. The incident's state is in the store, so the next run resolves what this one opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config.model import Config
from agent.kernel.errors import ConfigError
from agent.kernel.logs import LOGGER
from agent.runtime.evidence import EvidenceCollector
from agent.runtime.incidents import Incidents, cancel

if TYPE_CHECKING:
    from agent.kernel.models import Resources
    from agent.runtime.outbox import ChannelSetup, DeliveryReport
    from agent.store.sqlite import Store

#: How often reminders and response-time escalations are looked for.
TICK_INTERVAL = 15.0
#: A cron run waits at most this long for evidence still being collected (then the alert goes without it).
CRON_EVIDENCE_WAIT = 10.0
#: A cron run spends at most this long, in total, delivering notices; the rest waits in the outbox.
CRON_DELIVERY_BUDGET = 15.0


@dataclass
class IncidentLayer:
    """What the daemon holds: the service, its notifier, the ticker task."""

    incidents: Incidents
    notifier: Any
    ticker: asyncio.Task[None] | None = None

    def prepare(self, config: Config) -> ChannelSetup:
        """Build ``config``'s notification channels; ``ConfigError`` if one cannot be. Changes nothing."""
        setup: ChannelSetup = self.notifier.prepare(config.notifications, config.redactor)
        return setup

    async def reconfigure(self, config: Config, setup: ChannelSetup) -> dict[str, tuple[int, ...]]:
        """A reloaded config: new incident settings, and ``setup`` (from :meth:`prepare`) as the channels.

        Returns the ids of pending notices marked failed, by removed channel."""
        self.incidents.reconfigure(config)
        abandoned: dict[str, tuple[int, ...]] = await self.notifier.apply(setup)
        return abandoned

    def prune(self) -> int:
        """Forget old sent/failed outbox rows (the daemon's maintenance loop)."""
        return int(self.notifier.prune())

    async def start(self) -> None:
        """Start the notifier's dispatcher and the reminder/escalation ticker."""
        await self.notifier.start()
        self.ticker = asyncio.create_task(self.incidents.run_forever(TICK_INTERVAL), name="incidents")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the ticker, let evidence collections finish briefly, stop the dispatcher."""
        await cancel(self.ticker)
        self.ticker = None
        await self.incidents.drain(timeout=grace)
        await self.notifier.stop(grace)


def build(config: Config, store: Store, resources: Resources, clock: Callable[[], float]) -> IncidentLayer:
    """The daemon's layer, not started: the runbook engine is built with its incidents as its
    events (one door in for the engine's decisions) and the daemon adds its transition hook;
    then :meth:`IncidentLayer.start`."""
    from agent.runtime.outbox import Notifier

    notifier = Notifier(config.notifications, store, redactor=config.redactor, clock=clock)
    incidents = Incidents(config, store, notifier, collector=EvidenceCollector(config, resources), clock=clock)
    return IncidentLayer(incidents, notifier)


def for_cron(config: Config, store: Store, resources: Resources) -> tuple[IncidentLayer, list[str]]:
    """The layer for one ``check --remediate`` run (no dispatcher, no ticker), and warnings.

    A channel that cannot be built (an unreadable ``ca_file``) is a warning: incidents are
    still tracked, but this run queues no notices."""
    from agent.runtime.outbox import Notifier

    warnings: list[str] = []
    notifier: Notifier | None = None
    try:
        notifier = Notifier(config.notifications, store, redactor=config.redactor)
    except ConfigError as exc:
        problems = "; ".join(config.redactor.text(str(p)) for p in exc.problems) or config.redactor.text(str(exc))
        warnings.append(f"notifications disabled for this run: {problems}")
    incidents = Incidents(config, store, notifier, collector=EvidenceCollector(config, resources))
    return IncidentLayer(incidents, notifier), warnings


async def finish_cron(layer: IncidentLayer, config: Config) -> DeliveryReport | None:
    """End of a cron run: reminders/escalations due, evidence (bounded), then one bounded delivery.

    Returns what the delivery did (None without a notifier). Raises nothing it can avoid:
    the caller still wraps it, since a notification problem must never change the exit code."""
    try:
        layer.incidents.tick()
    except Exception:
        LOGGER.exception("incident reminders/escalations failed; the next run tries again")
    wait = min(CRON_EVIDENCE_WAIT, config.incidents.evidence.timeout + 1.0)
    await layer.incidents.drain(timeout=wait, cancel_late=True)
    if layer.notifier is None:
        return None
    try:
        report: DeliveryReport = await layer.notifier.deliver_due(CRON_DELIVERY_BUDGET)
    finally:
        await layer.notifier.stop(0.0)
    return report
