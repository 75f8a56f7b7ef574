"""``check --output nagios``: the status line and its performance data, as a pure function of Results."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent.cli.nagios import MAX_NAMED, label, number, perfdata, results_nagios, status_line, unknown_line
from agent.kernel.redact import Redactor
from agent.kernel.results import Result, Status

#: One perfdata item as the Nagios plugin guidelines define it: 'label'=value[UOM];[warn];[crit];[min];[max]
PERF_ITEM = re.compile(r"^('(?:[^']|'')+'|[^ '=]+)=-?\d+(?:\.\d+)?(?:s|%|B|c)?(?:;[^; ]*){0,4}$")


def result(name: str, status: Status = Status.OK, message: str = "ok", duration_ms: float = 5.0,
           **observations: Any) -> Result:
    return Result(name, "http", status, message, duration_ms, observations=observations)


def test_all_ok_says_so_with_latency_perfdata() -> None:
    out = results_nagios([result("app", latency_ms=4.0), result("db", latency_ms=2.5)])
    assert out == "PARAMEDIC OK - 2 of 2 checks OK | app_latency=0.004s;;; db_latency=0.0025s;;;"


def test_the_issue_example() -> None:
    results = [result("app-health", Status.CRITICAL, "status_code == 200 failed (actual: 503)", latency_ms=4.0),
               result("pg", latency_ms=2.0)] + [result(f"c{i}") for i in range(7)]
    first, *long_text = results_nagios(results).splitlines()
    text, perf = first.split(" | ")
    assert text == "PARAMEDIC CRITICAL - 1 of 9 checks failing: app-health (status_code == 200 failed (actual: 503))"
    assert perf.startswith("app-health_latency=0.004s;;; pg_latency=0.002s;;; c0_latency=0.005s;;;")
    assert long_text == ["CRITICAL app-health: status_code == 200 failed (actual: 503)"]


def test_status_word_is_the_worst_status_and_failing_are_worst_first() -> None:
    results = [result("w", Status.WARNING, "slow"), result("u", Status.UNKNOWN, "bad password"),
               result("c", Status.CRITICAL, "refused"), result("ok")]
    line = status_line(results)
    assert line == "PARAMEDIC CRITICAL - 3 of 4 checks failing: c (refused), u (bad password), w (slow)"
    assert status_line([result("w", Status.WARNING, "slow"), result("ok")]).startswith("PARAMEDIC WARNING - 1 of 2")
    assert status_line([result("u", Status.UNKNOWN, "dns")]) == "PARAMEDIC UNKNOWN - 1 of 1 check failing: u (dns)"


def test_status_line_names_a_few_and_counts_the_rest_long_text_has_all() -> None:
    results = [result(f"c{i}", Status.CRITICAL, "refused") for i in range(MAX_NAMED + 2)]
    out = results_nagios(results).splitlines()
    assert out[0].split(" | ")[0].endswith("c2 (refused) and 2 more")
    assert out[1:] == [f"CRITICAL c{i}: refused" for i in range(MAX_NAMED + 2)]


def test_long_messages_are_cut_on_the_status_line_only() -> None:
    message = "x" * 300
    out = results_nagios([result("a", Status.CRITICAL, message)]).splitlines()
    assert "x" * 97 + "..." in out[0]
    assert "x" * 98 not in out[0]
    assert out[1] == f"CRITICAL a: {message}"


def test_text_never_holds_a_pipe_or_a_line_break() -> None:
    out = results_nagios([result("a", Status.CRITICAL, 'body matches "a|b" failed\nsecond line')])
    first, second = out.splitlines()
    assert first.count("|") == 1  # only the perfdata separator
    assert 'body matches "a/b" failed second line' in first
    assert second == 'CRITICAL a: body matches "a/b" failed second line'


def test_latency_falls_back_to_the_run_duration() -> None:
    assert perfdata(result("tcp", duration_ms=12.5)) == ["tcp_latency=0.0125s;;;"]


def test_observations_with_a_unit_become_perfdata_sorted_by_name() -> None:
    r = result("disk", used_percent=85.1234, used_bytes=1_000_000_000, free_bytes=2.5e9, used_ratio=0.85,
               inodes_used=10, longest_query_s=1.5, days_left=12.25, tls_days_left=40.0, value=0.0123,
               latency_ms=1.0, read_only=False, connected=True, state="running", flag_s=True,
               nan_s=float("nan"), containers=[{"uptime_s": 3}])
    assert perfdata(r) == [
        "disk_latency=0.001s;;;",
        "disk_days_left=12.25;;;",
        "disk_free_bytes=2500000000B;;;",
        "disk_longest_query=1.5s;;;",
        "disk_tls_days_left=40;;;",
        "disk_used_bytes=1000000000B;;;",
        "disk_used=85.12%;;;",
        "disk_value=0.0123;;;",
    ]


def test_labels_stay_unique() -> None:
    r = result("a", used_s=1.0, used_percent=50.0, latency_s=2.0)
    labels = [item.split("=")[0] for item in perfdata(r)]
    assert labels == ["a_latency", "a_latency_s", "a_used", "a_used_s"]  # by name: used_percent first
    assert len(set(labels)) == len(labels)


def test_every_item_matches_the_plugin_guidelines_format() -> None:
    r = result("odd name=x", Status.CRITICAL, "down", latency_ms=0.00001, used_percent=100.0, value=-3e-9,
               free_bytes=1e16, uptime_s=123456.789)
    _, perf = results_nagios([r]).splitlines()[0].split(" | ")
    items = re.findall(r"'(?:[^']|'')+'=\S+|\S+", perf)
    assert items
    for item in items:
        assert PERF_ITEM.match(item), item
    assert "e-" not in perf
    assert "e+" not in perf


@pytest.mark.parametrize(("value", "places", "text"), [
    (0.0039, 6, "0.0039"), (0.00001, 6, "0.00001"), (0.0000001, 6, "0"), (85.12345, 2, "85.12"), (3.0, 6, "3"),
    (2.5e9, 0, "2500000000"), (1e16, 0, "10000000000000000"), (-0.0, 6, "0"), (-2.5, 6, "-2.5"),
])
def test_numbers_are_plain_decimals(value: float, places: int, text: str) -> None:
    assert number(value, places) == text


@pytest.mark.parametrize(("name", "quoted"), [
    ("app-health_latency", "app-health_latency"), ("a b", "'a b'"), ("a=b", "'a=b'"), ("it's", "'it''s'"),
])
def test_labels_are_quoted_when_they_need_it(name: str, quoted: str) -> None:
    assert label(name) == quoted


def test_secrets_are_masked_on_every_line() -> None:
    redactor = Redactor(["hunter2-token"])
    out = results_nagios([result("api", Status.CRITICAL, "401 for token hunter2-token")], redactor.text)
    assert "hunter2-token" not in out
    assert "***" in out.splitlines()[0]
    assert "***" in out.splitlines()[1]


def test_the_output_is_deterministic() -> None:
    results = [result("b", Status.WARNING, "slow", z_s=1.0, a_s=2.0), result("a", latency_ms=3.0)]
    assert results_nagios(results) == results_nagios(list(results))
    first = results_nagios(results).splitlines()[0]
    assert first.endswith("| b_latency=0.005s;;; b_a=2s;;; b_z=1s;;; a_latency=0.003s;;;")


def test_unknown_line_for_a_config_or_usage_problem() -> None:
    line = unknown_line("config x.yaml is invalid | bad\nthing")
    assert line == "PARAMEDIC UNKNOWN - config x.yaml is invalid / bad thing"
