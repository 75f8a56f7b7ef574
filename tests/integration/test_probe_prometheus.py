"""The prometheus probe against a real Prometheus scraping a test-controlled exporter."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import pytest

from agent.config.model import parse_config
from agent.kernel.results import Result, Status
from agent.runtime.runner import run_once
from tests.support.servers import free_port
from tests.support.services import PrometheusServer

pytestmark = pytest.mark.integration


def check(url: str, query: str, *conditions: Any, **fields: Any) -> Result:
    """Run one prometheus check through config validation and the runner."""
    lines = [
        "checks:",
        "  - name: prom",
        "    type: prometheus",
        f"    url: {url!r}",
        f"    query: {query!r}",
        "    conditions:",
        *(f"      - {c!r}" if isinstance(c, str) else f"      - {c}" for c in conditions),
        *(f"    {k}: {v}" for k, v in fields.items()),
    ]
    config = parse_config("\n".join(lines) + "\n")
    return asyncio.run(run_once(config.checks, config.redactor))[0]


def has_value(value: str, count: int = 1) -> Any:
    return lambda result: len(result) == count and all(r["value"][1] == value for r in result)


def test_each_series_must_hold(prometheus_server: PrometheusServer) -> None:
    prom = prometheus_server
    prom.exporter.set_metrics(
        'paramedic_worker_up{node="a"} 1\nparamedic_worker_up{node="b"} 0\nparamedic_worker_up{node="c"} 1'
    )
    prom.wait_for("paramedic_worker_up", lambda r: len(r) == 3)

    result = check(prom.url, "paramedic_worker_up", "value == 1")

    assert result.status is Status.CRITICAL, result
    assert result.message == "value == 1 failed (actual: 0.0)"
    obs = result.observations
    assert (obs["series_count"], obs["failed_count"], obs["value"]) == (3, 1, 0.0)
    assert [f["labels"]["node"] for f in obs["failed_series"]] == ["b"]
    assert obs["failed_series"][0]["labels"]["job"] == "exporter"
    assert obs["failed_series"][0]["failed"] == ["value == 1"]
    assert obs["labels"]["node"] == "b"

    prom.exporter.set_metrics('paramedic_worker_up{node="a"} 1\nparamedic_worker_up{node="b"} 1')
    prom.wait_for("paramedic_worker_up", has_value("1", 2))

    result = check(prom.url, "paramedic_worker_up", "value == 1")

    assert result.status is Status.OK, result
    assert result.observations["failed_series"] == []
    assert result.observations["series_count"] == 2


def test_at_most_one_series_down_is_a_warning(prometheus_server: PrometheusServer) -> None:
    prom = prometheus_server
    prom.exporter.set_metrics('paramedic_worker_up{node="a"} 1\nparamedic_worker_up{node="b"} 0')
    prom.wait_for("paramedic_worker_up", lambda r: len(r) == 2)

    result = check(prom.url, "paramedic_worker_up", {"expr": "value == 1", "severity": "warning"},
                   "failed_count <= 1")

    assert result.status is Status.WARNING, result


def test_seed_runbook_up_query(prometheus_server: PrometheusServer) -> None:
    result = check(prometheus_server.url, 'up{job="exporter"}', "value == 1")

    assert result.status is Status.OK, result
    assert result.observations["labels"]["job"] == "exporter"
    assert result.observations["value"] == 1.0


def test_seed_runbook_error_rate_query(prometheus_server: PrometheusServer) -> None:
    prom = prometheus_server
    # the seed's query, plus a label no other test uses (range queries see older samples)
    query = 'rate(http_requests_total{status=~"5..", suite="probe-prometheus"}[5m])'
    counters = 'http_requests_total{{suite="probe-prometheus", status="{}"}} {}'
    prom.exporter.set_metrics(counters.format(200, 100) + "\n" + counters.format(500, 1))
    prom.wait_for(query, has_value("0"))

    assert check(prom.url, query, "value < 0.05").status is Status.OK

    prom.exporter.set_metrics(counters.format(200, 100) + "\n" + counters.format(500, 5000))
    prom.wait_for(query, lambda r: len(r) == 1 and float(r[0]["value"][1]) > 0.05)

    result = check(prom.url, query, "value < 0.05")

    assert result.status is Status.CRITICAL, result
    assert result.observations["failed_series"][0]["labels"]["status"] == "500"
    assert result.message.startswith("value < 0.05 failed (actual: ")


def test_seed_runbook_memory_query(prometheus_server: PrometheusServer) -> None:
    prom = prometheus_server
    query = "process_resident_memory_bytes"
    conditions = ({"expr": "value < 1GiB", "severity": "warning"}, "value < 2GiB")
    prom.exporter.set_metrics(f"{query} {100 * 2**20}")
    prom.wait_for(query, has_value(str(100 * 2**20)))
    assert check(prom.url, query, *conditions).status is Status.OK

    prom.exporter.set_metrics(f"{query} {3 * 2**29}")  # 1.5 GiB
    prom.wait_for(query, has_value(str(3 * 2**29)))
    assert check(prom.url, query, *conditions).status is Status.WARNING

    prom.exporter.set_metrics(f"{query} {3 * 2**30}")
    prom.wait_for(query, has_value(str(3 * 2**30)))
    result = check(prom.url, query, *conditions)
    assert result.status is Status.CRITICAL
    assert result.message == f"value < 1GiB failed (actual: {3.0 * 2**30}); value < 2GiB failed (actual: {3.0 * 2**30})"


@pytest.mark.parametrize(
    ("policy", "status", "message"),
    [
        ("unknown", Status.UNKNOWN, "the query returned no data (no_data: unknown)"),
        ("critical", Status.CRITICAL, "the query returned no data (no_data: critical)"),
        ("ok", Status.OK, "all conditions passed"),
        ("warning", Status.WARNING, "series_count > 0 failed (actual: 0)"),
    ],
)
def test_empty_result_follows_no_data(
    prometheus_server: PrometheusServer, policy: str, status: Status, message: str
) -> None:
    result = check(prometheus_server.url, "paramedic_absent_metric", "value == 1", no_data=policy)

    assert (result.status, result.message) == (status, message)
    if policy in ("ok", "warning"):
        assert result.observations["no_data"] is True
        assert result.observations["series_count"] == 0


def test_scalar_query(prometheus_server: PrometheusServer) -> None:
    result = check(prometheus_server.url, "scalar(sum(up))", "value >= 1")

    assert result.status is Status.OK, result
    assert result.observations["labels"] == {}


def test_bad_promql_is_unknown_with_prometheus_text(prometheus_server: PrometheusServer) -> None:
    result = check(prometheus_server.url, "rate(up[", "value == 1")

    assert result.status is Status.UNKNOWN
    assert result.error == "AgentSideError"
    assert result.message.startswith("Prometheus rejected the query (HTTP 400): ")
    assert "parse error" in result.message


def test_range_vector_is_unknown(prometheus_server: PrometheusServer) -> None:
    result = check(prometheus_server.url, "up[1m]", "value == 1")

    assert result.status is Status.UNKNOWN
    assert "range vector" in result.message


def test_nothing_listening_is_unknown() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = check(url, "up", "value == 1", timeout="2s")

    assert result.status is Status.UNKNOWN
    assert "is unreachable: connection refused" in result.message


def test_hung_then_stopped_prometheus_is_unknown(throwaway_prometheus: PrometheusServer) -> None:
    prom = throwaway_prometheus
    before = threading.active_count()
    os.kill(prom.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = check(prom.url, "up", "value == 1", timeout="1s")
        elapsed = time.monotonic() - started  # asyncio.run also waits for the worker thread
    finally:
        os.kill(prom.process.pid, signal.SIGCONT)

    assert result.status is Status.UNKNOWN, result
    assert result.error == "DependencyUnavailableError"
    assert result.message == f"Prometheus at {prom.url} did not answer within 900ms"
    assert elapsed < 3.0
    assert threading.active_count() <= before

    prom.process.terminate()
    prom.process.wait(timeout=20)

    result = check(prom.url, "up", "value == 1")

    assert result.status is Status.UNKNOWN
    assert result.error == "DependencyUnavailableError"
    assert result.message == f"Prometheus at {prom.url} is unreachable: connection refused"


def test_auth_header_is_sent_and_never_shown(prometheus_server: PrometheusServer) -> None:
    result = check(prometheus_server.url, "rate(up[", "value == 1",
                   headers="{Authorization: 'Bearer sekrit-token-1'}")

    assert result.status is Status.UNKNOWN
    assert "sekrit-token-1" not in str(result.as_dict())
