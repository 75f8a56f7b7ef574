"""The runner boundary: timeouts, the error tree, internal bugs, retries, redaction.

Probes here are fakes (this tier tests the engine, not a protocol).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from agent.kernel import errors
from agent.kernel.models import Resources
from agent.kernel.redact import Redactor
from agent.kernel.results import Result, Status
from agent.runtime.runner import ProbeRunner, run_once, select
from checks.base import CheckSpec, Probe


class FakeSpec(CheckSpec):
    """A check whose probe is scripted by the test."""

    type: Literal["fake"] = "fake"
    default_conditions: ClassVar[tuple[str, ...]] = ("up",)


Behaviour = Callable[[int], Any]


class FakeProbe(Probe[FakeSpec]):
    """Runs ``behaviour(attempt)`` per observe: return observations, raise, or hang."""

    spec_model = FakeSpec
    behaviours: ClassVar[dict[str, Behaviour]] = {}

    def __init__(self, spec: FakeSpec, resources: Resources | None = None) -> None:
        super().__init__(spec, resources)
        self.calls = 0
        self.cancelled = False
        self.closed = False

    async def observe(self) -> dict[str, Any]:
        self.calls += 1
        outcome = self.behaviours[self.spec.name](self.calls)
        if outcome == "hang":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, dict)
        return outcome

    async def close(self) -> None:
        self.closed = True


def spec(name: str = "fake-check", **kwargs: Any) -> FakeSpec:
    return FakeSpec(name=name, **kwargs)


def probe_for(s: FakeSpec, behaviour: Behaviour) -> FakeProbe:
    FakeProbe.behaviours[s.name] = behaviour
    return FakeProbe(s)


def run(runner: ProbeRunner, s: FakeSpec, probe: FakeProbe) -> Result:
    return asyncio.run(runner.run(s, probe))


# ---------------------------------------------------------------- outcomes

def test_ok_observations_are_evaluated() -> None:
    s = spec(conditions=["up", {"expr": "latency_ms < 100", "severity": "warning"}])
    result = run(ProbeRunner(), s, probe_for(s, lambda _: {"up": True, "latency_ms": 150}))
    assert result.status is Status.WARNING
    assert result.message == "latency_ms < 100 failed (actual: 150)"
    assert [(c.expr, c.ok, c.actual, c.severity) for c in result.conditions] == [
        ("up", True, True, "critical"),
        ("latency_ms < 100", False, 150, "warning"),
    ]
    assert result.observations == {"up": True, "latency_ms": 150}
    assert result.error is None
    assert result.attempts == 1


def test_default_conditions_apply_when_none_are_configured() -> None:
    s = spec()
    result = run(ProbeRunner(), s, probe_for(s, lambda _: {"up": False}))
    assert result.status is Status.CRITICAL
    assert result.message == "up failed (actual: False)"


def test_hanging_probe_times_out_and_is_cancelled() -> None:
    s = spec(timeout="200ms")
    probe = probe_for(s, lambda _: "hang")
    t0 = time.perf_counter()
    result = run(ProbeRunner(), s, probe)
    wall = time.perf_counter() - t0
    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 200ms"
    assert result.error == "ProbeTimeoutError"
    assert 190 <= result.duration_ms < 1000  # close to the timeout, with room for a loaded machine
    assert wall < 2.0
    assert probe.cancelled


TREE = [
    (errors.ConnectionRefusedProbeError("connection refused by h:1"), Status.CRITICAL),
    (errors.ConnectionLostError("connection reset by h:1"), Status.CRITICAL),
    (errors.ProtocolError("invalid HTTP response from h:1"), Status.CRITICAL),
    (errors.TargetError("h:1 is unreachable"), Status.CRITICAL),
    (errors.DNSError("cannot resolve host 'h'"), Status.UNKNOWN),
    (errors.TLSError("TLS handshake with h:1 failed"), Status.UNKNOWN),
    (errors.AuthError("password authentication failed"), Status.UNKNOWN),
    (errors.DependencyUnavailableError("docker socket unreachable"), Status.UNKNOWN),
    (errors.AgentSideError("cannot tell"), Status.UNKNOWN),
    (errors.ProbeError("no observations"), Status.UNKNOWN),
]


@pytest.mark.parametrize(("exc", "status"), TREE, ids=[type(e).__name__ for e, _ in TREE])
def test_probe_errors_map_to_their_status_and_message(exc: errors.ProbeError, status: Status) -> None:
    s = spec()
    result = run(ProbeRunner(), s, probe_for(s, lambda _: exc))
    assert result.status is status
    assert result.status.name == type(exc).status
    assert result.message == str(exc)
    assert result.error == type(exc).__name__
    assert result.observations == {}
    assert result.conditions == ()


def test_probe_raising_its_own_timeout_keeps_its_message() -> None:
    s = spec(timeout="2s")
    result = run(ProbeRunner(), s, probe_for(s, lambda _: errors.ProbeTimeoutError("read timed out after 1s")))
    assert (result.status, result.message, result.error) == (Status.CRITICAL, "read timed out after 1s",
                                                             "ProbeTimeoutError")
    result = run(ProbeRunner(), s, probe_for(s, lambda _: errors.ProbeTimeoutError()))
    assert (result.status, result.message) == (Status.CRITICAL, "timed out after 2s")


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (KeyError("boom"), "internal error in fake probe: KeyError: 'boom'"),
        (ZeroDivisionError("division by zero"), "internal error in fake probe: ZeroDivisionError: division by zero"),
        (RuntimeError(), "internal error in fake probe: RuntimeError: "),
    ],
)
def test_a_bug_in_a_probe_becomes_unknown(exc: Exception, message: str) -> None:
    s = spec()
    result = run(ProbeRunner(), s, probe_for(s, lambda _: exc))
    assert result.status is Status.UNKNOWN
    assert result.message == message
    assert result.error == "InternalError"


def test_started_at_comes_from_the_injected_clock() -> None:
    s = spec()
    result = run(ProbeRunner(clock=lambda: 1234.5), s, probe_for(s, lambda _: {"up": True}))
    assert result.started_at == 1234.5


# ---------------------------------------------------------------- retries

class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(float(delay))


def test_retry_succeeds_on_third_attempt() -> None:
    s = spec(retries={"attempts": 5, "backoff": "100ms", "max_backoff": "1s"})
    sleep = SleepRecorder()

    def behaviour(attempt: int) -> Any:
        return {"up": True} if attempt == 3 else errors.ConnectionRefusedProbeError("connection refused by h:1")

    probe = probe_for(s, behaviour)
    result = run(ProbeRunner(sleep=sleep), s, probe)
    assert result.status is Status.OK
    assert result.message == "all conditions passed (succeeded on attempt 3)"
    assert result.attempts == 3
    assert probe.calls == 3
    # exponential backoff (with at most backoff/2 of jitter): ~100ms, then ~200ms
    assert len(sleep.delays) == 2
    assert 0.1 <= sleep.delays[0] <= 0.15
    assert 0.2 <= sleep.delays[1] <= 0.25


def test_retry_backoff_is_capped() -> None:
    s = spec(retries={"attempts": 6, "backoff": "100ms", "max_backoff": "250ms"})
    sleep = SleepRecorder()
    result = run(ProbeRunner(sleep=sleep), s, probe_for(s, lambda _: {"up": False}))
    assert result.attempts == 6
    assert len(sleep.delays) == 5
    assert all(0.1 <= d <= 0.25 for d in sleep.delays)
    assert sleep.delays[-1] == pytest.approx(0.25)


def test_retry_gives_up_and_says_so() -> None:
    s = spec(retries={"attempts": 2, "backoff": "10ms"})
    sleep = SleepRecorder()
    probe = probe_for(s, lambda _: errors.ConnectionRefusedProbeError("connection refused by h:1"))
    result = run(ProbeRunner(sleep=sleep), s, probe)
    assert result.status is Status.CRITICAL
    assert result.message == "connection refused by h:1 (still failing on attempt 2)"
    assert result.attempts == 2
    assert probe.calls == 2
    assert len(sleep.delays) == 1


def test_unknown_is_retried_too() -> None:
    s = spec(retries={"attempts": 2, "backoff": "10ms"})
    probe = probe_for(s, lambda n: errors.DNSError("cannot resolve") if n == 1 else {"up": True})
    result = run(ProbeRunner(sleep=SleepRecorder()), s, probe)
    assert (result.status, result.attempts) == (Status.OK, 2)


def test_ok_and_warning_are_not_retried() -> None:
    for observations, status in (({"up": True}, Status.OK), ({"up": True, "slow": 1}, Status.WARNING)):
        s = spec(retries={"attempts": 3}, conditions=["up", {"expr": "not slow", "severity": "warning"}])
        sleep = SleepRecorder()
        probe = probe_for(s, lambda _, o=observations: o)  # type: ignore[misc]
        result = run(ProbeRunner(sleep=sleep), s, probe)
        assert (result.status, result.attempts, probe.calls, sleep.delays) == (status, 1, 1, [])
        assert "attempt" not in result.message


def test_timeouts_are_retried_each_with_the_full_timeout() -> None:
    s = spec(timeout="100ms", retries={"attempts": 2, "backoff": "10ms"})
    probe = probe_for(s, lambda n: "hang" if n == 1 else {"up": True})
    result = run(ProbeRunner(sleep=SleepRecorder()), s, probe)
    assert result.status is Status.OK
    assert result.attempts == 2
    assert result.duration_ms >= 95  # the total covers every attempt


# ---------------------------------------------------------------- redaction

SECRET = "s3cr3t-CANARY"


@pytest.mark.parametrize(
    "outcome",
    [
        errors.AuthError(f"password authentication failed for user:{SECRET}@db"),
        errors.ConnectionLostError(f"reset talking to http://u:{SECRET}@h/"),
        ValueError(f"driver bug with dsn password={SECRET}"),
    ],
)
def test_secrets_in_exception_messages_are_scrubbed(outcome: Exception) -> None:
    s = spec()
    result = run(ProbeRunner(Redactor([SECRET])), s, probe_for(s, lambda _: outcome))
    assert SECRET not in result.message
    assert "***" in result.message


def test_secrets_in_observations_and_actuals_are_scrubbed() -> None:
    s = spec(conditions=['body contains "nope"', "up"])
    observations = {"up": True, "body": f"echo Authorization: Bearer {SECRET}", "nested": {"k": [SECRET]}}
    result = run(ProbeRunner(Redactor([SECRET])), s, probe_for(s, lambda _: observations))
    assert result.status is Status.CRITICAL
    assert SECRET not in repr(result)
    assert result.observations["nested"] == {"k": ["***"]}
    assert result.conditions[0].actual == "echo Authorization: Bearer ***"


def test_secret_in_message_after_retries_is_scrubbed() -> None:
    s = spec(retries={"attempts": 2, "backoff": "10ms"})
    probe = probe_for(s, lambda _: errors.AuthError(f"bad password {SECRET}"))
    result = run(ProbeRunner(Redactor([SECRET]), sleep=SleepRecorder()), s, probe)
    assert result.message == "bad password *** (still failing on attempt 2)"


# ---------------------------------------------------------------- run_once and select

@pytest.fixture
def fake_type(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import registry

    monkeypatch.setitem(registry.CHECK_TYPES, "fake", f"{__name__}:FakeProbe")


@pytest.mark.usefixtures("fake_type")
def test_run_once_runs_concurrently_and_keeps_order() -> None:
    specs = [spec(f"hang-{i}", timeout="500ms") for i in range(4)] + [spec("fine")]
    for s in specs:
        FakeProbe.behaviours[s.name] = (lambda _: {"up": True}) if s.name == "fine" else (lambda _: "hang")
    t0 = time.perf_counter()
    results = asyncio.run(run_once(specs))
    elapsed = time.perf_counter() - t0
    assert [r.name for r in results] == [s.name for s in specs]
    assert [r.status for r in results] == [Status.CRITICAL] * 4 + [Status.OK]
    assert elapsed < 1.5  # four 500ms timeouts in parallel, not 2s in a row


@pytest.mark.usefixtures("fake_type")
def test_run_once_turns_a_probe_that_cannot_be_built_into_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: FakeProbe, spec: FakeSpec, resources: Resources | None = None) -> None:
        raise RuntimeError(f"cannot open {SECRET}")

    monkeypatch.setattr(FakeProbe, "__init__", broken)
    s = spec("broken")
    [result] = asyncio.run(run_once([s], Redactor([SECRET])))
    assert result.status is Status.UNKNOWN
    assert result.message == "cannot set up fake probe: RuntimeError: cannot open ***"


@pytest.mark.usefixtures("fake_type")
def test_run_once_redacts_with_the_given_redactor() -> None:
    s = spec("leaky")
    FakeProbe.behaviours[s.name] = lambda _: errors.AuthError(f"login {SECRET} refused")
    [result] = asyncio.run(run_once([s], Redactor([SECRET])))
    assert result.message == "login *** refused"


def test_select_by_name_and_tag() -> None:
    specs = [spec("a", tags=["app"]), spec("b", tags=["db", "app"]), spec("c")]

    def names(chosen: list[CheckSpec]) -> list[str]:
        return [s.name for s in chosen]

    assert names(select(specs)) == ["a", "b", "c"]
    assert names(select(specs, only=["c", "a"])) == ["a", "c"]
    assert names(select(specs, tags=["db"])) == ["b"]
    assert names(select(specs, tags=["app"])) == ["a", "b"]
    assert names(select(specs, tags=["db", "nope"])) == ["b"]
    assert names(select(specs, only=["a", "c"], tags=["app"])) == ["a"]
    assert names(select(specs, tags=["nope"])) == []


@pytest.mark.usefixtures("fake_type")
def test_run_once_imports_every_probes_lazy_modules_before_any_probe_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A probe type's lazy import (psycopg, docker...) must not run on the loop while another
    probe's clock runs: each probe here sees the other's module already imported when it starts."""
    names = [f"paramedic_lazy_{uuid.uuid4().hex}" for _ in range(2)]
    for name in names:
        (tmp_path / f"{name}.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: dict[str, bool] = {}

    class Probe0(FakeProbe):
        lazy_imports = (names[0],)

        async def observe(self) -> dict[str, Any]:
            seen[self.spec.name] = names[1] in sys.modules
            return {"up": True}

    class Probe1(Probe0):
        lazy_imports = (names[1],)

        async def observe(self) -> dict[str, Any]:
            seen[self.spec.name] = names[0] in sys.modules
            return {"up": True}

    built = iter([Probe0, Probe1])
    monkeypatch.setattr("agent.runtime.runner.probe_class", lambda _type: next(built))
    results = asyncio.run(run_once([spec("a"), spec("b")]))
    assert [r.status for r in results] == [Status.OK, Status.OK]
    assert seen == {"a": True, "b": True}


@pytest.mark.parametrize("type_name", sorted(__import__("agent.registry").registry.CHECK_TYPES))
def test_every_probes_lazy_imports_exist(type_name: str) -> None:
    """A misspelt ``lazy_imports`` entry would be skipped silently by the preload."""
    import importlib

    from agent.registry import probe_class

    for name in probe_class(type_name).lazy_imports:
        importlib.import_module(name)
