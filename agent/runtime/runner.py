"""Run probes: hard timeout, optional retries, condition evaluation, one clean Result.

This is the boundary where exceptions stop (habit 6): whatever a probe does — raise a
documented ``ProbeError``, hang, or crash with a bug — the caller gets a
:class:`~agent.kernel.results.Result`, never an exception, and every string in it has passed
through the config's :class:`~agent.kernel.redact.Redactor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.kernel.conditions import CompiledCondition, evaluate
from agent.kernel.durations import format_duration
from agent.kernel.errors import ProbeError, ProbeTimeoutError
from agent.kernel.models import Resources
from agent.kernel.redact import Redactor
from agent.kernel.results import ConditionOutcome, Result, Status
from agent.registry import probe_class
from checks.base import CheckSpec, Probe

_RETRYABLE = (Status.CRITICAL, Status.UNKNOWN)


def build_probe(spec: CheckSpec, resources: Resources) -> Probe[Any]:
    """Instantiate the registered probe class for ``spec``."""
    return probe_class(spec.type)(spec, resources)


@dataclass
class ProbeRunner:
    """Runs one check's probe and turns whatever happens into a :class:`Result`.

    ``clock`` (wall time for ``started_at``) and ``sleep`` (between retries) are injected so
    tests control time.
    """

    redactor: Redactor = field(default_factory=Redactor)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Any] = asyncio.sleep
    _conditions: dict[int, tuple[CheckSpec, tuple[CompiledCondition, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def _effective_conditions(self, spec: CheckSpec) -> tuple[CompiledCondition, ...]:
        """``spec.effective_conditions()``, computed once per spec.

        Specs are frozen, and most build their conditions by compiling text (default
        conditions, ``expected_status``): 25-40 µs per call, per probe run. The cache keeps
        the spec itself, so an id is never reused while cached; it is emptied when reloads
        have filled it with specs that are gone.
        """
        hit = self._conditions.get(id(spec))
        if hit is not None and hit[0] is spec:
            return hit[1]
        conditions = spec.effective_conditions()
        if len(self._conditions) >= 10_000:
            self._conditions.clear()
        self._conditions[id(spec)] = (spec, conditions)
        return conditions

    async def run(self, spec: CheckSpec, probe: Probe[Any]) -> Result:
        """One probe run, with ``spec.retries`` attempts; never raises (except cancellation)."""
        started_at = self.clock()
        t0 = time.perf_counter()
        if spec.retries.attempts == 1:
            result, tries = await self._attempt(spec, probe, started_at), 1
        else:
            result, tries = await self._with_retries(spec, probe, started_at)
        return self._finish(result, tries, (time.perf_counter() - t0) * 1000)

    async def _with_retries(self, spec: CheckSpec, probe: Probe[Any], started_at: float) -> tuple[Result, int]:
        """Retry failed attempts with tenacity: exponential backoff with jitter, capped.

        Imported here so a config without retries never pays for tenacity's import.
        """
        import tenacity

        backoff, cap = spec.retries.backoff, spec.retries.max_backoff

        def wait(state: tenacity.RetryCallState) -> float:
            # wait_exponential_jitter spelled out: its `initial` is deprecated in tenacity 9
            # and its replacement `multiplier` does not exist in 8.x.
            delay: float = backoff * 2 ** (state.attempt_number - 1) + random.uniform(0, backoff / 2)
            return min(delay, cap)

        policy = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(spec.retries.attempts),
            wait=wait,
            retry=tenacity.retry_if_result(lambda r: r.status in _RETRYABLE),
            sleep=self.sleep,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            reraise=True,
        )
        tries = 0
        result: Result | None = None
        async for attempt in policy:
            with attempt:
                tries = attempt.retry_state.attempt_number
                result = await self._attempt(spec, probe, started_at)
            if attempt.retry_state.outcome is not None and not attempt.retry_state.outcome.failed:
                attempt.retry_state.set_result(result)
        assert result is not None
        return result, tries

    def _finish(self, result: Result, tries: int, total_ms: float) -> Result:
        message = result.message
        if tries > 1:
            verdict = "succeeded" if result.status is Status.OK else "still failing"
            message = f"{message} ({verdict} on attempt {tries})"
        return Result(
            name=result.name, type=result.type, status=result.status,
            message=self.redactor.text(message), duration_ms=total_ms,
            observations=self.redactor.data(dict(result.observations)),
            conditions=tuple(_redacted(c, self.redactor) for c in result.conditions),
            error=result.error, started_at=result.started_at, attempts=tries,
        )

    async def _attempt(self, spec: CheckSpec, probe: Probe[Any], started_at: float) -> Result:
        t0 = time.perf_counter()

        def failed(status: Status, message: str, error: str) -> Result:
            took = (time.perf_counter() - t0) * 1000
            return Result(spec.name, spec.type, status, message, took, error=error, started_at=started_at)

        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for runs the probe in a task of its
            # own, which at a thousand probes a second is a few percent of a core for nothing.
            async with asyncio.timeout(spec.timeout):
                observations = await probe.observe()
        except TimeoutError:
            message = f"timed out after {format_duration(spec.timeout)}"
            return failed(Status.CRITICAL, message, "ProbeTimeoutError")
        except ProbeTimeoutError as exc:  # the probe's own, shorter deadline: its message says which
            return failed(Status.CRITICAL, str(exc) or f"timed out after {format_duration(spec.timeout)}",
                          "ProbeTimeoutError")
        except ProbeError as exc:
            return failed(Status[exc.status], str(exc), type(exc).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return failed(Status.UNKNOWN, f"internal error in {spec.type} probe: {type(exc).__name__}: {exc}",
                          "InternalError")
        took = (time.perf_counter() - t0) * 1000
        code, outcomes, message = evaluate(self._effective_conditions(spec), observations)
        return Result(
            spec.name, spec.type, Status(code), message, took, observations,
            tuple(ConditionOutcome(c.expr, ok, actual, c.severity) for c, ok, actual in outcomes),
            started_at=started_at,
        )


def _redacted(outcome: ConditionOutcome, redactor: Redactor) -> ConditionOutcome:
    """``outcome`` with its value redacted; the same (frozen) object when nothing changed."""
    actual = redactor.data(outcome.actual)
    if actual is outcome.actual:
        return outcome
    return ConditionOutcome(outcome.expr, outcome.ok, actual, outcome.severity)


async def run_once(
    specs: Sequence[CheckSpec], redactor: Redactor | None = None, concurrency: int = 64
) -> list[Result]:
    """Run every spec once, concurrently (at most ``concurrency`` at a time), in input order."""
    resources = Resources()
    runner = ProbeRunner(redactor or Redactor())
    gate = asyncio.Semaphore(concurrency)

    # Build every probe before any runs: set-up work (TLS contexts, imports) must not be
    # billed to the latency of probes already in flight.
    probes = [_build_or_fail(spec, resources, runner.redactor) for spec in specs]
    preload(p for p in probes if not isinstance(p, Result))

    async def one(spec: CheckSpec, probe: Probe[Any] | Result) -> Result:
        if isinstance(probe, Result):
            return probe
        async with gate:
            try:
                return await runner.run(spec, probe)
            finally:
                await probe.close()

    try:
        return list(await asyncio.gather(*(one(s, p) for s, p in zip(specs, probes, strict=True))))
    finally:
        await resources.close()


def preload(probes: Iterable[Probe[Any]]) -> None:
    """Import every module the probes' ``observe`` imports lazily (``Probe.lazy_imports``), now.

    Before any probe starts its clock; a module that cannot be imported is left for the
    probe's own run to report (as UNKNOWN, with the probe's message).
    """
    for name in sorted({m for probe in probes for m in type(probe).lazy_imports}):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _build_or_fail(spec: CheckSpec, resources: Resources, redactor: Redactor) -> Probe[Any] | Result:
    """The probe for ``spec``, or an UNKNOWN result saying why it could not be set up."""
    try:
        return build_probe(spec, resources)
    except ProbeError as exc:
        return Result(spec.name, spec.type, Status[exc.status], redactor.text(str(exc)), 0.0,
                      error=type(exc).__name__)
    except Exception as exc:
        message = redactor.text(f"cannot set up {spec.type} probe: {type(exc).__name__}: {exc}")
        return Result(spec.name, spec.type, Status.UNKNOWN, message, 0.0, error="InternalError")


def select(specs: Iterable[CheckSpec], only: Sequence[str] = (), tags: Sequence[str] = ()) -> list[CheckSpec]:
    """Checks named in ``only`` (if any) that carry at least one of ``tags`` (if any)."""
    return [s for s in specs if (not only or s.name in only) and (not tags or set(tags) & set(s.tags))]
