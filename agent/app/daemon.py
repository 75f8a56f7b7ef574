"""``paramedic run``: the long-running agent.

Wiring only; each part has its own module: the scheduler paces probes, the runner turns
a probe run into a Result, the store advances state atomically, metrics and the HTTP
server expose it, the Docker event listener turns container events into immediate runs.

Results are written in batches (every ``scheduler.flush_interval``, default 100 ms): one
SQLite transaction per batch is what lets a thousand probes a second cost little. A result
that may change a check's state (a failure, or a pass of a check that is not OK) is
written at once instead, so detection and remediation never wait for the next batch.

A check that seems to be failing is looked at again sooner than its interval (a retry
after a failed run, a hedged run beside one left unanswered: agent.core.pacing). While a
runbook step is being applied to a check's target (a restart), the check's scheduled runs
are held: probing a container while Docker re-creates its network measures nothing and,
on a bridge network, leaves the host's ARP entry for it unresolved for a second.

Signals: SIGTERM/SIGINT stop scheduling, let in-flight probes finish or time out, flush,
and exit 0. SIGHUP reloads the config: unchanged checks keep their state, probe and phase;
runbooks, guardrails, notification channels and incident settings are the new ones from
the next decision and the next notice on (the engine's ladders and journal are in the
store and carry over; an action in flight finishes as it started); an invalid new config,
or a notification channel that cannot be built, is logged with every problem and the old
config keeps running, all of it. One log line says what the reload changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.app.metrics import Metrics
from agent.config.model import Config, load_config
from agent.core.deploys import image_records
from agent.core.pacing import BUSY_LATENESS, RecentLatency, another_run_helps, hedge_delay
from agent.core.state import CheckState, Health, Transition
from agent.kernel.errors import ConfigError, StoreError
from agent.kernel.logs import LOGGER, RedactingFilter
from agent.kernel.models import Resources, Thresholds
from agent.kernel.results import Result, Status
from agent.runtime.runner import ProbeRunner, build_probe, preload
from agent.runtime.scheduler import Scheduler
from agent.store.sqlite import Retention, Store

if TYPE_CHECKING:
    from agent.app.incident_wiring import IncidentLayer
    from agent.runtime.events import DockerEventListener
    from agent.runtime.remedy import Remedy
from checks.base import CheckSpec, Probe

#: Results kept in memory while the store cannot be written (100 s at 1,000 probes/s); older ones go.
MAX_PENDING = 100_000
TransitionHook = Callable[[Transition, Result | None], Any]


class _Unbuildable(Probe[CheckSpec]):
    """Stands in for a probe whose constructor failed (e.g. a missing CA file).

    Every run raises that error again, so the check reports it as its result (UNKNOWN for
    an agent-side error), as ``paramedic check`` does, instead of the daemon refusing to
    start or a SIGHUP reload dying half-way through (habit 6).
    """

    def __init__(self, spec: CheckSpec, error: Exception) -> None:
        super().__init__(spec)
        self.error = error

    async def observe(self) -> dict[str, Any]:
        raise self.error.with_traceback(None)


@dataclass
class CheckSlot:
    """One configured check inside the daemon: its spec, its probe, its latest result."""

    spec: CheckSpec
    probe: Probe[Any]
    last: Result | None = None
    in_flight: int = 0  # runs of this check going on now (scheduled and hedged)
    recent: RecentLatency = field(default_factory=RecentLatency)  # passing runs' wall times


@dataclass
class Daemon:
    """The agent. Build with a loaded config; ``await run()`` until stopped."""

    config: Config
    config_path: Path | None = None
    store: Store | None = None
    redacting: RedactingFilter | None = None
    clock: Callable[[], float] = time.time
    metrics: Metrics = field(default_factory=Metrics)
    on_transition: list[TransitionHook] = field(default_factory=list)
    #: Freeze the garbage collector's view of everything built at start (``gc.freeze``):
    #: for the process that runs only the daemon (``paramedic run`` sets it), not for one
    #: that embeds it, since it is process-wide.
    freeze_gc: bool = False
    #: ``paramedic run --dry-run``: decide and record every runbook step, apply none.
    dry_run: bool = False

    def __post_init__(self) -> None:
        self.resources = Resources()
        self.runner = ProbeRunner(self.config.redactor, clock=self.clock)
        self.checks: dict[str, CheckSlot] = {}
        self.states: dict[str, CheckState] = {}
        self._pending: list[Result] = []
        self._thresholds_cache: tuple[Config, dict[str, Thresholds]] | None = None
        self._stop = asyncio.Event()
        self._reload_event = asyncio.Event()
        self._flush_stop = asyncio.Event()
        self._flush_wake = asyncio.Event()  # set by _flush_stop's setter and by results that cannot wait
        self.started_at = self.clock()
        self.last_flush = self.clock()
        self.scheduler: Scheduler | None = None
        self._background: list[asyncio.Task[Any]] = []
        self.events: DockerEventListener | None = None  # when some check watches Docker events
        self.remedy: Remedy | None = None  # the runbook engine, when the config has runbooks
        self.incidents: IncidentLayer | None = None  # the incident layer, with the runbook engine

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`stop`); returns the process exit code."""
        self._install_signals()  # first: a SIGHUP or SIGTERM during start-up must not kill us
        if self.store is None:
            self.store = Store(self.config.store_path())
        self._apply_redactor()
        self.states = self.store.states()
        for name, state in self.states.items():
            self.metrics.up.labels(name).set(0 if state.health.value == "DOWN" else 1)
        self.scheduler = Scheduler(
            self._run_check, self.config.scheduler.max_in_flight, self.config.scheduler.jitter,
            on_lag=self.metrics.lag.observe, on_skip=self.metrics.skipped.inc,
        )
        self._install_checks(self.config.checks)
        server = await self._start_server()
        flusher = asyncio.create_task(self._flush_loop(), name="flush")
        self._background.append(asyncio.create_task(self._maintenance_loop(), name="maintenance"))
        self._background.append(asyncio.create_task(self._reload_loop(), name="reload"))
        await self._start_events()
        await self._start_remedy()
        if self.freeze_gc:
            # Imports, config, probes and the HTTP app live as long as the process: out of
            # the cyclic collector's sight, its full collections scan only what probes
            # allocate. With a thousand checks they stalled every probe for 60-200 ms.
            gc.collect()
            gc.freeze()
        LOGGER.info("paramedic running: %d checks, store %s", len(self.checks), self.store.path)
        sched_task = asyncio.create_task(self.scheduler.run_forever(), name="scheduler")
        await self._stop.wait()
        LOGGER.info("stopping: waiting for %d probe(s) in flight", self.scheduler.in_flight())
        self.scheduler.stop()
        await sched_task
        if self.remedy is not None:
            await self.remedy.drain()  # an action in flight finishes and is journaled
        self._flush_stop.set()
        self._flush_wake.set()
        await flusher  # not cancelled: a batch being written is announced (transitions, hooks)
        await self._shutdown(server)
        LOGGER.info("stopped")
        return 0

    def stop(self) -> None:
        """Ask the daemon to stop gracefully (what SIGTERM does)."""
        self._stop.set()

    async def _shutdown(self, server: Any) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.events is not None:
            await self.events.stop()
        await self._flush()
        if self.incidents is not None:
            await self.incidents.stop()  # after the last flush: its notices are queued first
        for slot in self.checks.values():
            await slot.probe.close()
        await self.resources.close()
        if server is not None:
            await server.stop()
        if self.store is not None:
            self.store.close()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _apply_redactor(self) -> None:
        if self.redacting is not None:
            self.redacting.redactor = self.config.redactor
        self.runner.redactor = self.config.redactor

    # ------------------------------------------------------------------ checks

    def _install_checks(self, specs: tuple[CheckSpec, ...]) -> None:
        for spec in specs:
            self.checks[spec.name] = CheckSlot(spec, self._build(spec))
        assert self.scheduler is not None
        self.scheduler.set_checks({s.name: s.interval for s in specs})

    def _build(self, spec: CheckSpec) -> Probe[Any]:
        try:
            probe = build_probe(spec, self.resources)
            preload([probe])  # at start or reload, not on the loop while other probes time themselves
            return probe
        except Exception as exc:
            LOGGER.error("check %s: cannot set up its probe: %s", spec.name, exc, extra={"check": spec.name})
            return _Unbuildable(spec, exc)

    async def _run_check(self, name: str) -> None:
        slot = self.checks.get(name)
        if slot is None:
            return
        if self.remedy is not None and self.remedy.holds(name):
            LOGGER.debug("check %s: run held while a runbook step is applied to its target", name,
                         extra={"check": name})
            self.metrics.held.labels(name).inc()
            return
        slot.in_flight += 1
        hedge = self._arm_hedge(slot)
        self.metrics.in_flight.inc()
        try:
            result = await self.runner.run(slot.spec, slot.probe)
        finally:
            self.metrics.in_flight.dec()
            slot.in_flight -= 1
            if hedge is not None:
                hedge.cancel()
        if self.checks.get(name) is not slot:
            return  # reloaded away while running
        self._take(slot, result)
        if result.status is Status.CRITICAL:
            self._retry_soon(slot)

    def _take(self, slot: CheckSlot, result: Result) -> None:
        """A finished run's result joins the next flush (at once if it may change the state)."""
        slot.last = result
        self.metrics.observe_result(result)
        self._pending.append(result)
        passing = result.status in (Status.OK, Status.WARNING)  # as agent.core.state counts them
        if passing and result.observations.get("source") != "docker-event":
            slot.recent.add(result.duration_ms / 1000)
        state = self.states.get(result.name)
        if result.status is Status.CRITICAL or (passing and state is not None and state.health is not Health.OK):
            self._flush_wake.set()

    def _may_hedge(self, slot: CheckSlot) -> bool:
        """A check that is OK or FAILING, with fewer runs in flight than failures still needed."""
        state = self.states.get(slot.spec.name)
        if state is not None and state.health not in (Health.OK, Health.FAILING):
            return False  # DOWN: remediation's business now; RECOVERING: one failure decides anyway
        failures = state.failures if state is not None else 0
        return another_run_helps(slot.spec.failure_threshold, failures, slot.in_flight)

    def _arm_hedge(self, slot: CheckSlot) -> asyncio.TimerHandle | None:
        """Start another run alongside this one if it is still unanswered after the hedge delay."""
        if self.scheduler is None or not self._may_hedge(slot):
            return None
        spec = slot.spec
        delay = hedge_delay(spec.retry_delay, spec.timeout, slot.recent.slowest())
        if delay >= spec.timeout:
            return None  # it ends (or times out) before a hedge would start
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        return loop.call_at(due, self._hedge, slot, delay, due)

    def _hedge(self, slot: CheckSlot, delay: float, due: float) -> None:
        name = slot.spec.name
        if self.checks.get(name) is not slot or self.scheduler is None or not self._may_hedge(slot):
            return
        if asyncio.get_running_loop().time() - due > BUSY_LATENESS:
            return  # the loop is behind: the run looks slow because the agent is busy
        if self.remedy is not None and self.remedy.holds(name):
            return
        if self.scheduler.hedge(name):
            self.metrics.hedged.labels(name).inc()
            LOGGER.debug("check %s: no answer after %.2fs, another run alongside", name, delay,
                         extra={"check": name})

    def _retry_soon(self, slot: CheckSlot) -> None:
        """After a failure that does not make the check DOWN yet, run it again after its
        ``retry_interval`` rather than a whole interval later (the state is the last flushed
        one), unless runs already in flight will bring the failures still needed."""
        spec = slot.spec
        state = self.states.get(spec.name)
        if state is not None and state.health not in (Health.OK, Health.FAILING):
            return  # DOWN already, or RECOVERING (one failure makes it DOWN): the interval is right
        failures = (state.failures if state is not None else 0) + 1
        if failures >= spec.failure_threshold:
            return  # this failure makes it DOWN
        if not another_run_helps(spec.failure_threshold, failures, slot.in_flight):
            return  # hedged runs in flight will decide
        if self.scheduler is not None:
            self.scheduler.retry_soon(spec.name, spec.retry_delay)

    def submit(self, result: Result) -> None:
        """Take a result that did not come from a probe run (a Docker event) into the pipeline."""
        slot = self.checks.get(result.name)
        if slot is None:
            return
        self._take(slot, result)

    def trigger(self, name: str, reason: str) -> None:
        """Run check ``name`` now (e.g. its container just died)."""
        if self.scheduler is not None and name in self.checks:
            LOGGER.debug("check %s: run now (%s)", name, reason)
            self.scheduler.trigger(name)

    # ------------------------------------------------------------------ results -> state

    async def _flush_loop(self) -> None:
        """Write pending results every ``flush_interval``, or at once when a result cannot wait,
        until shutdown asks it to end."""
        while not self._flush_stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wake.wait(), self.config.scheduler.flush_interval)
            self._flush_wake.clear()
            try:
                await self._flush()
            except StoreError as exc:
                LOGGER.error("store write failed, will retry: %s", exc)
            except Exception:
                LOGGER.exception("unexpected error while writing results; will retry")

    async def _reload_loop(self) -> None:
        """Apply SIGHUP reloads one at a time, outside the signal handler; never dies."""
        while True:
            await self._reload_event.wait()
            self._reload_event.clear()
            try:
                await self.reload()
            except Exception:
                LOGGER.exception("reload failed; the running config stays")

    async def _flush(self) -> None:
        if not self._pending or self.store is None:
            self.last_flush = self.clock()
            return
        batch, self._pending = self._pending, []
        try:
            states, transitions = await asyncio.to_thread(self.store.apply_results, batch, self._thresholds())
        except StoreError:
            self._pending[:0] = batch  # keep them for the next flush: nothing is lost...
            if len(self._pending) > MAX_PENDING:  # ...unless the store stays broken for long
                dropped = len(self._pending) - MAX_PENDING
                del self._pending[:dropped]
                LOGGER.error("store unwritable: dropped the %d oldest unwritten results", dropped)
            raise
        self.states.update(states)
        self.last_flush = self.clock()
        latest = {r.name: r for r in batch}
        for t in transitions:
            self._announce(t, latest.get(t.check))
        await self._record_deploys(batch)
        if self.remedy is not None:
            for result in batch:
                self.remedy.on_result(result, self.states.get(result.name))

    async def _record_deploys(self, batch: list[Result]) -> None:
        """Remember images of watched containers (rollback needs the previous one)."""
        if self.store is None:
            return
        records = image_records({n: s.spec for n, s in self.checks.items()}, batch)
        if not records:
            return  # no check of the batch saw a running container's image
        try:
            deploys = await asyncio.to_thread(self.store.record_images, records)
        except StoreError as exc:
            LOGGER.error("recording container images failed: %s", exc)
            return
        if deploys:
            LOGGER.info("recorded %d image change(s) of watched containers", deploys)

    def _thresholds(self) -> dict[str, Thresholds]:
        """``config.thresholds()``, built once per config rather than ten times a second."""
        cached = self._thresholds_cache
        if cached is None or cached[0] is not self.config:
            cached = self._thresholds_cache = (self.config, self.config.thresholds())
        return cached[1]

    def _announce(self, t: Transition, result: Result | None) -> None:
        self.metrics.observe_transition(t)
        state = self.states.get(t.check)
        # a batch can hold several transitions of one check: only the last one ends in the
        # state now stored, so only that one may use its label (FAILING(2), RECOVERING(1))
        label = state.label if state is not None and state.visible is t.after else t.after.value
        detail = result.message if result is not None else ""
        level = 30 if t.after.value in ("FAILING", "DOWN", "FLAPPING") else 20
        LOGGER.log(level, "check %s: %s -> %s (%s: %s)", t.check, t.before.value, label, t.status.name, detail,
                   extra={"check": t.check, "from": t.before.value, "to": t.after.value, "status": t.status.name})
        for hook in self.on_transition:
            try:
                hook(t, result)
            except Exception:
                LOGGER.exception("transition hook failed for %s", t.check)

    async def _maintenance_loop(self) -> None:
        """Prune old results every few minutes."""
        while True:
            await asyncio.sleep(300)
            if self.store is not None:
                retention = Retention(self.config.store.retention, self.config.store.max_results_per_check)
                try:
                    await asyncio.to_thread(self.store.prune, retention)
                except StoreError as exc:
                    LOGGER.error("pruning results failed: %s", exc)
                if self.incidents is not None:
                    try:
                        await asyncio.to_thread(self.incidents.prune)
                    except StoreError as exc:
                        LOGGER.error("pruning the notification outbox failed: %s", exc)

    # ------------------------------------------------------------------ reload

    def request_reload(self) -> None:
        """SIGHUP: reload soon, in the reload task (not inside the signal handler)."""
        self._reload_event.set()

    async def reload(self) -> bool:
        """Load the config file again; apply it if valid, keep the old one otherwise.

        Everything that can refuse is done before anything changes: the file is validated
        and the new notification channels are built (a CA file that cannot be read), so a
        rejected reload leaves the whole running config in place.
        """
        if self.config_path is None:
            return False
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
            setup = await asyncio.to_thread(self._prepare_notifications, new)
        except ConfigError as exc:
            LOGGER.error("reload rejected, keeping the running config: %s", "; ".join(exc.problems),
                         extra={"problems": exc.problems})
            return False
        old = self.config
        abandoned = await self._swap(new, setup)
        from agent.core.reloads import summary

        text, record = summary(old, new, notifications_active=self.incidents is not None, abandoned=abandoned)
        LOGGER.info("config reloaded: %s", text, extra={"reload": record})
        return True

    def _prepare_notifications(self, new: Config) -> Any:
        """The new config's notification channels, built (``ConfigError`` if one cannot be).

        With an incident layer running: its notifier's ``ChannelSetup``, applied by
        :meth:`_swap`. Without one but with runbooks in the new config, the layer starts
        after the swap: its channels are tried here, so that start cannot fail half-way.
        """
        if self.incidents is not None:
            return self.incidents.prepare(new)
        if new.runbooks and self.store is not None:
            from agent.notify.channels import HttpPoster, build_channels

            build_channels(new.notifications, HttpPoster())  # no session is opened until a send
        return None

    async def _swap(self, new: Config, setup: Any = None) -> dict[str, tuple[int, ...]]:
        """Make ``new`` the running config; returns the pending notices marked failed, by removed channel."""
        old = self.config
        old_specs = {name: slot.spec for name, slot in self.checks.items()}
        new_specs = {s.name: s for s in new.checks}
        removed = set(old_specs) - set(new_specs)
        for name in removed:
            await self.checks.pop(name).probe.close()
            self.metrics.forget(name)
            self.states.pop(name, None)
        if removed and self.store is not None:
            await asyncio.to_thread(self.store.forget_checks, new_specs)
        for name, spec in new_specs.items():
            if old_specs.get(name) != spec:
                if name in self.checks:
                    await self.checks[name].probe.close()
                self.checks[name] = CheckSlot(spec, self._build(spec))
        if new.server != self.config.server:
            LOGGER.warning("server.listen changed: takes effect after a restart")
        self.config = new
        abandoned: dict[str, tuple[int, ...]] = {}
        if self.remedy is not None:
            self.remedy.reconfigure(new)
            if new.runbooks != old.runbooks and new.runbooks:
                self._background.append(asyncio.create_task(self.remedy.executor.warm(new.runbooks), name="warm-up"))
        if self.incidents is not None:
            abandoned = await self.incidents.reconfigure(new, setup or self.incidents.prepare(new))
        self._apply_redactor()
        assert self.scheduler is not None
        self.scheduler.set_checks({s.name: s.interval for s in new.checks})
        if self.events is not None:
            self.events.update(self)
        else:
            await self._start_events()  # the config's first container checks came with this reload
        if self.remedy is None and new.runbooks:
            LOGGER.info("the config has runbooks now: starting the runbook engine and the incident layer")
            try:
                await self._start_remedy()
            except Exception:  # the rest of the reload is applied: say what is missing, do not undo it
                LOGGER.exception("starting the runbook engine failed; runbooks take effect after a restart")
        return abandoned

    # ------------------------------------------------------------------ optional parts

    async def _start_server(self) -> Any:
        if not self.config.server.listen:
            return None
        from agent.app.server import StatusServer

        server = StatusServer(self)
        await server.start(self.config.server.listen)
        return server

    async def _start_remedy(self) -> None:
        """Build the runbook engine and reconcile actions a previous run was killed in.

        At start, or at the reload that brings the config's first runbook. A reload that
        removes every runbook keeps both (the engine idle, open incidents still tracked).
        """
        if not self.config.runbooks or self.store is None:
            return
        from agent.runtime.executor import Executor
        from agent.runtime.remedy import Remedy
        from remediations.base import ActionContext

        store = self.store
        context = ActionContext(
            resources=self.resources, operator_stops=store.operator_stops, image_history=store.image_history,
            expect_events=self._expect_events,
        )
        from agent.app import incident_wiring
        from agent.runtime.remedy_events import SafeEvents

        executor = Executor(store, context, self.config.redactor, self.clock)
        layer = incident_wiring.build(self.config, store, self.resources, self.clock)
        self.remedy = Remedy(self.config, store, executor, self.check_now, dry_run=self.dry_run, clock=self.clock,
                             events=SafeEvents(layer.incidents))
        self.on_transition.append(layer.incidents.on_transition)
        self._background.append(asyncio.create_task(executor.warm(self.config.runbooks), name="warm-up"))
        await layer.start()
        self.incidents = layer
        await executor.reconcile(self.check_now)

    async def check_now(self, name: str) -> Result:
        """Run check ``name`` once, outside the schedule; the result joins the pipeline."""
        slot = self.checks[name]
        result = await self.runner.run(slot.spec, slot.probe)
        if self.checks.get(name) is slot:
            self._take(slot, result)
        return result

    def _expect_events(self, container: str, seconds: float) -> None:
        """Tell the event listener, if one runs now, that the agent itself is about to stop or
        restart ``container`` (looked up at each action: a reload may start the listener later)."""
        if self.events is not None:
            self.events.expect(container, seconds)

    async def _start_events(self) -> None:
        if not any(s.watches_docker_events for s in self.config.checks):
            return
        from agent.runtime.events import DockerEventListener

        self.events = DockerEventListener(self)
        await self.events.start()

    # ------------------------------------------------------------------ views

    def healthy(self, now: float | None = None) -> tuple[bool, str]:
        """Is the agent alive: the scheduler loop ticked and results were flushed recently."""
        now = self.clock() if now is None else now
        if self.scheduler is None:
            return False, "starting"
        loop_age = asyncio.get_running_loop().time() - self.scheduler.last_tick
        flush_age = now - self.last_flush
        limit = max(5.0, 3 * self.config.scheduler.flush_interval)
        if loop_age > 5.0:
            return False, f"scheduler has not ticked for {loop_age:.1f}s"
        if flush_age > limit + 10:
            return False, f"results have not been written for {flush_age:.1f}s"
        return True, "ok"

    def snapshot(self) -> list[dict[str, Any]]:
        """Each check's state, since when, and last result (JSON-ready) for the API."""
        out = []
        for name, slot in self.checks.items():
            state = self.states.get(name)
            out.append({
                "name": name, "type": slot.spec.type, "target": self.config.redactor.text(slot.spec.target()),
                "tags": list(slot.spec.tags), "interval_s": slot.spec.interval,
                "state": state.label if state else "PENDING", "health": state.visible.value if state else "PENDING",
                "since": state.since if state else None,
                "consecutive_failures": state.failures if state else 0,
                "last_result": slot.last.as_dict() | {"started_at": slot.last.started_at} if slot.last else None,
            })
        return out
