"""Unit tests of the prometheus probe's pure parts: spec, result parsing, per-series verdicts."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

from agent.config.model import parse_config
from agent.kernel.conditions import evaluate
from agent.kernel.errors import (
    AgentSideError,
    AuthError,
    DependencyUnavailableError,
    DNSError,
    TargetError,
    TLSError,
)
from checks.prometheus import (
    PrometheusSpec,
    api_error,
    is_series_condition,
    observations,
    parse_result,
    query_budget,
    request_error,
)

URL = "http://127.0.0.1:9090"


def spec(*conditions: Any, **fields: Any) -> PrometheusSpec:
    return PrometheusSpec.model_validate(
        {"name": "p", "type": "prometheus", "url": URL, "query": "up",
         "conditions": list(conditions) or ["value == 1"], **fields}
    )


def vector(*series: tuple[dict[str, str], str]) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [1700000000.5, value]} for labels, value in series]


# --------------------------------------------------------------------------- spec


def test_spec_from_yaml_with_defaults() -> None:
    config = parse_config(
        "checks:\n"
        "  - name: api-up\n"
        "    type: prometheus\n"
        "    url: http://prometheus:9090/\n"
        "    query: 'up{job=\"api\"}'\n"
        "    conditions: ['value == 1']\n"
    )
    check = config.checks[0]
    assert isinstance(check, PrometheusSpec)
    assert check.url == "http://prometheus:9090"
    assert (check.no_data, check.verify_tls, check.max_series, check.headers) == ("unknown", True, 20, {})
    assert check.target() == 'http://prometheus:9090 up{job="api"}'


def test_spec_requires_conditions() -> None:
    with pytest.raises(ValidationError, match="needs conditions"):
        PrometheusSpec.model_validate({"name": "p", "type": "prometheus", "url": URL, "query": "up"})


@pytest.mark.parametrize(
    ("field", "value"),
    [("url", "prometheus:9090"), ("url", "ftp://h/"), ("query", ""), ("no_data", "maybe"),
     ("max_series", 0), ("bogus", 1)],
)
def test_spec_rejects(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        spec(**{field: value})


def test_target_masks_url_password() -> None:
    assert spec(url="https://u:pw@prom:9090").target() == "https://u:***@prom:9090 up"


def test_header_secrets_are_redacted() -> None:
    config = parse_config(
        "checks:\n"
        "  - {name: p, type: prometheus, url: 'http://prom:9090', query: up,\n"
        "     conditions: ['value == 1'], headers: {Authorization: 'Bearer tok-123456'}}\n"
    )
    assert config.redactor.text("sent Bearer tok-123456") == "sent ***"
    assert config.redactor.text("token tok-123456") == "token ***"


def test_importing_the_module_does_not_import_the_client() -> None:
    code = (
        "import sys, checks.prometheus\n"
        "heavy = [m for m in ('prometheus_api_client', 'requests', 'urllib3') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_series_conditions_are_those_naming_value_or_labels() -> None:
    s = spec("value == 1", 'labels.job == "api"', "series_count >= 2", "failed_count <= 1")
    assert [c.expr for c in s.series_conditions()] == ["value == 1", 'labels.job == "api"']
    assert not is_series_condition(s.effective_conditions()[2])


def test_query_budget_is_under_the_timeout() -> None:
    assert query_budget(5.0) == pytest.approx(4.5)
    assert query_budget(1.0) == pytest.approx(0.9)
    assert 0 < query_budget(0.1) < 0.1


# --------------------------------------------------------------------------- parsing


def test_parse_vector_scalar_and_non_finite_values() -> None:
    parsed = parse_result(vector(({"__name__": "up", "node": "a"}, "1"), ({"node": "b"}, "NaN"),
                                 ({"node": "c"}, "+Inf")))
    assert parsed == [({"__name__": "up", "node": "a"}, 1.0), ({"node": "b"}, None), ({"node": "c"}, None)]
    assert parse_result([1700000000.1, "0.25"]) == [({}, 0.25)]
    assert parse_result([]) == []


@pytest.mark.parametrize(
    ("raw", "error", "text"),
    [
        ([{"metric": {}, "values": [[1, "1"], [2, "1"]]}], AgentSideError, "range vector"),
        ([1700000000.1, "hello"], AgentSideError, "string"),
        ({"result": []}, DependencyUnavailableError, "not a list"),
        (["x"], DependencyUnavailableError, "malformed"),
        ([{"metric": {}}], DependencyUnavailableError, "without a value"),
    ],
)
def test_parse_rejects(raw: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        parse_result(raw)


# --------------------------------------------------------------------------- per-series verdicts


def run(s: PrometheusSpec, samples: list[tuple[dict[str, str], float | None]]) -> tuple[int, str, dict[str, Any]]:
    obs = observations(samples, s, 1.0)
    status, _outcomes, message = evaluate(s.effective_conditions(), obs)
    return status, message, obs


def test_every_series_must_hold_and_failures_are_listed() -> None:
    samples = [({"node": "c"}, 1.0), ({"node": "a"}, 1.0), ({"node": "b"}, 0.0)]
    status, message, obs = run(spec("value == 1"), samples)
    assert status == 2
    assert message == "value == 1 failed (actual: 0.0)"
    assert obs["failed_series"] == [{"labels": {"node": "b"}, "value": 0.0, "failed": ["value == 1"]}]
    assert (obs["failed_count"], obs["series_count"], obs["no_data"]) == (1, 3, False)
    assert (obs["value"], obs["labels"]) == (0.0, {"node": "b"})
    assert [s["labels"]["node"] for s in obs["series"]] == ["a", "b", "c"]  # sorted by labels


def test_all_series_holding_is_ok_and_value_is_the_first_series() -> None:
    status, message, obs = run(spec("value == 1"), [({"node": "b"}, 1.0), ({"node": "a"}, 1.0)])
    assert (status, message) == (0, "all conditions passed")
    assert (obs["value"], obs["labels"], obs["failed_series"]) == (1.0, {"node": "a"}, [])


def test_representative_is_the_worst_series_not_the_first_failing() -> None:
    s = spec({"expr": "value < 1GiB", "severity": "warning"}, "value < 2GiB")
    samples = [({"i": "1"}, 1.5 * 2**30), ({"i": "2"}, 3.0 * 2**30), ({"i": "3"}, 0.5 * 2**30)]
    status, message, obs = run(s, samples)
    assert status == 2
    assert obs["labels"] == {"i": "2"}
    assert "value < 2GiB failed" in message
    assert [f["failed"] for f in obs["failed_series"]] == [["value < 1GiB"], ["value < 1GiB", "value < 2GiB"]]


def test_warning_only_failures_give_warning() -> None:
    s = spec({"expr": "value < 1GiB", "severity": "warning"}, "value < 2GiB")
    status, _message, _obs = run(s, [({}, 1.5 * 2**30)])
    assert status == 1


def test_aggregate_conditions_are_evaluated_once() -> None:
    s = spec({"expr": "value == 1", "severity": "warning"}, "failed_count <= 1", "series_count == 3")
    one_down = [({"n": "a"}, 1.0), ({"n": "b"}, 0.0), ({"n": "c"}, 1.0)]
    assert run(s, one_down)[0] == 1
    two_down = [({"n": "a"}, 0.0), ({"n": "b"}, 0.0), ({"n": "c"}, 1.0)]
    status, message, _obs = run(s, two_down)
    assert status == 2
    assert "failed_count <= 1 failed (actual: 2)" in message


def test_label_conditions_apply_per_series() -> None:
    s = spec('labels.node == "b" or value == 1')
    assert run(s, [({"node": "a"}, 1.0), ({"node": "b"}, 0.0)])[0] == 0
    assert run(s, [({"node": "a"}, 0.0), ({"node": "b"}, 0.0)])[0] == 2


def test_non_finite_value_fails_numeric_conditions() -> None:
    status, message, _obs = run(spec("value < 0.05"), [({}, None)])
    assert (status, message) == (2, "value < 0.05 failed (actual: None)")


def test_series_lists_are_capped_but_counted_in_full() -> None:
    samples = [({"i": f"{n:03}"}, 0.0) for n in range(30)]
    _status, _message, obs = run(spec("value == 1", max_series=5), samples)
    assert len(obs["series"]) == len(obs["failed_series"]) == 5
    assert obs["series_count"] == obs["failed_count"] == 30


severities = st.sampled_from(["critical", "warning"])
thresholds = st.floats(min_value=-5, max_value=5, allow_nan=False)


@given(
    values=st.lists(st.one_of(st.none(), st.floats(min_value=-10, max_value=10, allow_nan=False)),
                    min_size=1, max_size=8),
    conds=st.lists(st.tuples(st.sampled_from(["<", ">", "<=", ">=", "=="]), thresholds, severities),
                   min_size=1, max_size=4),
)
def test_engine_verdict_equals_the_worst_per_series_verdict(
    values: list[float | None], conds: list[tuple[str, float, str]]
) -> None:
    s = spec(*({"expr": f"value {op} {limit!r}", "severity": sev} for op, limit, sev in conds))
    samples = [({"i": str(n)}, v) for n, v in enumerate(values)]
    per_series = max(evaluate(s.effective_conditions(), {"value": v, "labels": lab})[0] for lab, v in samples)
    status, _message, obs = run(s, samples)
    assert status == per_series
    assert obs["failed_count"] == sum(
        1 for lab, v in samples if evaluate(s.effective_conditions(), {"value": v, "labels": lab})[0]
    )


# --------------------------------------------------------------------------- no data


def test_no_data_unknown_and_critical_raise() -> None:
    with pytest.raises(AgentSideError, match="no data"):
        observations([], spec(), 1.0)
    with pytest.raises(TargetError, match="no data"):
        observations([], spec(no_data="critical"), 1.0)


def test_no_data_ok_passes_series_conditions_but_not_aggregate_ones() -> None:
    status, message, obs = run(spec("value == 1", no_data="ok"), [])
    assert (status, message) == (0, "all conditions passed")
    assert obs == {"series_count": 0, "no_data": True, "latency_ms": 1.0, "series": [],
                   "failed_series": [], "failed_count": 0}
    assert run(spec("value == 1", "series_count >= 1", no_data="ok"), [])[0] == 2


def test_no_data_warning_warns() -> None:
    status, message, _obs = run(spec("value == 1", no_data="warning"), [])
    assert (status, message) == (1, "series_count > 0 failed (actual: 0)")


def test_no_data_policies_do_not_change_verdicts_with_data() -> None:
    for policy in ("ok", "warning"):
        s = spec("value == 1", no_data=policy)
        assert run(s, [({}, 0.0)])[:2] == (2, "value == 1 failed (actual: 0.0)")
        assert run(s, [({}, 1.0)])[0] == 0


# --------------------------------------------------------------------------- error mapping


def body(text: str) -> str:
    return f"HTTP Status Code {text}"


def test_api_error_bad_query_carries_prometheus_text() -> None:
    raw = (b'{"status":"error","errorType":"bad_data","error":"1:8: parse error: unclosed left '
           b'parenthesis"}')
    err = api_error(body(f"400 ({raw!r})"), URL)
    assert isinstance(err, AgentSideError)
    assert type(err) is AgentSideError
    assert str(err) == "Prometheus rejected the query (HTTP 400): 1:8: parse error: unclosed left parenthesis"


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [(401, AuthError, "refused the credentials (HTTP 401)"),
     (403, AuthError, "refused the credentials (HTTP 403)"),
     (503, DependencyUnavailableError, "failed (HTTP 503): query timed out"),
     (404, DependencyUnavailableError, "answered HTTP 404 (is the url right?)")],
)
def test_api_error_statuses(status: int, error: type[Exception], text: str) -> None:
    raw = b'{"status":"error","errorType":"timeout","error":"query timed out"}'
    err = api_error(body(f"{status} ({raw!r})"), URL)
    assert type(err) is error
    assert text in str(err)


def test_api_error_with_unparseable_text() -> None:
    err = api_error("something odd", URL)
    assert isinstance(err, DependencyUnavailableError)
    assert "something odd" in str(err)
    assert str(api_error(body("502 (b'<html>bad gateway</html>')"), URL)).endswith("failed (HTTP 502)")


def connection_error(reason: Exception) -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/api/v1/query", reason))  # type: ignore[arg-type]


def test_request_error_refused() -> None:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    reason.__cause__ = ConnectionRefusedError(111, "Connection refused")
    err = request_error(connection_error(reason), URL, 0.9)
    assert type(err) is DependencyUnavailableError
    assert str(err) == f"Prometheus at {URL} is unreachable: connection refused"


def test_request_error_refused_from_message_only() -> None:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    err = request_error(connection_error(reason), URL, 0.9)
    assert str(err).endswith("is unreachable: connection refused")


def test_request_error_dns() -> None:
    gai = socket.gaierror(-2, "Name or service not known")
    err = request_error(connection_error(NameResolutionError("prom.invalid", None, gai)), URL, 0.9)  # type: ignore[arg-type]
    assert type(err) is DNSError


def test_request_error_timeout() -> None:
    err = request_error(requests.exceptions.ReadTimeout("read timed out"), URL, 0.9)
    assert type(err) is DependencyUnavailableError
    assert str(err) == f"Prometheus at {URL} did not answer within 900ms"


def test_request_error_tls_verification() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "self-signed certificate"
    exc = requests.exceptions.SSLError(MaxRetryError(None, "/", verify))  # type: ignore[arg-type]
    err = request_error(exc, "https://prom", 0.9)
    assert type(err) is TLSError
    assert str(err) == "TLS certificate of Prometheus at https://prom failed verification: self-signed certificate"


def test_request_error_other() -> None:
    err = request_error(requests.exceptions.TooManyRedirects("loop"), URL, 0.9)
    assert type(err) is DependencyUnavailableError
    assert "TooManyRedirects" in str(err)
