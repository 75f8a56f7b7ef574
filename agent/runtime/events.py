"""Docker's event stream: a watched container's event becomes an immediate probe run.

The daemon starts a :class:`DockerEventListener` when the config has a ``container``
check. A daemon thread reads the Docker SDK's blocking stream
(``client.events(decode=True, filters={"type": "container"})``) and hands every event to
the event loop with ``call_soon_threadsafe``; everything else happens on the loop.

Which events count: ``die``, ``oom``, ``health_status`` (``"health_status: unhealthy"``),
``stop``, ``kill``, ``start`` and ``restart``, about a container that at least one
container check selects (its ``selects(name, id, labels)``, fed the event's ``name``,
the full id and the Actor attributes, which hold the labels). Each such check is run now
(``daemon.trigger``) and ``paramedic_docker_events_total{event=<action>}`` counts the
event (``health_status`` without its ``: unhealthy`` suffix). ``exec_*``, ``create``,
``destroy`` and the rest are ignored, and so is anything malformed (logged at DEBUG).

Operator intent (the ``operator_stops`` table of the store; only watched containers,
keyed by container name). What Docker emits, recorded on Docker 20.10 (see
``tests/unit/fixtures/docker_events.json``)::

    docker stop          kill (signal 15), [kill (9) after the grace period], die, stop
    docker kill          kill (9), die
    docker restart       kill (15), die, stop, start, restart
    docker rm -f         kill (9), die, destroy
    docker kill -s HUP   kill (1) -- and nothing more when the process survives it
    crash / OOM          [oom], die -- then start when a restart policy restarts it

hence the rules, applied in :class:`IntentTracker`:

1. ``stop`` is an operator stop (recorded as ``"stop"``; ``docker stop`` first records
   ``"kill"`` by rule 2, then replaces it).
2. ``kill`` is an operator stop only once the container dies of it: a ``die`` of the same
   container within :data:`KILL_CONFIRM_WINDOW` seconds after a ``kill`` records
   ``"kill"``. A signal the process survives (SIGHUP to reload nginx) is never recorded.
   The price: a crash within that window after such a signal counts as an operator kill.
3. ``die`` alone (crash, OOM, a restart policy's exit) is never an operator stop.
4. ``start`` clears the record, whoever started the container (``docker restart`` thus
   ends cleared; a container recreated under the same name clears it at its start).
5. Caused by the agent: remediation code calls :meth:`DockerEventListener.expect` with the
   container's name or id (prefix of 12+ hex chars) before it stops or restarts it;
   ``stop`` and ``kill`` of that container within the window are not recorded.
6. ``docker rm -f`` leaves the record in place: the operator removed it on purpose.

Windows use the time the event reached us (monotonic clock), not Docker's timestamps.
Store writes run in event order on one worker thread, off the loop (a record and the
clear right after it must not swap places); ``stop()`` waits for them.

Latency: Docker emits ``die`` some 20-70 ms after the process exited, and the triggered
probe's inspect call then waits until dockerd has cleaned up after the container (it
holds the container's lock meanwhile: about 0.2-0.4 s for a bridge-networked container on
a busy two-core machine, tens of ms without a network). ``bench/crash_detection.py``
measures the whole path.

Reconnect: when the stream ends or fails (the Docker daemon restarted), the listener logs
once at WARNING, retries with exponential backoff (:class:`Backoff`, 0.5 s doubling to
10 s; DEBUG for every further failure) and, once connected again, logs at INFO and runs
every watched check once, because events may have been missed meanwhile.

Limits: one Docker host, the first container check's ``docker_host``; checks on another
host are served by their interval only. A reload that changes that host reconnects. A
config that had no container check at start gets no listener until the agent restarts
(the daemon creates it only at start).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent.kernel.logs import LOGGER
from agent.kernel.results import Result, Status

if TYPE_CHECKING:
    from agent.config.model import Config
    from agent.store.sqlite import Store

RELEVANT = frozenset({"die", "oom", "health_status", "stop", "kill", "start", "restart"})
#: Seconds within which a ``die`` confirms a preceding ``kill`` as an operator kill
#: (docker stop's default grace period).
KILL_CONFIRM_WINDOW = 10.0
#: Timeout of the Docker API calls made while connecting (the stream itself has none).
CONNECT_TIMEOUT = 10.0
#: How long ``stop()`` waits for the reader thread.
JOIN_TIMEOUT = 5.0
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_HEX = frozenset("0123456789abcdef")


class ContainerSelector(Protocol):
    """What the listener needs of the spec of a check that watches Docker events."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def single(self) -> bool: ...

    @property
    def docker_host(self) -> str | None: ...

    def selects(self, name: str, container_id: str, labels: Mapping[str, str]) -> bool: ...


ClientFactory = Callable[[str | None], Any]


def connect(docker_host: str | None) -> Any:
    """A ``docker.DockerClient`` for ``docker_host`` (None: the environment, as the probe does)."""
    import docker

    if docker_host is None:
        return docker.from_env(timeout=CONNECT_TIMEOUT)
    return docker.DockerClient(base_url=docker_host, timeout=CONNECT_TIMEOUT)


def effective_host(docker_host: str | None) -> str:
    """The Docker address a spec's ``docker_host`` means (None: ``DOCKER_HOST`` or the socket)."""
    return docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


# --------------------------------------------------------------------------- pure part


@dataclass(frozen=True)
class ContainerEvent:
    """One relevant container event. ``action`` is the bare verb, ``text`` Docker's own."""

    action: str
    text: str
    container_id: str
    name: str
    attributes: Mapping[str, str] = field(default_factory=dict)


def parse_event(raw: object) -> ContainerEvent | None:
    """The event if it is a relevant container event, None if irrelevant.

    Raises ``ValueError`` for something that is not a Docker event at all.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"not an event object: {type(raw).__name__}")
    if str(raw.get("Type") or "container") != "container":
        return None
    text = raw.get("Action") or raw.get("status")
    if not isinstance(text, str) or not text:
        raise ValueError("event without an action")
    action = text.split(":", 1)[0].strip()
    if action not in RELEVANT:
        return None
    actor = raw.get("Actor") or {}
    if not isinstance(actor, Mapping):
        raise ValueError("event Actor is not an object")
    container_id = actor.get("ID") or raw.get("id")
    if not isinstance(container_id, str) or not container_id:
        raise ValueError(f"{action} event without a container id")
    attributes = actor.get("Attributes") or {}
    if not isinstance(attributes, Mapping):
        raise ValueError("event Actor.Attributes is not an object")
    attrs = {str(k): str(v) for k, v in attributes.items()}
    return ContainerEvent(action, text.strip(), container_id, attrs.get("name", "").lstrip("/"), attrs)


@dataclass(frozen=True)
class Decision:
    """What one event means: checks to run now, and the operator-intent change."""

    checks: tuple[str, ...] = ()
    record: str | None = None  # an operator stop to record: "stop" or "kill"
    clear: bool = False  # the container was started: forget any operator stop


class IntentTracker:
    """The operator-intent rules of the module docstring over a stream of events.

    Pure: no I/O, the time is passed in. Holds the agent's expectations and the kills
    that wait for their ``die``; both expire and are pruned as events arrive.
    """

    def __init__(self, kill_window: float = KILL_CONFIRM_WINDOW) -> None:
        self.kill_window = kill_window
        self._expected: dict[str, float] = {}  # name or id prefix -> until
        self._kills: dict[str, float] = {}  # container id -> kill seen at

    def expect(self, container: str, seconds: float, now: float) -> None:
        """The agent is about to stop/restart ``container`` (name or id prefix)."""
        self._expected[container] = max(self._expected.get(container, 0.0), now + seconds)

    def is_expected(self, event: ContainerEvent, now: float) -> bool:
        """Whether the agent announced this container within its window."""
        for key, until in self._expected.items():
            if now <= until and (key == event.name or _id_matches(key, event.container_id)):
                return True
        return False

    def observe(self, event: ContainerEvent, now: float) -> tuple[str | None, bool]:
        """``(operator stop to record or None, clear?)`` for one event of a watched container."""
        self._prune(now)
        if event.action == "start":
            self._kills.pop(event.container_id, None)
            return None, True
        if event.action not in ("kill", "die", "stop"):
            return None, False
        if self.is_expected(event, now):
            self._kills.pop(event.container_id, None)
            return None, False
        if event.action == "kill":
            self._kills[event.container_id] = now
            return None, False
        if event.action == "die":
            return ("kill" if self._kills.pop(event.container_id, None) is not None else None), False
        self._kills.pop(event.container_id, None)
        return "stop", False

    def _prune(self, now: float) -> None:
        self._expected = {k: until for k, until in self._expected.items() if until >= now}
        self._kills = {k: at for k, at in self._kills.items() if now - at <= self.kill_window}


def _id_matches(key: str, container_id: str) -> bool:
    return len(key) >= 12 and set(key) <= _HEX and container_id.startswith(key)


def watched(specs: Iterable[Any], host: str | None) -> tuple[ContainerSelector, ...]:
    """The checks served by a listener on ``host``: those that watch Docker events
    (``CheckSpec.watches_docker_events``) on the same effective Docker host."""
    return tuple(s for s in specs if getattr(s, "watches_docker_events", False)
                 and effective_host(s.docker_host) == effective_host(host))


def first_host(specs: Iterable[Any]) -> str | None:
    """The ``docker_host`` of the first check that watches Docker events (None: the environment's)."""
    for spec in specs:
        if getattr(spec, "watches_docker_events", False):
            host: str | None = spec.docker_host
            return host
    return None


def decide(event: ContainerEvent, specs: Iterable[ContainerSelector], intent: IntentTracker, now: float) -> Decision:
    """Which checks select the event's container, and what it means for operator intent."""
    checks = tuple(s.name for s in specs if s.selects(event.name, event.container_id, event.attributes))
    if not checks:
        return Decision()
    record, clear = intent.observe(event, now)
    if "com.docker.swarm.task.id" in event.attributes:
        record = None  # Swarm stops its own task containers (deploys, rescheduling): not an operator
    return Decision(checks, record, clear)


def event_result(event: ContainerEvent, check: ContainerSelector, now: float) -> Result | None:
    """A CRITICAL result of ``check`` (a single-container one) straight from a ``die``/``oom`` event.

    Why not just trigger the probe: right after ``die``, Docker's inspect call blocks until
    it has torn the container's network down (200-400 ms on a bridge network here), so the
    event itself is the fastest trustworthy evidence that the main process is gone. The
    triggered probe runs too and confirms (or contradicts) it a moment later.
    """
    if event.action not in ("die", "oom"):
        return None
    try:
        exit_code = int(event.attributes.get("exitCode", "0"))
    except ValueError:
        exit_code = 0
    name = event.name or event.container_id[:12]
    what = "was OOM-killed" if event.action == "oom" else f"died (exit code {exit_code})"
    observations = {
        "name": name, "id": event.container_id[:12], "state": "exited", "exit_code": exit_code,
        "oom_killed": event.action == "oom", "source": "docker-event",
    }
    return Result(check.name, check.type, Status.CRITICAL, f"container {name} {what} (Docker event)", 0.0,
                  observations, started_at=now)


@dataclass
class Backoff:
    """Exponential reconnect delays: ``first``, doubling, at most ``limit``; ``reset`` on success."""

    first: float = 0.5
    limit: float = 10.0
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._next = self.first

    def next(self) -> float:
        """The delay before the next attempt."""
        delay, self._next = self._next, min(self._next * 2, self.limit)
        return delay

    def reset(self) -> None:
        """Connected: the next outage starts from ``first`` again."""
        self._next = self.first


# --------------------------------------------------------------------------- the driver


class _Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Counter(Protocol):
    def labels(self, *values: str) -> _Count: ...


class _EventMetrics(Protocol):
    @property
    def docker_events(self) -> _Counter: ...


class EventSink(Protocol):
    """What the listener needs of the daemon: the live config, a store, a way in for results."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def metrics(self) -> _EventMetrics: ...

    def submit(self, result: Result) -> None:
        """Feed a result into the pipe as if a probe had produced it."""

    def trigger(self, name: str, reason: str) -> None:
        """Run the check called ``name`` now."""


class DockerEventListener:
    """Reads Docker events in a daemon thread and acts on them on the daemon's loop.

    ``client_factory(docker_host)`` builds a Docker client (called in the thread, once per
    connection; the real one negotiates the API version). ``clock`` times the intent
    windows; ``backoff`` paces reconnects.
    """

    def __init__(
        self,
        daemon: EventSink,
        client_factory: ClientFactory = connect,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        join_timeout: float = JOIN_TIMEOUT,
    ) -> None:
        self.daemon = daemon
        self.intent = IntentTracker()
        self.connected = threading.Event()  # set while a stream is open
        self.connections = 0
        self._client_factory = client_factory
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._join_timeout = join_timeout
        self._host = first_host(daemon.config.checks)
        self._specs = watched(daemon.config.checks, self._host)
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="paramedic-intent")
        self._writes: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the reader thread; it connects (and keeps reconnecting) on its own."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._read_forever, name="paramedic-docker-events", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Close the stream, wait for the thread (bounded) and for pending store writes."""
        self._closing.set()
        self._close_stream()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self._join_timeout)
            if self._thread.is_alive():
                LOGGER.info("Docker event listener still connecting; leaving its thread behind")
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=self._join_timeout)
        self._writer.shutdown(wait=False)

    def update(self, daemon: EventSink) -> None:
        """After a config reload: new checks to serve; reconnect if the Docker host changed."""
        host = first_host(daemon.config.checks)
        self._specs = watched(daemon.config.checks, host)
        if effective_host(host) != effective_host(self._host):
            LOGGER.info("Docker event listener: switching host")
            self._host = host
            self._close_stream()

    def expect(self, container: str, seconds: float) -> None:
        """The agent itself is about to stop or restart ``container`` (name or id): its
        ``stop``/``kill`` events for the next ``seconds`` are not operator stops."""
        self.intent.expect(container, seconds, self._clock())

    def _close_stream(self) -> None:
        with self._lock:
            stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    # ------------------------------------------------------------------ the reader thread

    def _read_forever(self) -> None:
        failing = False  # since the last connection: the first failure warns, the rest are DEBUG
        while not self._closing.is_set():
            host = self._host
            connected, problem = self._read_once(host, reconnected=failing)
            if connected:
                failing = False
            if self._closing.is_set():
                break
            if problem is None:
                continue  # closed on purpose (host switch): reconnect at once
            where = effective_host(host)
            if not failing:
                LOGGER.warning("no Docker event stream from %s (%s); retrying with backoff", where, problem)
            else:
                LOGGER.debug("no Docker event stream from %s, still failing (%s)", where, problem)
            failing = True
            if self._closing.wait(self._backoff.next()):
                break

    def _read_once(self, host: str | None, reconnected: bool) -> tuple[bool, str | None]:
        """One connection, streamed until it ends: ``(connected at all, what went wrong)``;
        the problem is None when the stream was closed on purpose (stop, host switch)."""
        client: Any = None
        connected = False
        try:
            client = self._client_factory(host)
            stream = client.events(decode=True, filters={"type": "container"})
            with self._lock:
                superseded = self._closing.is_set() or host != self._host
                if not superseded:
                    self._stream = stream
            if superseded:
                with contextlib.suppress(Exception):
                    stream.close()
                return False, None
            connected = True
            self._backoff.reset()
            self.connections += 1
            self.connected.set()
            self._post(self._on_connected, host, reconnected)
            for raw in stream:
                self._post(self._on_event, raw)
            problem: str | None = "the stream ended"
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.connected.clear()
            with self._lock:
                self._stream = None
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        if self._closing.is_set() or host != self._host:
            problem = None
        return connected, problem

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the daemon is gone
            self._closing.set()

    # ------------------------------------------------------------------ on the loop

    def _on_connected(self, host: str | None, reconnected: bool) -> None:
        where = effective_host(host)
        if reconnected:
            LOGGER.info("Docker event stream at %s reconnected; running %d container check(s) now",
                        where, len(self._specs))
            for spec in self._specs:
                self.daemon.trigger(spec.name, "Docker event stream reconnected")
        else:
            LOGGER.info("listening to Docker events at %s for %d container check(s)", where, len(self._specs))

    def _on_event(self, raw: object) -> None:
        if self._closing.is_set():
            return
        try:
            self._handle(raw)
        except Exception as exc:  # never let one odd event hurt the daemon
            LOGGER.debug("ignoring Docker event %.300r: %s", raw, exc)

    def _handle(self, raw: object) -> None:
        event = parse_event(raw)
        if event is None:
            return
        decision = decide(event, self._specs, self.intent, self._clock())
        if not decision.checks:
            return
        self.daemon.metrics.docker_events.labels(event.action).inc()
        for name in decision.checks:
            spec = next((s for s in self._specs if s.name == name), None)
            result = event_result(event, spec, time.time()) if spec is not None and spec.single else None
            if result is not None:
                self.daemon.submit(result)
            self.daemon.trigger(name, f"docker event {event.text}")
        container = event.name or event.container_id
        store = self.daemon.store
        if store is None:
            return
        if decision.record is not None:
            LOGGER.info("container %s: %s by an operator; paramedic will leave it stopped", container,
                        decision.record, extra={"container": container, "event": decision.record})
            self._write(store.record_operator_stop, container, event.container_id, decision.record)
        if decision.clear:
            self._write(store.clear_operator_stop, container)

    def _write(self, call: Callable[..., None], *args: Any) -> None:
        """Store writes run in order on one worker thread (a record and the clear that
        follows it must not swap places), off the loop."""
        assert self._loop is not None
        future = self._loop.run_in_executor(self._writer, call, *args)
        self._writes.add(future)
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            LOGGER.error("recording operator intent failed: %s", future.exception())
