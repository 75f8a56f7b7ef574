"""Unit tests for ``agent.runtime.events``: event parsing, selection, operator-intent rules, the
reconnect loop and shutdown.

The events are the ones Docker 20.10 emitted for each scenario (recorded into
``fixtures/docker_events.json``); the reader thread is driven by a fake client object.
The real engine is exercised in tests/integration/test_daemon_events.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.app.metrics import Metrics
from agent.config.model import Config, parse_config
from agent.kernel.results import Result, Status
from agent.runtime.events import (
    Backoff,
    ContainerEvent,
    Decision,
    DockerEventListener,
    IntentTracker,
    decide,
    event_result,
    first_host,
    parse_event,
    watched,
)
from agent.store.sqlite import Store
from checks.container import ContainerSpec

RECORDED: dict[str, list[dict[str, Any]]] = {
    k: v for k, v in json.loads((Path(__file__).parent / "fixtures" / "docker_events.json").read_text()).items()
    if not k.startswith("_")
}
NAME = "evrec-a"  # the container of most scenarios
A_ID = RECORDED["crash"][-1]["id"]


def scenario(name: str) -> list[dict[str, Any]]:
    return copy.deepcopy(RECORDED[name])


def spec(**fields: Any) -> ContainerSpec:
    return ContainerSpec.model_validate({"name": "c", "type": "container", **fields})


def events(name: str) -> list[ContainerEvent]:
    return [e for e in (parse_event(raw) for raw in scenario(name)) if e is not None]


def replay(names: list[str], specs: list[ContainerSpec], intent: IntentTracker | None = None,
           start: float = 100.0, step: float = 0.01) -> list[Decision]:
    """Feed the scenarios' events through ``decide``, ``step`` seconds apart."""
    intent = intent or IntentTracker()
    now = start
    out = []
    for name in names:
        for event in events(name):
            out.append(decide(event, specs, intent, now))
            now += step
    return out


def records(decisions: list[Decision]) -> list[str]:
    """The operator-intent writes, in order: recorded events and ``clear``."""
    out: list[str] = []
    for d in decisions:
        if d.record is not None:
            out.append(d.record)
        if d.clear:
            out.append("clear")
    return out


# --------------------------------------------------------------------------- parse_event


def test_recorded_events_parse_to_their_bare_action_and_container() -> None:
    [die] = events("crash")
    assert (die.action, die.text, die.name, die.container_id) == ("die", "die", NAME, A_ID)
    assert die.attributes["exitCode"] == "3"
    assert die.attributes["app"] == "demo"  # labels are attributes too
    [health] = [e for e in events("healthcheck_unhealthy") if e.action == "health_status"]
    assert health.text == "health_status: unhealthy"
    assert health.name == "evrec-b"
    assert [e.action for e in events("docker_stop")] == ["kill", "kill", "die", "stop"]
    assert [e.action for e in events("oom")] == ["start", "oom", "die"]


def test_irrelevant_events_are_none() -> None:
    raw = scenario("crash")
    assert [parse_event(e) is None for e in raw] == [True, True, True, False]  # exec_create/start/die, die
    assert parse_event(scenario("create_start")[0]) is None  # create
    assert parse_event(scenario("docker_rm_f")[-1]) is None  # destroy
    network = {"Type": "network", "Action": "connect", "Actor": {"ID": "x", "Attributes": {}}}
    assert parse_event(network) is None


@pytest.mark.parametrize("raw", [
    None, "die", 42, [], {}, {"Action": ""}, {"Action": 3},
    {"Action": "die"},  # no id anywhere
    {"Action": "die", "Actor": "nope"},
    {"Action": "die", "Actor": {"ID": "", "Attributes": {}}},
    {"Action": "die", "Actor": {"ID": "abc", "Attributes": ["name"]}},
])
def test_malformed_events_raise_value_error(raw: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any message: the listener logs it at DEBUG
        parse_event(raw)


def test_old_style_event_without_actor_still_parses() -> None:
    event = parse_event({"status": "die", "id": A_ID, "from": "img"})
    assert event is not None
    assert (event.action, event.container_id, event.name) == ("die", A_ID, "")


# --------------------------------------------------------------------------- selection


def test_selection_by_name_id_compose_and_labels() -> None:
    [die] = events("crash")
    compose_event = ContainerEvent("die", "die", "f" * 64, "proj-api-1",
                                   {"name": "proj-api-1", "com.docker.compose.project": "proj",
                                    "com.docker.compose.service": "api"})
    specs = [
        spec(name="by-name", container=NAME),
        spec(name="other-name", container="evrec"),  # a prefix of the name: not selected
        spec(name="by-id", id=A_ID[:12]),
        spec(name="by-label", labels={"app": "demo"}),
        spec(name="wrong-label", labels={"app": "demo", "tier": "web"}),
        spec(name="compose", compose={"project": "proj", "service": "api"}),
    ]
    intent = IntentTracker()
    assert decide(die, specs, intent, 0).checks == ("by-name", "by-id", "by-label")
    assert decide(compose_event, specs, intent, 0).checks == ("compose",)


def test_unwatched_container_triggers_nothing_and_records_nothing() -> None:
    decisions = replay(["docker_stop", "docker_kill"], [spec(container="someone-else")])
    assert decisions == [Decision()] * len(decisions)


def test_watched_follows_the_first_container_checks_host() -> None:
    config = parse_config(
        "checks:\n"
        "  - {name: web, type: http, url: 'http://127.0.0.1:1/'}\n"
        "  - {name: a, type: container, container: a, docker_host: 'tcp://127.0.0.1:2375'}\n"
        "  - {name: b, type: container, container: b}\n"
        "  - {name: c, type: container, container: c, docker_host: 'tcp://127.0.0.1:2375'}\n"
    )
    host = first_host(config.checks)
    assert host == "tcp://127.0.0.1:2375"
    assert [s.name for s in watched(config.checks, host)] == ["a", "c"]
    assert first_host(config.checks[:1]) is None


# --------------------------------------------------------------------------- operator intent


WATCH = [spec(name="watch", container=NAME)]


@pytest.mark.parametrize(("scenarios", "expected"), [
    (["crash"], []),  # die alone: never an operator stop
    (["docker_stop"], ["kill", "stop"]),  # kill(15) kill(9) die -> kill; stop -> stop (replaces)
    (["docker_stop", "start_after_stop"], ["kill", "stop", "clear"]),
    (["docker_kill"], ["kill"]),
    (["docker_rm_f"], ["kill"]),  # removed on purpose: the record stays
    (["kill_hup"], []),  # the process survived the signal
    (["start_after_crash"], ["clear"]),
    (["docker_restart_stopped"], ["clear"]),
])
def test_operator_stop_rules_over_recorded_scenarios(scenarios: list[str], expected: list[str]) -> None:
    assert records(replay(scenarios, WATCH)) == expected


def test_docker_restart_of_a_running_container_ends_cleared() -> None:
    watch = [spec(name="d", container="evrec-d")]
    decisions = replay(["docker_restart_running"], watch)
    assert records(decisions) == ["kill", "stop", "clear"]
    assert all(d.checks == ("d",) for d in decisions)  # kill, die, stop, start, restart all run it


def test_restart_policy_and_oom_are_not_operator_stops() -> None:
    assert records(replay(["restart_policy_on_failure"], [spec(container="evrec-c")])) == ["clear", "clear"]
    decisions = replay(["oom"], [spec(name="o", container="evrec-oom")])
    assert records(decisions) == ["clear"]  # its first start
    assert [d.checks for d in decisions] == [("o",)] * 3  # start, oom, die


def test_health_status_triggers_the_check_without_intent() -> None:
    decisions = replay(["healthcheck_unhealthy"], [spec(name="h", container="evrec-b")])
    # start, health_status, kill, die: every one runs the check; kill+die is the test's rm -f
    assert [d.checks for d in decisions] == [("h",)] * 4
    assert records(decisions) == ["clear", "kill"]


def test_a_kill_is_confirmed_only_by_a_die_within_the_window() -> None:
    intent = IntentTracker(kill_window=10.0)
    kill, die = events("docker_kill")
    assert decide(kill, WATCH, intent, 0.0) == Decision(("watch",))
    assert decide(die, WATCH, intent, 10.5) == Decision(("watch",))  # too late: a crash, not the kill
    assert decide(kill, WATCH, intent, 20.0) == Decision(("watch",))
    assert decide(die, WATCH, intent, 29.0) == Decision(("watch",), record="kill")
    assert decide(die, WATCH, intent, 29.5) == Decision(("watch",))  # consumed


def test_a_start_forgets_a_pending_kill() -> None:
    intent = IntentTracker()
    [kill] = events("kill_hup")
    [start] = events("start_after_crash")
    [die] = events("crash")
    decide(kill, WATCH, intent, 0.0)
    assert decide(start, WATCH, intent, 0.1).clear
    assert decide(die, WATCH, intent, 0.2).record is None


@pytest.mark.parametrize("key", [NAME, A_ID, A_ID[:12]])
def test_stops_the_agent_announced_are_not_operator_stops(key: str) -> None:
    intent = IntentTracker()
    intent.expect(key, 30.0, now=100.0)
    assert records(replay(["docker_stop", "docker_kill"], WATCH, intent, start=100.0)) == []
    assert records(replay(["start_after_stop"], WATCH, intent, start=101.0)) == ["clear"]  # starts still clear


def test_an_expectation_expires() -> None:
    intent = IntentTracker()
    intent.expect(NAME, 5.0, now=100.0)
    assert records(replay(["docker_stop"], WATCH, intent, start=106.0)) == ["kill", "stop"]


def test_expectations_match_only_their_container() -> None:
    intent = IntentTracker()
    intent.expect("other", 30.0, now=0.0)
    intent.expect(A_ID[:11], 30.0, now=0.0)  # too short to be taken for an id
    intent.expect("39", 30.0, now=0.0)  # a short hex name is a name, not an id prefix
    assert records(replay(["docker_stop"], WATCH, intent, start=1.0)) == ["kill", "stop"]


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_to_its_limit_and_resets() -> None:
    backoff = Backoff()
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    backoff.reset()
    assert backoff.next() == 0.5


# --------------------------------------------------------------------------- the listener, with fake clients


class FakeStream:
    """A blocking event stream: yields what is ``put``, ends on ``end()``/``close()``."""

    def __init__(self, items: list[Any] | None = None, end: bool = False, fail: Exception | None = None) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.closed = threading.Event()
        for item in items or []:
            self.queue.put(item)
        if fail is not None:
            self.queue.put(fail)
        if end:
            self.end()

    def put(self, item: Any) -> None:
        self.queue.put(item)

    def end(self) -> None:
        self.queue.put(StopIteration)

    def close(self) -> None:
        self.closed.set()
        self.end()

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self.queue.get()
            if item is StopIteration:
                return
            if isinstance(item, Exception):
                raise item
            yield item


@dataclass
class FakeClient:
    stream: FakeStream
    closed: bool = False
    filters: list[Any] = field(default_factory=list)

    def events(self, decode: bool, filters: dict[str, str]) -> FakeStream:
        assert decode
        self.filters.append(filters)
        return self.stream

    def close(self) -> None:
        self.closed = True


class Factory:
    """Hands out the scripted outcomes in order: an exception is raised, a stream is served."""

    def __init__(self, *outcomes: Exception | FakeStream) -> None:
        self.outcomes = list(outcomes)
        self.hosts: list[str | None] = []
        self.clients: list[FakeClient] = []
        self.idle = FakeStream()  # served once the script is used up

    def __call__(self, host: str | None) -> FakeClient:
        self.hosts.append(host)
        outcome = self.outcomes.pop(0) if self.outcomes else self.idle
        if isinstance(outcome, Exception):
            raise outcome
        client = FakeClient(outcome)
        self.clients.append(client)
        return client


class RecordingBackoff(Backoff):
    def __init__(self) -> None:
        super().__init__(first=0.01, limit=0.04)
        self.delays: list[float] = []

    def next(self) -> float:
        delay = super().next()
        self.delays.append(delay)
        return delay


@dataclass
class FakeDaemon:
    """What the listener uses of the daemon: config, trigger, metrics, store."""

    config: Config
    store: Store | None = None
    metrics: Metrics = field(default_factory=Metrics)
    triggered: list[tuple[str, str]] = field(default_factory=list)
    submitted: list[Result] = field(default_factory=list)

    def trigger(self, name: str, reason: str) -> None:
        self.triggered.append((name, reason))

    def submit(self, result: Result) -> None:
        self.submitted.append(result)


def config(*container_checks: str, host: str | None = None) -> Config:
    extra = f", docker_host: '{host}'" if host else ""
    lines = "".join(f"  - {{name: {n}, type: container, container: {n}{extra}}}\n" for n in container_checks)
    return parse_config("checks:\n  - {name: web, type: http, url: 'http://127.0.0.1:1/'}\n" + lines)


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def events_counted(daemon: FakeDaemon, action: str) -> float | None:
    return daemon.metrics.registry.get_sample_value("paramedic_docker_events_total", {"event": action})


def listener(daemon: FakeDaemon, factory: Factory, backoff: Backoff | None = None) -> DockerEventListener:
    return DockerEventListener(daemon, client_factory=factory, backoff=backoff or RecordingBackoff())  # type: ignore[arg-type]


def test_events_trigger_checks_count_metrics_and_record_intent() -> None:
    store = Store(":memory:")
    daemon = FakeDaemon(config(NAME, "bystander"), store)
    stream = FakeStream()
    factory = Factory(stream)

    async def main() -> None:
        ev = listener(daemon, factory)
        await ev.start()
        await until(ev.connected.is_set)
        for raw in scenario("docker_stop"):
            stream.put(raw)
        await until(lambda: NAME in store.operator_stops())
        assert store.operator_stops()[NAME]["event"] in ("kill", "stop")
        await until(lambda: len(daemon.triggered) == 4)
        for raw in scenario("start_after_stop"):
            stream.put(raw)
        await until(lambda: len(daemon.triggered) == 5)
        await ev.stop()

    asyncio.run(main())
    assert store.operator_stops() == {}  # stop() waited for the queued writes
    assert daemon.triggered == [(NAME, "docker event kill")] * 2 + [
        (NAME, "docker event die"), (NAME, "docker event stop"), (NAME, "docker event start")]
    assert factory.clients[0].filters == [{"type": "container"}]
    assert factory.clients[0].closed
    assert events_counted(daemon, "kill") == 2
    assert events_counted(daemon, "stop") == 1


def test_operator_stop_is_recorded_with_its_final_event_and_id() -> None:
    store = Store(":memory:")
    daemon = FakeDaemon(config(NAME), store)
    factory = Factory(FakeStream(scenario("docker_stop")))

    async def main() -> None:
        ev = listener(daemon, factory)
        await ev.start()
        await until(lambda: len(daemon.triggered) == 4)
        await ev.stop()

    asyncio.run(main())
    assert store.operator_stops()[NAME] | {"at": 0} == {"id": A_ID, "event": "stop", "at": 0}


def test_malformed_events_are_logged_at_debug_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    daemon = FakeDaemon(config(NAME))
    [die] = scenario("crash")[-1:]
    garbage: list[Any] = [None, "x", {"Action": "die"}, {"Action": "die", "Actor": {"ID": "a", "Attributes": 5}}]
    stream = FakeStream([*garbage, die])
    caplog.set_level(logging.DEBUG, logger="paramedic")

    async def main() -> None:
        ev = listener(daemon, Factory(stream))
        await ev.start()
        await until(lambda: daemon.triggered)
        await ev.stop()

    asyncio.run(main())
    assert daemon.triggered == [(NAME, "docker event die")]
    ignored = [r for r in caplog.records if r.getMessage().startswith("ignoring Docker event")]
    assert len(ignored) == 4
    assert {r.levelno for r in ignored} == {logging.DEBUG}


def test_a_failing_store_write_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    store = Store(":memory:")
    store.close()  # every write now fails
    daemon = FakeDaemon(config(NAME), store)

    async def main() -> None:
        ev = listener(daemon, Factory(FakeStream(scenario("docker_kill"))))
        await ev.start()
        await until(lambda: any("recording operator intent failed" in r.getMessage() for r in caplog.records))
        await ev.stop()

    asyncio.run(main())
    assert len(daemon.triggered) == 2


def test_reconnect_warns_once_backs_off_and_reruns_every_check(caplog: pytest.LogCaptureFixture) -> None:
    daemon = FakeDaemon(config("a", "b"))
    [die] = scenario("crash")[-1:]
    die["Actor"]["Attributes"]["name"] = "a"
    second = FakeStream()
    factory = Factory(
        FakeStream([die], end=True),  # connected, one event, then the Docker daemon goes away
        ConnectionRefusedError("refused"), ConnectionRefusedError("refused"), ConnectionRefusedError("refused"),
        second,
    )
    backoff = RecordingBackoff()
    caplog.set_level(logging.DEBUG, logger="paramedic")

    async def main() -> None:
        ev = listener(daemon, factory, backoff)
        await ev.start()
        await until(lambda: ev.connections == 2 and len(daemon.triggered) == 3)
        second.put(scenario("crash")[-1])  # about NAME: watched by no check
        second.put(RuntimeError("stream broke"))  # a second outage
        await until(lambda: ev.connections == 3)
        await ev.stop()

    asyncio.run(main())
    assert daemon.triggered == [
        ("a", "docker event die"),
        ("a", "Docker event stream reconnected"), ("b", "Docker event stream reconnected"),
        ("a", "Docker event stream reconnected"), ("b", "Docker event stream reconnected"),
    ]
    # 1 stream end + 3 refusals, then backoff reset by the connection, then 1 more failure
    assert backoff.delays == [0.01, 0.02, 0.04, 0.04, 0.01]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per outage
    assert "the stream ended" in warnings[0]
    assert "stream broke" in warnings[1]
    still = [r for r in caplog.records if "still failing" in r.getMessage()]
    assert len(still) == 3
    assert {r.levelno for r in still} == {logging.DEBUG}
    assert sum("reconnected" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records) == 2
    assert all(c.closed for c in factory.clients)


def test_docker_down_at_start_warns_then_runs_every_check_once_connected(caplog: pytest.LogCaptureFixture) -> None:
    daemon = FakeDaemon(config("a"))
    factory = Factory(FileNotFoundError("no such socket"), FakeStream())

    async def main() -> None:
        ev = listener(daemon, factory)
        await ev.start()
        await until(lambda: daemon.triggered)
        await ev.stop()

    asyncio.run(main())
    assert daemon.triggered == [("a", "Docker event stream reconnected")]
    assert [r.levelno for r in caplog.records if "no Docker event stream" in r.getMessage()] == [logging.WARNING]


def test_stop_closes_a_blocked_stream_promptly() -> None:
    daemon = FakeDaemon(config("a"))
    factory = Factory(FakeStream())
    elapsed: list[float] = []

    async def main() -> None:
        ev = listener(daemon, factory)
        await ev.start()
        await until(ev.connected.is_set)
        began = time.monotonic()
        await ev.stop()
        elapsed.append(time.monotonic() - began)
        assert ev._thread is not None
        assert not ev._thread.is_alive()

    asyncio.run(main())
    assert factory.clients[0].stream.closed.is_set()
    assert elapsed[0] < 2.0
    assert len(factory.hosts) == 1  # no reconnect after a deliberate close


def test_stop_during_backoff_returns_promptly() -> None:
    daemon = FakeDaemon(config("a"))
    factory = Factory(*[ConnectionRefusedError("refused")] * 50)

    async def main() -> None:
        ev = listener(daemon, factory, Backoff(first=30.0, limit=30.0))
        await ev.start()
        await until(lambda: factory.hosts)
        began = time.monotonic()
        await ev.stop()
        assert time.monotonic() - began < 2.0

    asyncio.run(main())
    assert len(factory.hosts) == 1


def test_update_serves_new_checks_and_reconnects_when_the_host_changes() -> None:
    daemon = FakeDaemon(config("a"))
    [die] = scenario("crash")[-1:]
    die["Actor"]["Attributes"]["name"] = "b"
    first, second = FakeStream(), FakeStream()
    factory = Factory(first, second)

    async def main() -> None:
        ev = listener(daemon, factory)
        await ev.start()
        await until(ev.connected.is_set)
        daemon.config = config("a", "b")  # same host: no reconnect, b is now watched
        ev.update(daemon)  # type: ignore[arg-type]
        first.put(die)
        await until(lambda: daemon.triggered)
        daemon.config = config("b", host="tcp://127.0.0.1:2375")
        ev.update(daemon)  # type: ignore[arg-type]
        await until(lambda: ev.connections == 2)
        second.put(copy.deepcopy(die))
        await until(lambda: len(daemon.triggered) == 2)
        await ev.stop()

    asyncio.run(main())
    assert factory.hosts == [None, "tcp://127.0.0.1:2375"]
    assert first.closed.is_set()
    # a host switch is not an outage: no "reconnected" rerun of every check
    assert daemon.triggered == [("b", "docker event die")] * 2


def test_expect_on_the_listener_uses_its_clock() -> None:
    now = [1000.0]
    daemon = FakeDaemon(config(NAME), Store(":memory:"))
    ev = DockerEventListener(daemon, client_factory=Factory(), clock=lambda: now[0])  # type: ignore[arg-type]
    ev.expect(NAME, 10.0)
    kill, die = events("docker_kill")
    assert decide(kill, ev._specs, ev.intent, 1005.0).record is None
    assert decide(die, ev._specs, ev.intent, 1005.1).record is None
    assert decide(kill, ev._specs, ev.intent, 1011.0).record is None
    assert decide(die, ev._specs, ev.intent, 1011.1).record == "kill"


def test_a_die_event_is_a_critical_result_for_a_single_container_check() -> None:
    die = ContainerEvent("die", "die", "a" * 64, "web-1", {"name": "web-1", "exitCode": "3"})
    web = spec(name="web-check", container="web-1")  # the result is the check's: its name and type
    result = event_result(die, web, 100.0)
    assert result is not None
    assert (result.name, result.type, result.status) == ("web-check", "container", Status.CRITICAL)
    assert result.message == "container web-1 died (exit code 3) (Docker event)"
    assert result.observations["exit_code"] == 3
    assert result.started_at == 100.0
    oom = ContainerEvent("oom", "oom", "a" * 64, "web-1", {"name": "web-1"})
    oom_result = event_result(oom, web, 100.0)
    assert oom_result is not None
    assert oom_result.observations["oom_killed"] is True
    start = ContainerEvent("start", "start", "a" * 64, "web-1", {"name": "web-1"})
    assert event_result(start, web, 100.0) is None


def test_a_swarm_task_container_stopped_by_swarm_is_not_an_operator_stop() -> None:
    spec = ContainerSpec.model_validate(
        {"name": "svc", "type": "container", "labels": {"com.docker.swarm.service.name": "web"}})
    attrs = {"name": "web.1.abc", "com.docker.swarm.service.name": "web", "com.docker.swarm.task.id": "t1"}
    stop = ContainerEvent("stop", "stop", "b" * 64, "web.1.abc", attrs)
    decision = decide(stop, [spec], IntentTracker(), 10.0)
    assert decision.checks == ("svc",)
    assert decision.record is None
