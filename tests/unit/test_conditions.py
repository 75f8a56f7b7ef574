"""The condition language: parsing, evaluation, ``actual`` values, syntax errors, severities."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.kernel.conditions import ConditionSyntaxError, compile_condition, evaluate

OBS: dict[str, Any] = {
    "status_code": 200,
    "latency_ms": 120.5,
    "connect_ms": 3.2,
    "uptime_s": 400,
    "cert_days": 30,
    "used_memory": 100 * 2**20,
    "disk_bytes": 3 * 10**9,
    "in_recovery": False,
    "oom_killed": False,
    "role": "primary",
    "body": "all healthy, version 1.4.2",
    "headers": {"content-type": "application/json; charset=utf-8", "x-request-id": "abc-123"},
    "json": {
        "status": "ok",
        "version": "1.4.2",
        "checks": {"db": "up", "cache": "degraded"},
        "items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "a.b": {"c": 3},
        "odd key": "yes",
        "nothing": None,
        "ratio": 0.05,
        "flags": ["x", "y"],
    },
    "replicas": 3,
    "nothing": None,
}


def holds(expr: str, obs: dict[str, Any] | None = None) -> bool:
    ok, _ = compile_condition(expr).check(OBS if obs is None else obs)
    return ok


def actual(expr: str, obs: dict[str, Any] | None = None) -> Any:
    _, value = compile_condition(expr).check(OBS if obs is None else obs)
    return value


# ---------------------------------------------------------------- comparisons

@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("status_code == 200", True),
        ("status_code == 201", False),
        ("status_code != 500", True),
        ("status_code != 200", False),
        ("status_code < 300", True),
        ("status_code < 200", False),
        ("status_code <= 200", True),
        ("status_code <= 199", False),
        ("status_code > 199", True),
        ("status_code > 200", False),
        ("status_code >= 200", True),
        ("status_code >= 201", False),
        ("latency_ms < 120.6", True),
        ("latency_ms < 1.2e2", False),
        ("json.ratio > 0.01", True),
        ("replicas >= -1", True),
        ("200 == status_code", True),
        ("300 > status_code", True),
        ("status_code==200", True),
        ("  status_code  ==  200  ", True),
    ],
)
def test_numbers(expr: str, expected: bool) -> None:
    assert holds(expr) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('role == "primary"', True),
        ("role == 'primary'", True),
        ('role != "replica"', True),
        ('role == "Primary"', False),
        ('role < "secondary"', True),
        ('role > "secondary"', False),
        ('role >= "primary"', True),
        ('json.version == "1.4.2"', True),
        ('json.status == "ok"', True),
        ('json.status == "fail"', False),
        ('"ok" == json.status', True),
    ],
)
def test_strings(expr: str, expected: bool) -> None:
    assert holds(expr) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("in_recovery == false", True),
        ("in_recovery == true", False),
        ("json.nothing == null", True),
        ("nothing == null", True),
        ("nothing != null", False),
        ("json.status != null", True),
    ],
)
def test_booleans_and_null(expr: str, expected: bool) -> None:
    assert holds(expr) is expected


# ---------------------------------------------------------------- durations and sizes

@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("latency_ms < 500ms", True),
        ("latency_ms < 100ms", False),
        ("latency_ms < 1s", True),
        ("latency_ms < 0.1s", False),
        ("latency_ms <= 120.5ms", True),
        ("uptime_s > 5m", True),
        ("uptime_s > 10m", False),
        ("uptime_s < 1h", True),
        ("uptime_s >= 6m40s", True),
        ("uptime_s > 6m40s", False),
        ("cert_days > 2w", True),
        ("cert_days > 5w", False),
        ("cert_days >= 30d", True),
        ("500ms > latency_ms", True),
        ("uptime_s > -5s", True),
        ("connect_ms < 3.5ms", True),
    ],
)
def test_durations_convert_to_the_fields_unit(expr: str, expected: bool) -> None:
    assert holds(expr) is expected


def test_duration_literal_takes_the_unit_of_the_field() -> None:
    # 5s means 5000 for a *_ms field, never 5.
    assert holds("latency_ms < 5s", {"latency_ms": 4999})
    assert not holds("latency_ms < 5s", {"latency_ms": 5001})
    assert holds("uptime_s == 1m", {"uptime_s": 60})
    assert holds("cert_days == 36h", {"cert_days": 1.5})


@pytest.mark.parametrize(
    "expr",
    [
        "latency < 5s",  # no unit suffix on the field
        "uptime > 5m",
        "status_code == 200ms",
        'json.status == 1s',
        "5s < 3s",
        "latency_ms contains 5s",
        "latency_ms in [5s]",
    ],
)
def test_durations_need_a_field_with_a_unit_suffix(expr: str) -> None:
    with pytest.raises(ConditionSyntaxError):
        compile_condition(expr)


def test_duration_error_says_why() -> None:
    with pytest.raises(ConditionSyntaxError, match=r"ends in _ms, _s, _days or days_left .* not 'latency'"):
        compile_condition("latency < 5s")


@pytest.mark.parametrize(
    ("expr", "obs", "expected"),
    [
        ("used_memory < 512MiB", {"used_memory": 512 * 2**20 - 1}, True),
        ("used_memory < 512MiB", {"used_memory": 512 * 2**20}, False),
        ("used_memory <= 1GiB", {"used_memory": 2**30}, True),
        ("used_memory > 1KiB", {"used_memory": 1025}, True),
        ("disk_bytes < 3GB", {"disk_bytes": 3 * 10**9}, False),
        ("disk_bytes <= 3GB", {"disk_bytes": 3 * 10**9}, True),
        ("disk_bytes > 2.5GB", {"disk_bytes": 3 * 10**9}, True),
        ("disk_bytes == 1TiB", {"disk_bytes": 2**40}, True),
        ("disk_bytes == 10MB", {"disk_bytes": 10_000_000}, True),
        ("disk_bytes == 5KB", {"disk_bytes": 5000}, True),
        ("disk_bytes == 7B", {"disk_bytes": 7}, True),
    ],
)
def test_sizes(expr: str, obs: dict[str, Any], expected: bool) -> None:
    assert holds(expr, obs) is expected


def test_unknown_unit_is_a_syntax_error_at_the_number() -> None:
    with pytest.raises(ConditionSyntaxError, match=r"unknown unit 'parsecs' after 5 at column 14"):
        compile_condition("latency_ms < 5parsecs")


@pytest.mark.parametrize(("expr", "column"), [("uptime_s > 1e3s", 12), ("uptime_s > 5m3x", 12)])
def test_malformed_duration_is_a_syntax_error(expr: str, column: int) -> None:
    with pytest.raises(ConditionSyntaxError, match=rf"invalid duration .* at column {column}$"):
        compile_condition(expr)


# ---------------------------------------------------------------- in / contains / matches

@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('json.checks.db in ["up", "degraded"]', True),
        ('json.checks.cache in ["up"]', False),
        ("status_code in [200, 204]", True),
        ("status_code in [500, 503,]", False),
        ("status_code in []", False),
        ("json.nothing in [null, 1]", True),
        ("missing in [null]", False),
        ('body contains "healthy"', True),
        ('body contains "sick"', False),
        ("body contains json.version", True),
        ('json.checks contains "db"', True),
        ('json.checks contains "queue"', False),
        ('json.flags contains "y"', True),
        ('json.flags contains "z"', False),
        ("status_code contains 2", False),
        ("body contains 1", False),
        ('headers["content-type"] matches "^application/json"', True),
        ('headers["content-type"] matches "^text/"', False),
        (r'json.version matches "^\d+\.\d+\.\d+$"', True),
        (r'body matches "version \\d"', True),
        ('status_code matches "^2"', True),
        ('missing matches ".*"', False),
        ('nothing matches ".*"', False),
    ],
)
def test_in_contains_matches(expr: str, expected: bool) -> None:
    assert holds(expr) is expected


def test_matches_searches_not_fullmatch() -> None:
    assert holds('body matches "healthy"')


def test_strings_keep_unicode_and_escapes() -> None:
    assert holds('body contains "héllo ✓"', {"body": "say héllo ✓"})
    assert holds(r'body contains "say \"hi\""', {"body": 'they say "hi"'})
    assert holds(r"body contains 'it\'s'", {"body": "it's"})
    assert holds(r'body contains "a\nb"', {"body": "a\nb"})
    assert holds(r'body contains "back\\slash"', {"body": "back\\slash"})


# ---------------------------------------------------------------- boolean logic

@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("status_code == 200 and latency_ms < 500", True),
        ("status_code == 200 and latency_ms < 100", False),
        ("status_code == 500 or latency_ms < 500", True),
        ("status_code == 500 or latency_ms < 100", False),
        ("not status_code == 500", True),
        ("not status_code == 200", False),
        ("not in_recovery", True),
        ("in_recovery", False),
        ("status_code", True),
        ("not not status_code", True),
        ("not missing", True),
        ("missing", False),
        ("json.items", True),
        ("json.nothing", False),
        # precedence: not > and > or
        ("status_code == 200 or status_code == 204 and role == \"replica\"", True),
        ("(status_code == 200 or status_code == 204) and role == \"replica\"", False),
        ("status_code == 500 and role == \"x\" or role == \"primary\"", True),
        ("status_code == 500 and (role == \"x\" or role == \"primary\")", False),
        ("not status_code == 500 and in_recovery", False),
        ("not (status_code == 500 and in_recovery)", True),
        ("((status_code == 200))", True),
        ("a == 1 or b == 2 or status_code == 200", True),
        ("status_code == 200 and replicas == 3 and role == \"primary\" and not oom_killed", True),
    ],
)
def test_logic_and_precedence(expr: str, expected: bool) -> None:
    assert holds(expr) is expected


def test_keyword_names_are_reachable_after_a_dot() -> None:
    # a field called like a keyword is reachable after a dot
    assert holds("json.in == 1", {"json": {"in": 1}})


# ---------------------------------------------------------------- paths

@pytest.mark.parametrize(
    ("expr", "expected_actual"),
    [
        ("json.items[0].id == 1", 1),
        ("json.items[1].name == \"b\"", "b"),
        ("json.items[-1].id == 2", 2),
        ('json["a.b"].c == 3', 3),
        ("json['a.b']['c'] == 3", 3),
        ('json["odd key"] == "yes"', "yes"),
        ('headers["x-request-id"] == "abc-123"', "abc-123"),
        ("headers.x-request-id == \"abc-123\"", "abc-123"),
        ('json.checks["db"] == "up"', "up"),
    ],
)
def test_json_paths(expr: str, expected_actual: Any) -> None:
    ok, value = compile_condition(expr).check(OBS)
    assert ok
    assert value == expected_actual


@pytest.mark.parametrize(
    "expr",
    [
        "missing == 1",
        "missing != 1",
        "missing < 1",
        "json.items[5].id == 1",
        "json.items[-3].id == 1",
        "json.status.deeper == 1",
        "json.items.id == 1",
        'json["nope"] == 1',
        "body[0] == \"a\"",
        "status_code.x == 1",
    ],
)
def test_missing_paths_fail_with_actual_none(expr: str) -> None:
    ok, value = compile_condition(expr).check(OBS)
    assert ok is False
    assert value is None


@pytest.mark.parametrize(
    "expr",
    [
        "body < 5",
        'status_code < "300"',
        "json.items > 1",
        "json.checks >= 0",
        "in_recovery < 1",
        "nothing < 1",
        "json.items <= 1",
    ],
)
def test_type_mismatch_fails_without_raising(expr: str) -> None:
    assert holds(expr) is False


def test_equality_across_types_is_just_false() -> None:
    assert holds('status_code == "200"') is False
    assert holds('status_code != "200"') is True


# ---------------------------------------------------------------- actual values

def test_actual_is_the_single_observed_value() -> None:
    assert actual("status_code == 500") == 200
    assert actual("latency_ms < 500ms") == 120.5
    assert actual("json.items[0]") == {"id": 1, "name": "a"}


def test_actual_names_every_path_when_there_are_several() -> None:
    assert actual("status_code == 200 and latency_ms < 100") == {"status_code": 200, "latency_ms": 120.5}
    assert actual('body contains json.version') == {"body": OBS["body"], "json.version": "1.4.2"}
    assert actual('not (json.ok) or headers["x-request-id"]=="x"', {"json": {"ok": 1}}) == {
        "json.ok": 1,
        'headers["x-request-id"]': None,
    }


def test_actual_for_repeated_path_is_single() -> None:
    assert actual("status_code >= 200 and status_code < 400") == 200


def test_actual_is_none_without_paths() -> None:
    assert actual("1 == 1") is None


# ---------------------------------------------------------------- syntax errors

@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("latency_ms <", "expected a field name or a value at column 13, found end of expression"),
        ("status_code == 200 200", "expected 'and', 'or' or the end at column 20, found '200'"),
        ("status_code @ 200", "unexpected character '@' at column 13"),
        ("(status_code == 200", "expected ')' at column 20, found end of expression"),
        ("status_code in 200", "expected '[' to start a list at column 16, found '200'"),
        ("status_code in [200 204]", "expected ',' or ']' at column 21, found '204'"),
        ("x in [1, y]", "expected a literal value in the list at column 10"),
        ("json.", "expected a field name after '.' at column 6, found end of expression"),
        ("json[x] == 1", "expected an index or a quoted key at column 6"),
        ('json["a" == 1', "expected ']' at column 10, found '=='"),
        ("body matches healthy", "expected a quoted regular expression at column 14, found 'healthy'"),
        ("status_code == 200 and", "expected a field name or a value at column 23, found end of expression"),
        ("== 200", "expected a field name or a value at column 1, found '=='"),
        ('body contains "unterminated', "unexpected character '\"' at column 15"),
    ],
)
def test_syntax_errors_say_where(expr: str, message: str) -> None:
    with pytest.raises(ConditionSyntaxError) as info:
        compile_condition(expr)
    assert str(info.value) == message


@pytest.mark.parametrize("expr", ["", "   "])
def test_empty_condition_is_an_error(expr: str) -> None:
    with pytest.raises(ConditionSyntaxError, match="condition is empty"):
        compile_condition(expr)


def test_bad_regex_is_a_syntax_error() -> None:
    with pytest.raises(ConditionSyntaxError, match=r"invalid regular expression '\(':"):
        compile_condition('body matches "("')


def test_syntax_error_is_a_value_error() -> None:
    # pydantic reports ValueErrors from validators with the field's path
    assert issubclass(ConditionSyntaxError, ValueError)


def test_expr_is_kept_stripped() -> None:
    assert compile_condition("  status_code == 200 ").expr == "status_code == 200"


# ---------------------------------------------------------------- evaluate()

def test_evaluate_all_pass_is_ok() -> None:
    conditions = [compile_condition("status_code == 200"), compile_condition("latency_ms < 500ms", "warning")]
    status, outcomes, message = evaluate(conditions, OBS)
    assert status == 0
    assert message == "all conditions passed"
    assert [(c.expr, ok, value) for c, ok, value in outcomes] == [
        ("status_code == 200", True, 200),
        ("latency_ms < 500ms", True, 120.5),
    ]


def test_evaluate_only_warning_failures_is_warning() -> None:
    conditions = [
        compile_condition("status_code == 200"),
        compile_condition("latency_ms < 100", "warning"),
        compile_condition('body contains "v2"', "warning"),
    ]
    status, outcomes, message = evaluate(conditions, OBS)
    assert status == 1
    assert [ok for _, ok, _ in outcomes] == [True, False, False]
    assert message == (
        "latency_ms < 100 failed (actual: 120.5); "
        "body contains \"v2\" failed (actual: 'all healthy, version 1.4.2')"
    )


def test_evaluate_a_critical_failure_wins_over_warnings() -> None:
    conditions = [compile_condition("latency_ms < 100", "warning"), compile_condition("status_code == 500")]
    status, _, message = evaluate(conditions, OBS)
    assert status == 2
    assert message == "latency_ms < 100 failed (actual: 120.5); status_code == 500 failed (actual: 200)"


def test_evaluate_with_no_conditions_is_ok() -> None:
    assert evaluate([], OBS)[0] == 0


def test_evaluate_message_shows_missing_as_none_and_truncates_long_values() -> None:
    status, _, message = evaluate([compile_condition("missing == 1")], OBS)
    assert (status, message) == (2, "missing == 1 failed (actual: None)")
    _, _, message = evaluate([compile_condition('body contains "z"')], {"body": "x" * 500})
    assert len(message) < 200
    assert message.endswith("...)")


# ---------------------------------------------------------------- properties

_OPS = {"==": int.__eq__, "!=": int.__ne__, "<": int.__lt__, "<=": int.__le__, ">": int.__gt__, ">=": int.__ge__}
_ints = st.integers(min_value=-(10**12), max_value=10**12)


@given(a=_ints, b=_ints, op=st.sampled_from(sorted(_OPS)))
def test_integer_comparison_matches_python(a: int, b: int, op: str) -> None:
    cond = compile_condition(f"x {op} {b}")
    assert cond.check({"x": a}) == (_OPS[op](a, b), a)


@given(a=_ints, b=_ints, op=st.sampled_from(sorted(_OPS)))
def test_not_negates(a: int, b: int, op: str) -> None:
    plain = compile_condition(f"x {op} {b}").check({"x": a})[0]
    assert compile_condition(f"not (x {op} {b})").check({"x": a})[0] is (not plain)


@given(a=_ints, b=_ints, c=_ints)
def test_and_or_match_python(a: int, b: int, c: int) -> None:
    obs = {"x": a, "y": b}
    assert compile_condition(f"x < {c} and y < {c}").check(obs)[0] is (a < c and b < c)
    assert compile_condition(f"x < {c} or y < {c}").check(obs)[0] is (a < c or b < c)


@given(ms=st.integers(min_value=0, max_value=10**6), limit=st.integers(min_value=0, max_value=10**4))
def test_duration_literal_in_ms_field(ms: int, limit: int) -> None:
    assert compile_condition(f"latency_ms < {limit}ms").check({"latency_ms": ms})[0] is (ms < limit)
    assert compile_condition(f"latency_ms < {limit}s").check({"latency_ms": ms})[0] is (ms < limit * 1000)


@given(text=st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters='"\\'), max_size=30))
def test_string_literals_round_trip(text: str) -> None:
    assert compile_condition(f'v == "{text}"').check({"v": text})[0] is True
