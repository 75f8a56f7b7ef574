"""``prometheus`` probe: one instant PromQL query; conditions hold for *every* series.

A query such as ``up{job="api"}`` returns one series per instance, and "healthy" means
each of them is up. The engine evaluates conditions once, over one observations dict, so
the per-series rule is implemented here without an engine hook:

* A condition that names ``value`` or ``labels`` is a *series condition*. The probe
  evaluates it against every series (``{..aggregates, "value": v, "labels": {...}}``) and
  lists the series that fail in ``failed_series`` / ``failed_count``.
* The top-level ``value`` and ``labels`` are those of a *representative* series: the
  first series whose failures are the worst (a critical failure beats a warning), or the
  first series when none fails. The engine's single evaluation therefore reaches the
  same verdict as a per-series one, and its message shows a real failing value.
* Other conditions (``series_count >= 3``, ``failed_count <= 1``, ``latency_ms < 200``)
  are *aggregate conditions*, evaluated once by the engine as usual.

An empty result follows ``no_data``: ``unknown`` (default; the agent cannot tell) and
``critical`` raise; ``ok`` and ``warning`` return observations with ``no_data: true``, and
:meth:`PrometheusSpec.effective_conditions` makes each series condition hold when
``no_data`` is true (``warning`` adds ``series_count > 0`` at warning severity).

Prometheus itself failing is never the target failing: unreachable, hung (no answer
within the budget), 5xx, or a rejected query (HTTP 400/422, reported with Prometheus's
own error text) are all UNKNOWN, so a broken monitoring stack cannot trigger restarts.
The query runs in a worker thread (prometheus-api-client is built on ``requests``) with
its own socket timeouts and a Prometheus-side ``timeout`` just under the check's, so the
probe answers "Prometheus did not answer" before the engine's hard timeout fires and the
thread ends on its own.

Observations: ``value``, ``labels``, ``series`` (``[{labels, value}]``, at most
``max_series``), ``series_count``, ``failed_series`` (``[{labels, value, failed}]``, at
most ``max_series``), ``failed_count``, ``no_data``, ``latency_ms``. NaN and ±Inf
samples are reported as ``null`` (and fail any numeric comparison).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import math
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from agent.kernel.conditions import BoolOp, CompiledCondition, Path, Truthy, compile_condition
from agent.kernel.durations import format_duration
from agent.kernel.errors import (
    AgentSideError,
    AuthError,
    DependencyUnavailableError,
    DNSError,
    ProbeError,
    TargetError,
    TLSError,
)
from agent.kernel.redact import redact_url
from checks.base import CheckSpec, Probe

#: Observation names that make a condition a per-series condition.
SERIES_FIELDS = frozenset({"value", "labels"})
NO_DATA_WARNING = "series_count > 0"
Sample = tuple[dict[str, str], float | None]


class PrometheusSpec(CheckSpec):
    """Which Prometheus to ask, what to ask, and what an empty answer means."""

    type: Literal["prometheus"]
    url: str
    query: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    no_data: Literal["ok", "warning", "critical", "unknown"] = "unknown"
    max_series: int = Field(default=20, ge=1, le=1000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _needs_conditions(self) -> PrometheusSpec:
        if not self.conditions:
            raise ValueError(
                "a prometheus check needs conditions (no query has a universal 'healthy'), "
                "e.g. conditions: ['value == 1']"
            )
        return self

    def effective_conditions(self) -> tuple[CompiledCondition, ...]:
        """The configured conditions, adjusted so that ``no_data: ok|warning`` works.

        With those policies an empty result returns ``no_data: true`` and no ``value``;
        series conditions then hold vacuously ("every series is fine" over no series),
        and ``warning`` adds a warning-severity ``series_count > 0``.
        """
        conditions = super().effective_conditions()
        if self.no_data not in ("ok", "warning"):
            return conditions
        adjusted = tuple(_unless_no_data(c) if is_series_condition(c) else c for c in conditions)
        if self.no_data == "warning":
            adjusted += (compile_condition(NO_DATA_WARNING, "warning"),)
        return adjusted

    def series_conditions(self) -> tuple[CompiledCondition, ...]:
        """The conditions the probe evaluates once per series."""
        return tuple(c for c in super().effective_conditions() if is_series_condition(c))

    def target(self) -> str:
        return f"{redact_url(self.url)} {self.query}"


class _NoDataOr(BoolOp):
    """``no_data or <condition>`` that reports only the condition's paths as ``actual``."""

    def paths(self) -> list[Path]:
        return self.items[1].paths()


def _unless_no_data(condition: CompiledCondition) -> CompiledCondition:
    node = _NoDataOr("or", (Truthy(Path("no_data", ("no_data",))), condition.node))
    return CompiledCondition(condition.expr, node, condition.severity)


def is_series_condition(condition: CompiledCondition) -> bool:
    """True when the condition names ``value`` or ``labels`` (so it applies per series)."""
    return any(p.parts and p.parts[0] in SERIES_FIELDS for p in condition.node.paths())


@dataclass
class _Client:
    """A ``PrometheusConnect`` and the ``requests`` session we own (and close)."""

    connect: Any
    session: Any


class PrometheusProbe(Probe[PrometheusSpec]):
    """Runs the query through a client shared by every check on the same Prometheus."""

    evidence_label = "prometheus query"
    evidence_scope = "every"
    spec_model = PrometheusSpec
    lazy_imports = ("requests", "prometheus_api_client", "prometheus_api_client.exceptions")

    async def observe(self) -> dict[str, Any]:
        spec = self.spec
        client = self._client()
        budget = query_budget(spec.timeout)
        started = time.perf_counter()
        try:
            raw = await asyncio.wait_for(asyncio.to_thread(_query, client, spec, budget), budget)
        except TimeoutError:
            raise DependencyUnavailableError(
                f"Prometheus at {redact_url(spec.url)} did not answer within {format_duration(budget)}"
            ) from None
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return observations(parse_result(raw), spec, latency_ms)

    def _client(self) -> _Client:
        spec = self.spec
        identity = json.dumps([spec.url, sorted(spec.headers.items()), spec.verify_tls])
        key = "prometheus:" + hashlib.sha256(identity.encode()).hexdigest()
        return self.resources.shared(key, lambda: _new_client(spec), lambda c: c.session.close())

    async def evidence(self, timeout: float) -> str:
        """The query's current value per series (at most 20 shown)."""
        spec = self.spec
        budget = query_budget(timeout)

        def ask() -> Any:
            client = _new_client(spec)
            try:
                return _query(client, spec, budget)
            finally:
                client.session.close()

        samples = parse_result(await asyncio.to_thread(ask))
        lines = [f"query: {spec.query}", f"{len(samples)} series"]
        for labels, value in sorted(samples, key=lambda s: sorted(s[0].items()))[:20]:
            label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            lines.append(f"{{{label_text}}} {value:g}")
        if len(samples) > 20:
            lines.append(f"({len(samples) - 20} more series not shown)")
        return "\n".join(lines)

def query_budget(timeout: float) -> float:
    """The time the query may take: a little less than the check's timeout.

    So that the probe, not the engine's hard timeout, reports a hung Prometheus (as
    UNKNOWN), and the worker thread's sockets give up by themselves.
    """
    return timeout - min(0.5, timeout * 0.1)


def _new_client(spec: PrometheusSpec) -> _Client:
    import requests
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    session = requests.Session()
    session.verify = spec.verify_tls
    # No retries inside the client: the engine owns retries (spec.retries) and the timeout.
    connect = PrometheusConnect(
        url=spec.url, headers=dict(spec.headers) or None, retry=Retry(total=0), session=session
    )
    return _Client(connect, session)


def _query(client: _Client, spec: PrometheusSpec, budget: float) -> Any:
    """Run the instant query (in a worker thread); failures become ``ProbeError``s."""
    import requests
    from prometheus_api_client.exceptions import PrometheusApiClientException

    where = redact_url(spec.url)
    try:
        return client.connect.custom_query(
            spec.query, params={"timeout": f"{budget:.3f}"}, timeout=(budget, budget)
        )
    except PrometheusApiClientException as exc:
        raise api_error(str(exc), where) from None
    except requests.exceptions.RequestException as exc:
        raise request_error(exc, where, budget) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DependencyUnavailableError(
            f"Prometheus at {where} sent an unexpected response ({type(exc).__name__})"
        ) from None


_API_ERROR = re.compile(r"HTTP Status Code (\d+) \((.*)\)\Z", re.S)


def api_error(text: str, where: str) -> ProbeError:
    """Map prometheus-api-client's non-200 exception (status and raw body in its text)."""
    m = _API_ERROR.match(text)
    if m is None:
        return DependencyUnavailableError(f"Prometheus at {where} failed: {_short(text)}")
    status, detail = int(m.group(1)), _error_text(m.group(2))
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        return AuthError(f"Prometheus at {where} refused the credentials (HTTP {status})")
    if status in (400, 422):
        return AgentSideError(f"Prometheus rejected the query (HTTP {status}){suffix}")
    if status >= 500:
        return DependencyUnavailableError(f"Prometheus at {where} failed (HTTP {status}){suffix}")
    return DependencyUnavailableError(f"Prometheus at {where} answered HTTP {status} (is the url right?)")


def _error_text(body_repr: str) -> str:
    """Prometheus's ``error`` field out of the ``b'...'`` repr the client puts in its message."""
    try:
        body = ast.literal_eval(body_repr) if len(body_repr) < 100_000 else b""
        payload = json.loads(body)
    except (ValueError, SyntaxError, TypeError):
        return ""
    if not isinstance(payload, dict):
        return ""
    return _short(str(payload.get("error") or ""))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it: urllib3 nests the OS error in args, ``reason`` and causes."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        item = todo.pop(0)
        if any(item is s for s in seen):
            continue
        seen.append(item)
        reason = getattr(item, "reason", None)
        nested = [a for a in (*item.args, reason, item.__cause__, item.__context__)
                  if isinstance(a, BaseException)]
        todo.extend(nested)
    return seen


def request_error(exc: BaseException, where: str, budget: float) -> ProbeError:
    """Map a ``requests`` failure: every one of them means we cannot ask Prometheus."""
    import requests

    chain = _chain(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        return DependencyUnavailableError(
            f"Prometheus at {where} did not answer within {format_duration(budget)}"
        )
    verify = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is not None:
        return TLSError(f"TLS certificate of Prometheus at {where} failed verification: "
                        f"{verify.verify_message}")
    if isinstance(exc, requests.exceptions.SSLError):
        return TLSError(f"TLS with Prometheus at {where} failed: {_os_reason(chain) or 'handshake error'}")
    if any(isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError" for e in chain):
        return DNSError(f"cannot resolve the host of Prometheus at {where}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return DependencyUnavailableError(
            f"Prometheus at {where} is unreachable: {_os_reason(chain) or 'connection failed'}"
        )
    return DependencyUnavailableError(f"request to Prometheus at {where} failed ({type(exc).__name__})")


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _os_reason(chain: Sequence[BaseException]) -> str | None:
    for item in reversed(chain):
        if isinstance(item, OSError) and item.strerror:
            return item.strerror.lower()
    for item in chain:
        m = _ERRNO.search(str(item))
        if m:
            return m.group(1).strip().lower()
    return None


# --------------------------------------------------------------------------- pure part


def parse_result(raw: Any) -> list[Sample]:
    """``(labels, value)`` per series of an instant query's ``data.result``.

    A vector is a list of ``{"metric", "value": [ts, "v"]}``; a scalar arrives as
    ``[ts, "v"]`` (one series without labels). A range vector or a string cannot be
    compared per series, and says so.
    """
    if not isinstance(raw, list):
        raise DependencyUnavailableError("Prometheus sent a result that is not a list")
    if len(raw) == 2 and isinstance(raw[0], int | float) and isinstance(raw[1], str):
        return [({}, _number(raw[1], "the query returns a string, not a number"))]
    samples: list[Sample] = []
    for item in raw:
        if not isinstance(item, dict):
            raise DependencyUnavailableError("Prometheus sent a malformed result")
        if "values" in item and "value" not in item:
            raise AgentSideError(
                "the query returns a range vector; use an instant vector "
                "(e.g. last_over_time(metric[5m]) instead of metric[5m])"
            )
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        pair = item.get("value")
        if not (isinstance(pair, list) and len(pair) == 2):
            raise DependencyUnavailableError("Prometheus sent a sample without a value")
        samples.append((labels, _number(pair[1], "Prometheus sent a sample that is not a number")))
    return samples


def _number(text: Any, problem: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise AgentSideError(problem) from None
    return value if math.isfinite(value) else None


def observations(samples: list[Sample], spec: PrometheusSpec, latency_ms: float) -> dict[str, Any]:
    """Evaluate series conditions per series and build the observations (see module doc)."""
    ordered = sorted(samples, key=lambda s: sorted(s[0].items()))
    aggregate: dict[str, Any] = {
        "series_count": len(ordered), "no_data": not ordered, "latency_ms": latency_ms,
    }
    if not ordered:
        return _no_data(spec, aggregate)
    conditions = spec.series_conditions()
    failed: list[dict[str, Any]] = []
    pick, worst = 0, 0
    for index, (labels, value) in enumerate(ordered):
        context = {**aggregate, "value": value, "labels": labels}
        bad = [c for c in conditions if not c.check(context)[0]]
        if not bad:
            continue
        failed.append({"labels": labels, "value": value, "failed": [c.expr for c in bad]})
        rank = 2 if any(c.severity == "critical" for c in bad) else 1
        if rank > worst:
            pick, worst = index, rank
    limit = spec.max_series
    return {
        **aggregate,
        "value": ordered[pick][1],
        "labels": ordered[pick][0],
        "series": [{"labels": labels, "value": value} for labels, value in ordered[:limit]],
        "failed_series": failed[:limit],
        "failed_count": len(failed),
    }


def _no_data(spec: PrometheusSpec, aggregate: dict[str, Any]) -> dict[str, Any]:
    if spec.no_data == "unknown":
        raise AgentSideError("the query returned no data (no_data: unknown)")
    if spec.no_data == "critical":
        raise TargetError("the query returned no data (no_data: critical)")
    return {**aggregate, "series": [], "failed_series": [], "failed_count": 0}
