"""The outbox: notifications are written to the store first and sent later, by a dispatcher.

Why an outbox rather than "send, and retry in a loop": the remediation path only ever
does a local SQLite insert (:meth:`Notifier.notify`), so a receiver that is slow, down or
misconfigured cannot hold up a restart; and because the row exists before any attempt,
a notification survives a crash or a restart of the agent while it is pending.

One row per (notice, channel). The row holds the channel's *name* and the notice (with
the config's secrets masked), never the channel's URL, key or password; its ``last_error``
is built by the channel from status codes and exception types and masked again.

The :class:`Dispatcher` claims due rows (a compare-and-set on a claim token, so a daemon
and a cron run sharing the store never send the same row at once), sends each through its
channel, and then:

* success: ``sent``;
* a :class:`~agent.notify.channels.DeliveryError`: due again after the next delay of the
  :class:`RetryPolicy` (tenacity's exponential backoff plus random jitter, capped), or
  ``failed`` once the attempts are spent: kept, with its last error, and logged;
* a :class:`~agent.notify.channels.RejectedError` (a 4xx, refused credentials): ``failed``
  at once, since trying again cannot help.

Tenacity decides *how long* to wait; the outbox *remembers* it (``next_attempt_at``), so
a backoff is not lost with the process either. Ordering: per channel and incident
(``dedup_key``), a row is only due once every older row of the pair is sent or failed,
so a resolution can never overtake its alert. Delivery is at least once: a send cut off
by a crash (or by the shutdown grace) is sent again, and receivers can de-duplicate on
``delivery_id`` (webhook) or PagerDuty's ``dedup_key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tenacity import RetryCallState, Retrying, stop_after_attempt, wait_exponential, wait_random

from agent.config.sections import NotificationSettings
from agent.core.reloads import named
from agent.kernel.durations import format_duration
from agent.kernel.errors import StoreError
from agent.kernel.redact import Redactor
from agent.notify.channels import LOGGER, Channel, DeliveryError, HttpPoster, build_channels
from agent.notify.specs import ChannelBase, NotifyRetry
from agent.notify.templates import Notice
from agent.store.sqlite import OutboxRow, Store


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed delivery again: ``initial * 2**(n-1)`` plus up to ``jitter``, at most ``max_delay``."""

    attempts: int = 8
    initial: float = 5.0
    max_delay: float = 600.0
    jitter: float = 2.0

    @classmethod
    def from_settings(cls, settings: NotifyRetry) -> RetryPolicy:
        """The policy of ``notifications.retry``."""
        return cls(settings.attempts, settings.initial, settings.max_delay, settings.jitter)

    def next_delay(self, attempts_made: int) -> float | None:
        """Seconds until the next attempt after ``attempts_made`` failed ones; None means give up.

        Pure but for the jitter: tenacity's stop and wait strategies, evaluated on a call
        state that says how many attempts were made, and nothing slept here.
        """
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = max(1, attempts_made)
        if stop_after_attempt(self.attempts)(state):
            return None
        wait = wait_exponential(multiplier=self.initial, max=self.max_delay) + wait_random(0, self.jitter)
        return float(min(self.max_delay, wait(state)))


class ChannelMasks(Redactor):
    """The config's redactor, then the channels' own secrets (a token in a webhook URL's path,
    which a redactor built from whole values would only catch in one piece)."""

    def __init__(self, first: Redactor, secrets: Iterable[str]) -> None:
        super().__init__(s for s in secrets if len(s) >= 3)
        self.first = first

    def text(self, value: str) -> str:
        return super().text(self.first.text(value))

    def data(self, value: Any) -> Any:
        return super().data(self.first.data(value))


class Outbox:
    """Routes notices to channels and writes one outbox row per channel that takes it."""

    def __init__(self, store: Store, channels: Sequence[ChannelBase], redactor: Redactor | None = None) -> None:
        self.store = store
        self.channels = {spec.name: spec for spec in channels}
        self.redactor = redactor or Redactor()

    def enqueue(self, notice: Notice, channel: str) -> int:
        """Write ``notice`` for ``channel`` (a configured name); returns the row id. Nothing is sent here."""
        if channel not in self.channels:
            raise KeyError(f"no notification channel named {channel!r}")
        record = self.redactor.data(notice.to_record())
        return self.store.outbox_add(channel, notice.kind, notice.incident_id, notice.dedup_key, notice.severity,
                                     json.dumps(record, ensure_ascii=False))

    def route(self, notice: Notice) -> list[int]:
        """Enqueue ``notice`` for every channel whose severities and kinds take it."""
        return [self.enqueue(notice, name) for name, spec in self.channels.items()
                if spec.accepts(notice.severity, notice.kind)]


@dataclass
class DeliveryReport:
    """What :meth:`Dispatcher.deliver_due` did: rows sent, failed attempts (secret-free), sends cut
    short by its time limit, and rows still pending in the outbox afterwards (-1: unknown)."""

    sent: int = 0
    errors: list[str] = field(default_factory=list)
    interrupted: int = 0
    pending: int = 0


def default_lease(channels: Mapping[str, Channel[Any]]) -> float:
    """How long a claim holds: twice the slowest channel's timeout plus 30 s."""
    slowest = max((c.spec.timeout for c in channels.values()), default=10.0)
    return 2 * slowest + 30.0


class Dispatcher:
    """Sends due outbox rows in the background (:meth:`start`/:meth:`stop`) or on demand (:meth:`drain`).

    ``lease``: how long a claimed row is ours; a claimer that died leaves it due again after
    that (default: twice the slowest channel's timeout plus 30 s).
    """

    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel[Any]],
        policy: RetryPolicy | None = None,
        *,
        redactor: Redactor | None = None,
        clock: Callable[[], float] | None = None,
        logger: logging.Logger = LOGGER,
        poll_interval: float = 5.0,
        max_in_flight: int = 8,
        lease: float | None = None,
    ) -> None:
        self.store = store
        self.channels = dict(channels)
        self.policy = policy or RetryPolicy()
        self.redactor = redactor or Redactor()
        self.clock = clock or store.clock
        self.logger = logger
        self.poll_interval = poll_interval
        self.max_in_flight = max_in_flight
        self._fixed_lease = lease
        self.lease = lease if lease is not None else default_lease(self.channels)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: set[asyncio.Task[str | None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    def reconfigure(self, channels: Mapping[str, Channel[Any]], policy: RetryPolicy, redactor: Redactor) -> None:
        """Send with these channels, retry policy and masks from now on (a config reload).

        A row is looked up by its channel's name when it is attempted, so pending rows go to
        the new definition of their channel; a send already in flight finishes with the one it
        started with. Rows of a channel no longer here fail when attempted.
        """
        self.channels = dict(channels)
        self.policy = policy
        self.redactor = redactor
        self.lease = self._fixed_lease if self._fixed_lease is not None else default_lease(self.channels)
        self.wake()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start sending in the background (pending rows from before a restart first)."""
        if self._runner is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name="notify-dispatcher")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let sends in flight finish for ``grace`` seconds, then hand the rest back."""
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            await self._runner
            self._runner = None
        if self._tasks:
            _done, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def wake(self) -> None:
        """Look for due rows now (safe to call from any thread, or before :meth:`start`)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while not self._stopping:
            claimed = 0
            try:
                claimed = await self._fill()
                due = await asyncio.to_thread(self.store.outbox_next_due)
            except Exception as exc:  # a locked or broken store: try again at the next poll, never die
                self.logger.warning("notification outbox: %s", self.redactor.text(f"{type(exc).__name__}: {exc}"))
                due = None
            if len(self._tasks) >= self.max_in_flight or due is None:
                wait = self.poll_interval  # a finished send wakes us
            else:
                wait = min(self.poll_interval, max(0.0 if claimed else 0.05, due - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()

    async def _fill(self) -> int:
        free = self.max_in_flight - len(self._tasks)
        if free <= 0:
            return 0
        rows = await asyncio.to_thread(self._claim, free)
        for row in rows:
            task = asyncio.create_task(self._deliver(row), name=f"notify-{row.id}")
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        return len(rows)

    def _finished(self, task: asyncio.Task[str | None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.logger.error("notification dispatcher: %s", self.redactor.text(f"{type(exc).__name__}: {exc}"))

    def _claim(self, limit: int) -> list[OutboxRow]:
        now = self.clock()
        return self.store.outbox_claim(self.token, now, now + self.lease, limit)

    # ------------------------------------------------------------------ on demand

    async def run_once(self) -> int:
        """Claim what is due now, send it all, wait for the outcomes; returns how many rows."""
        rows = await asyncio.to_thread(self._claim, self.max_in_flight)
        await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def drain(self, timeout: float = 30.0) -> bool:
        """Send until nothing is pending (True) or ``timeout`` seconds pass (False), backoffs included.

        For a cron run that opened incidents and for tests; the daemon uses :meth:`start`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            sent = await self.run_once()
            due = await asyncio.to_thread(self.store.outbox_next_due)
            if due is None:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(remaining, max(0.0 if sent else 0.01, due - self.clock())))

    async def deliver_due(self, timeout: float) -> DeliveryReport:
        """Send the rows due now, each at most once, for at most ``timeout`` seconds in total; then return.

        For ``paramedic check --remediate`` (a cron run, no dispatcher task): rows due when it
        is called are claimed and sent, batch after batch (a row that was waiting behind one
        sent now comes next); a failed row gets its retry time as usual and is not tried again
        here. When ``timeout`` runs out, sends still in flight are cancelled and handed back
        (due at once, the attempt not counted). Whatever is left stays in the outbox for the
        next run or the daemon. Never raises for a channel's or the store's sake.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        since = self.clock()  # only rows due by now: a retry scheduled during this call waits for the next run
        report = DeliveryReport()
        try:
            while (remaining := deadline - loop.time()) > 0:
                now = self.clock()
                rows = await asyncio.to_thread(self.store.outbox_claim, self.token, since, now + self.lease,
                                               self.max_in_flight)
                if not rows:
                    break
                tasks = {asyncio.create_task(self._deliver(row), name=f"notify-{row.id}"): row for row in rows}
                done, late = await asyncio.wait(tasks, timeout=remaining)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
                report.interrupted += len(late)
                for task in done:
                    row = tasks[task]
                    exc = task.exception()
                    error = f"{type(exc).__name__}: {exc}" if exc is not None else task.result()
                    if error is None:
                        report.sent += 1
                    else:
                        report.errors.append(f"{row.kind} notice of incident {row.incident_id} via {row.channel}: "
                                             f"{self.redactor.text(str(error))}")
            report.pending = len(await asyncio.to_thread(self.store.outbox_rows, "pending"))
        except Exception as exc:  # a locked or broken store: the rows stay for the next run
            report.errors.append(f"outbox: {self.redactor.text(f'{type(exc).__name__}: {exc}')}")
            report.pending = -1
        return report

    # ------------------------------------------------------------------ one row

    async def _deliver(self, row: OutboxRow) -> str | None:
        """Attempt ``row`` and record the outcome; returns the attempt's (secret-free) error, None if sent."""
        try:
            error, permanent = await self._attempt(row)
        except asyncio.CancelledError:
            # shutdown cut the send short: hand the row back (it may have arrived: at least once)
            self.store.outbox_release(row.id, self.token, self.clock())
            raise
        try:
            await asyncio.to_thread(self._record, row, error, permanent)
        except StoreError as exc:
            self.logger.warning("notification %d: cannot record the outcome (%s); it will be sent again",
                                row.id, self.redactor.text(str(exc)))
        return error

    async def _attempt(self, row: OutboxRow) -> tuple[str | None, bool]:
        """Send one row: ``(None, _)`` on success, else ``(secret-free error, permanent)``."""
        channel = self.channels.get(row.channel)
        if channel is None:
            return f"channel {row.channel!r} is no longer in the config", True
        try:
            notice = Notice.from_record(json.loads(row.notice))
        except (ValueError, TypeError) as exc:
            return f"stored notice cannot be read: {type(exc).__name__}", True
        try:
            await channel.deliver(notice, row.id)
        except DeliveryError as exc:
            return self.redactor.text(channel.mask(str(exc))), exc.permanent
        except Exception as exc:  # a bug or an unexpected library error: logged, retried like any failure
            return self.redactor.text(channel.mask(f"{type(exc).__name__}: {exc}")), False
        return None, False

    def _record(self, row: OutboxRow, error: str | None, permanent: bool) -> None:
        now = self.clock()
        what = f"notification {row.id} ({row.kind} of incident {row.incident_id}, {row.severity}) via {row.channel}"
        if error is None:
            if self.store.outbox_sent(row.id, self.token, now):
                self.logger.info("%s sent (attempt %d)", what, row.attempts)
            return
        delay = None if permanent else self.policy.next_delay(row.attempts)
        if delay is None:
            if self.store.outbox_failed(row.id, self.token, now, error):
                reason = "rejected" if permanent else f"gave up after {row.attempts} attempt(s)"
                self.logger.error("%s failed, %s: %s", what, reason, error)
            return
        if self.store.outbox_retry(row.id, self.token, now + delay, error):
            self.logger.warning("%s: attempt %d of %d failed: %s; next in %s", what, row.attempts,
                                self.policy.attempts, error, format_duration(round(delay, 1 if delay >= 1 else 3)))


@dataclass(frozen=True)
class ChannelSetup:
    """Channels built from one ``notifications:`` section, ready to take over (:meth:`Notifier.prepare`)."""

    settings: NotificationSettings
    channels: Mapping[str, Channel[Any]]
    masks: ChannelMasks


def removed_error(channel: str) -> str:
    """The ``last_error`` of a pending row whose channel a reload removed."""
    return f"channel {channel!r} was removed from the config by a reload; not sent"


class Notifier:
    """The notification layer as the incident layer holds it.

    :meth:`notify` only writes outbox rows (fast, local, never raises for a channel's
    sake); the :class:`Dispatcher` sends them. All HTTP channels share one
    ``aiohttp.ClientSession`` (``session`` to pass one in; otherwise it is created on
    first use and closed by :meth:`stop`).

    A config reload is two steps: :meth:`prepare` builds the new channels (and raises
    :class:`~agent.kernel.errors.ConfigError` if one cannot be built, changing nothing), then
    :meth:`apply` makes them the ones in effect.
    """

    def __init__(
        self,
        settings: NotificationSettings,
        store: Store,
        *,
        redactor: Redactor | None = None,
        session: aiohttp.ClientSession | None = None,
        logger: logging.Logger = LOGGER,
        clock: Callable[[], float] | None = None,
        poll_interval: float = 5.0,
        lease: float | None = None,
    ) -> None:
        self.store = store
        self.http = HttpPoster(session)
        self.logger = logger
        setup = self.prepare(settings, redactor)
        self.dispatcher = Dispatcher(
            store, setup.channels, RetryPolicy.from_settings(settings.retry), redactor=setup.masks, clock=clock,
            logger=logger, poll_interval=poll_interval, lease=lease,
        )
        self._install(setup)

    def prepare(self, settings: NotificationSettings, redactor: Redactor | None = None) -> ChannelSetup:
        """Build the channels of ``settings`` (``ConfigError`` if one cannot be); nothing changes yet."""
        channels = build_channels(settings, self.http, self.logger)
        masks = ChannelMasks(redactor or Redactor(), (s for c in channels.values() for s in c.secrets()))
        return ChannelSetup(settings, channels, masks)

    def _install(self, setup: ChannelSetup) -> None:
        self.settings = setup.settings
        self.channels = dict(setup.channels)
        self.outbox = Outbox(self.store, setup.settings.channels, setup.masks)
        self.dispatcher.reconfigure(setup.channels, RetryPolicy.from_settings(setup.settings.retry), setup.masks)

    async def apply(self, setup: ChannelSetup) -> dict[str, tuple[int, ...]]:
        """Make ``setup`` the channels, routes, templates and retry settings in effect (a reload).

        New notices are routed by the new channels at once. Pending rows keep their channel
        name: a channel still there sends them with its new definition (due now if that
        changed, since a backoff earned by the old URL says nothing about the new one); the
        pending rows of a removed channel are marked ``failed`` ("removed from the config by
        a reload"), with one error line per such channel. Never raises for the store's sake.
        Returns the ids of those rows by removed channel.
        """
        changes = named(((c.name, c) for c in self.settings.channels), ((c.name, c) for c in setup.settings.channels))
        self._install(setup)
        now = self.dispatcher.clock()
        abandoned: dict[str, tuple[int, ...]] = {}
        try:
            for name in changes.changed:
                await asyncio.to_thread(self.store.outbox_due_now, name, now)
            for name in changes.removed:
                ids = tuple(await asyncio.to_thread(self.store.outbox_abandon, name, now, removed_error(name)))
                if ids:
                    abandoned[name] = ids
                    shown = ", ".join(str(i) for i in ids[:20]) + (", ..." if len(ids) > 20 else "")
                    self.logger.error(
                        "notification channel %s was removed by a config reload: %d pending notification(s) "
                        "marked failed, not sent (outbox ids %s)", name, len(ids), shown,
                        extra={"channel": name, "abandoned": list(ids)})
        except StoreError as exc:  # the dispatcher still fails them one by one when they come due
            self.logger.error("notification outbox after the reload: %s", setup.masks.text(str(exc)))
        self.dispatcher.wake()
        return abandoned

    def notify(self, notice: Notice) -> list[int]:
        """Queue ``notice`` for every channel that takes it; returns the outbox row ids."""
        ids = self.outbox.route(notice)
        if ids:
            self.dispatcher.wake()
        return ids

    async def start(self) -> None:
        """Start the background dispatcher."""
        await self.dispatcher.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the dispatcher (in-flight sends get ``grace`` seconds) and close the HTTP session."""
        await self.dispatcher.stop(grace)
        await self.http.close()

    async def drain(self, timeout: float = 30.0) -> bool:
        """Send everything pending, retries included, for at most ``timeout`` seconds."""
        return await self.dispatcher.drain(timeout)

    async def deliver_due(self, timeout: float) -> DeliveryReport:
        """Send what is due now, once, within ``timeout`` seconds (a cron run; see :meth:`Dispatcher.deliver_due`)."""
        return await self.dispatcher.deliver_due(timeout)

    def prune(self) -> int:
        """Forget sent and failed rows older than ``notifications.retention``."""
        return self.store.outbox_prune(self.dispatcher.clock() - self.settings.retention)


__all__ = [
    "ChannelMasks", "ChannelSetup", "DeliveryReport", "Dispatcher", "Notifier", "Outbox", "RetryPolicy",
    "default_lease", "removed_error",
]
