"""Durations as people write them: parsing, formatting and the pydantic type."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from agent.kernel.durations import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("0.25s", 0.25),
        ("2s500ms", 2.5),
        (" 10 s ", 10.0),
        ("10", 10.0),
        ("0.5", 0.5),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "5 parsecs", "5x", "-5s", "s5", "1.s", "5ms5", "five seconds", "1e3s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"input should be a valid duration .*\(got ") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (0.2, "200ms"),
        (0.0005, "0.5ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (3661, "1h1m1s"),
        (0, "0ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**7))
def test_format_then_parse_round_trips_whole_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=1, max_value=999))
def test_format_then_parse_round_trips_milliseconds(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == pytest.approx(ms / 1000)


class _Model(BaseModel):
    d: Duration


@pytest.mark.parametrize(("raw", "seconds"), [("5m", 300.0), (3, 3.0), (0.5, 0.5), ("250ms", 0.25)])
def test_pydantic_type_accepts(raw: object, seconds: float) -> None:
    assert _Model.model_validate({"d": raw}).d == seconds


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("soon", "input should be a valid duration like 500ms, 10s, 5m, 1h (got 'soon')"),
        (True, "input should be a valid duration, not a boolean"),
        (-1, "input should be a valid duration, not negative"),
        ([1], "input should be a valid duration like 10s (got list)"),
    ],
)
def test_pydantic_type_rejects_with_a_readable_message(raw: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        _Model.model_validate({"d": raw})
    errors = info.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"] == ("d",)
    assert message in errors[0]["msg"]


def test_pydantic_type_serializes_readably() -> None:
    assert _Model(d=90).model_dump() == {"d": "1m30s"}
