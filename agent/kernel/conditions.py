"""The condition language shared by every probe type, parsed once at config load.

A condition is a small boolean expression over a probe's observations::

    status_code == 200
    latency_ms < 500                 # also: latency_ms < 500ms, uptime_s > 5m
    json.status == "ok" and json.checks.db in ["up", "degraded"]
    body contains "healthy"
    headers["content-type"] matches "^application/json"
    not in_recovery
    used_memory < 512MiB

Grammar (lowest precedence first)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := operand [ OP operand | "in" list | "contains" operand | "matches" STRING ]
    operand    := path | NUMBER | DURATION | SIZE | STRING | true | false | null
    path       := IDENT ("." IDENT | "[" INT "]" | "[" STRING "]")*

Rules that keep results explainable:

* A duration literal is converted to the unit its path names: ``*_ms`` in milliseconds,
  ``*_s`` in seconds, ``*_days`` in days. Any other pairing is a parse error, so
  ``latency_ms < 5s`` means 5000 and never silently 5.
* A path that is absent from the observations makes its comparison fail (``actual`` is
  ``None``); a type mismatch in ``<``/``>`` fails too, never raises.
* ``actual`` in an outcome is the observed value of the single path in the expression,
  or a ``{path: value}`` mapping when the expression names several.

:func:`compile_condition` raises :class:`ConditionSyntaxError` (a ``ValueError``, so
pydantic reports it with the field's path).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.kernel.durations import parse_duration

Severity = Literal["critical", "warning"]


class ConditionSyntaxError(ValueError):
    """The condition text does not parse; the message says where and why."""


class _Missing:
    """Marker for a path that is not in the observations."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()

_SIZES = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_DURATION_UNITS = {"ms", "s", "m", "h", "d", "w"}
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?P<unit>[A-Za-z]+(?:\d+(?:\.\d+)?[A-Za-z]+)*)?
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>==|!=|<=|>=|<|>)
    | (?P<punct>[\[\](),.])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_\-]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "contains", "matches", "true", "false", "null"}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


@dataclass(frozen=True)
class _Tok:
    kind: str
    value: Any
    pos: int


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Literal_:
    """A constant operand."""

    value: Any

    def eval(self, obs: Mapping[str, Any]) -> Any:
        return self.value

    def paths(self) -> list[Path]:
        return []


@dataclass(frozen=True)
class Duration:
    """A duration literal; converted to its path's unit when the comparison is built."""

    seconds: float


@dataclass(frozen=True)
class Path:
    """A reference into the observations (``json.items[0].id``)."""

    text: str
    parts: tuple[str | int, ...]

    def eval(self, obs: Mapping[str, Any]) -> Any:
        current: Any = obs
        for part in self.parts:
            current = _step(current, part)
            if current is MISSING:
                return MISSING
        return current

    def paths(self) -> list[Path]:
        return [self]


def _step(current: Any, part: str | int) -> Any:
    if isinstance(part, int):
        is_list = isinstance(current, Sequence) and not isinstance(current, str)
        if is_list and -len(current) <= part < len(current):
            return current[part]
        return MISSING
    if isinstance(current, Mapping):
        return current.get(part, MISSING)
    return MISSING


Operand = Literal_ | Path


@dataclass(frozen=True)
class Compare:
    """``left OP right``; fails (never raises) on a missing value or a type mismatch."""

    left: Operand
    op: str
    right: Operand

    def eval(self, obs: Mapping[str, Any]) -> bool:
        a, b = self.left.eval(obs), self.right.eval(obs)
        if a is MISSING or b is MISSING:
            return False
        if self.op in ("==", "!="):
            return _COMPARE[self.op](a, b)
        if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return _COMPARE[self.op](a, b)
        return False

    def paths(self) -> list[Path]:
        return self.left.paths() + self.right.paths()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class InList:
    """``operand in [a, b, c]``."""

    item: Operand
    choices: tuple[Any, ...]

    def eval(self, obs: Mapping[str, Any]) -> bool:
        value = self.item.eval(obs)
        return value is not MISSING and value in self.choices

    def paths(self) -> list[Path]:
        return self.item.paths()


@dataclass(frozen=True)
class Contains:
    """``haystack contains needle``: substring, list element, or mapping key."""

    haystack: Operand
    needle: Operand

    def eval(self, obs: Mapping[str, Any]) -> bool:
        hay, needle = self.haystack.eval(obs), self.needle.eval(obs)
        if hay is MISSING or needle is MISSING:
            return False
        if isinstance(hay, str):
            return isinstance(needle, str) and needle in hay
        if isinstance(hay, Mapping | list | tuple | set | frozenset):
            return needle in hay
        return False

    def paths(self) -> list[Path]:
        return self.haystack.paths() + self.needle.paths()


@dataclass(frozen=True)
class Matches:
    """``operand matches "regex"`` (search, not full match)."""

    item: Operand
    pattern: re.Pattern[str]

    def eval(self, obs: Mapping[str, Any]) -> bool:
        value = self.item.eval(obs)
        if value is MISSING or value is None:
            return False
        return self.pattern.search(value if isinstance(value, str) else str(value)) is not None

    def paths(self) -> list[Path]:
        return self.item.paths()


@dataclass(frozen=True)
class Truthy:
    """A bare operand used as a boolean (``in_recovery``, ``oom_killed``)."""

    item: Operand

    def eval(self, obs: Mapping[str, Any]) -> bool:
        value = self.item.eval(obs)
        return value is not MISSING and bool(value)

    def paths(self) -> list[Path]:
        return self.item.paths()


@dataclass(frozen=True)
class Not:
    """``not expr``."""

    inner: Node

    def eval(self, obs: Mapping[str, Any]) -> bool:
        return not self.inner.eval(obs)

    def paths(self) -> list[Path]:
        return self.inner.paths()


@dataclass(frozen=True)
class BoolOp:
    """``a and b and c`` / ``a or b``, short-circuiting."""

    op: Literal["and", "or"]
    items: tuple[Node, ...]

    def eval(self, obs: Mapping[str, Any]) -> bool:
        if self.op == "and":
            return all(item.eval(obs) for item in self.items)
        return any(item.eval(obs) for item in self.items)

    def paths(self) -> list[Path]:
        return [p for item in self.items for p in item.paths()]


Node = Compare | InList | Contains | Matches | Truthy | Not | BoolOp


# --------------------------------------------------------------------------- parser


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            start = len(text) - len(text[pos:].lstrip())
            raise ConditionSyntaxError(f"unexpected character {text[start]!r} at column {start + 1}")
        tokens.append(_classify(m))
        pos = m.end()
    tokens.append(_Tok("end", None, len(text)))
    return tokens


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def _unescape(raw: str) -> str:
    """Resolve ``\\n \\t \\r \\\\ \\" \\'``; keep other escapes (``\\d`` in a regex) as written."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), raw, flags=re.S)


def _classify(m: re.Match[str]) -> _Tok:
    if m.group("number") is not None:
        return _number_token(m.group("number"), m.group("unit"), m.start("number"))
    pos = m.start(m.lastgroup or 0)
    if m.group("string") is not None:
        raw = m.group("string")
        return _Tok("string", _unescape(raw[1:-1]), pos)
    if m.group("op") is not None:
        return _Tok("op", m.group("op"), pos)
    if m.group("punct") is not None:
        return _Tok(m.group("punct"), m.group("punct"), pos)
    word = m.group("ident")
    return _Tok("kw" if word in _KEYWORDS else "ident", word, pos)


def _number_token(number: str, unit: str | None, pos: int) -> _Tok:
    value = float(number) if any(c in number for c in ".eE") else int(number)
    if unit is None:
        return _Tok("literal", value, pos)
    if unit in _DURATION_UNITS or any(c.isdigit() for c in unit):  # 500ms, 1h30m
        try:
            seconds = parse_duration(f"{number.lstrip('-')}{unit}")
        except ValueError:
            raise ConditionSyntaxError(f"invalid duration {number}{unit} at column {pos + 1}") from None
        return _Tok("duration", Duration(-seconds if number.startswith("-") else seconds), pos)
    if unit in _SIZES:
        return _Tok("literal", value * _SIZES[unit], pos)
    raise ConditionSyntaxError(f"unknown unit {unit!r} after {number} at column {pos + 1}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, expected: str) -> ConditionSyntaxError:
        tok = self.tok
        found = "end of expression" if tok.kind == "end" else repr(str(tok.value))
        return ConditionSyntaxError(f"expected {expected} at column {tok.pos + 1}, found {found}")

    def is_kw(self, word: str) -> bool:
        return self.tok.kind == "kw" and self.tok.value == word

    def parse(self) -> Node:
        node = self.expr()
        if self.tok.kind != "end":
            raise self.error("'and', 'or' or the end")
        return node

    def expr(self) -> Node:
        items = [self.and_expr()]
        while self.is_kw("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.is_kw("and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_expr(self) -> Node:
        if self.is_kw("not"):
            self.take()
            return Not(self.not_expr())
        if self.tok.kind == "(":
            self.take()
            node = self.expr()
            if self.tok.kind != ")":
                raise self.error("')'")
            self.take()
            return node
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        if self.tok.kind == "op":
            op = self.take().value
            return _build_compare(left, op, self.operand())
        if self.is_kw("in"):
            self.take()
            return InList(_plain(left), self.list_literal())
        if self.is_kw("contains"):
            self.take()
            return Contains(_plain(left), _plain(self.operand()))
        if self.is_kw("matches"):
            self.take()
            return Matches(_plain(left), self.regex())
        return Truthy(_plain(left))

    def regex(self) -> re.Pattern[str]:
        if self.tok.kind != "string":
            raise self.error("a quoted regular expression")
        text = self.take().value
        try:
            return re.compile(text)
        except re.error as exc:
            raise ConditionSyntaxError(f"invalid regular expression {text!r}: {exc}") from None

    def list_literal(self) -> tuple[Any, ...]:
        if self.tok.kind != "[":
            raise self.error("'[' to start a list")
        self.take()
        values: list[Any] = []
        while self.tok.kind != "]":
            start = self.tok
            item = self.operand()
            if not isinstance(item, Literal_):
                raise ConditionSyntaxError(f"expected a literal value in the list at column {start.pos + 1}")
            values.append(item.value)
            if self.tok.kind == ",":
                self.take()
            elif self.tok.kind != "]":
                raise self.error("',' or ']'")
        self.take()
        return tuple(values)

    def operand(self) -> Operand | Duration:
        tok = self.tok
        if tok.kind in ("literal", "string"):
            self.take()
            return Literal_(tok.value)
        if tok.kind == "duration":
            self.take()
            value: Duration = tok.value
            return value
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            self.take()
            return Literal_({"true": True, "false": False, "null": None}[tok.value])
        if tok.kind == "ident":
            return self.path()
        raise self.error("a field name or a value")

    def path(self) -> Path:
        start = self.tok.pos
        parts: list[str | int] = [self.take().value]
        while self.tok.kind in (".", "["):
            if self.take().kind == ".":
                if self.tok.kind not in ("ident", "kw"):
                    raise self.error("a field name after '.'")
                parts.append(self.take().value)
                continue
            key = self.take()
            if key.kind == "string" or (key.kind == "literal" and isinstance(key.value, int)):
                parts.append(key.value)
            else:
                raise ConditionSyntaxError(f"expected an index or a quoted key at column {key.pos + 1}")
            if self.tok.kind != "]":
                raise self.error("']'")
            self.take()
        end = self.tokens[self.i - 1].pos + len(str(self.tokens[self.i - 1].value))
        return Path(self.text[start:end].strip(), tuple(parts))


def _plain(operand: Operand | Duration) -> Operand:
    if isinstance(operand, Duration):
        raise ConditionSyntaxError("a duration can only be compared with ==, !=, <, <=, >, >=")
    return operand


_DURATION_SCALE = (("_ms", 1000.0), ("_s", 1.0), ("_days", 1 / 86400), ("days_left", 1 / 86400))


def _build_compare(left: Operand | Duration, op: str, right: Operand | Duration) -> Compare:
    """Resolve duration literals into the unit named by the other side's path."""
    if isinstance(left, Duration) and isinstance(right, Duration):
        raise ConditionSyntaxError("cannot compare two durations with each other")
    if isinstance(left, Duration):
        return Compare(_duration_literal(left, right), op, _plain(right))
    if isinstance(right, Duration):
        return Compare(left, op, _duration_literal(right, left))
    return Compare(left, op, right)


def _duration_literal(duration: Duration, other: Operand | Duration) -> Literal_:
    if isinstance(other, Path):
        name = str(other.parts[-1])
        for suffix, scale in _DURATION_SCALE:
            if name.endswith(suffix):
                return Literal_(round(duration.seconds * scale, 9))  # 51ms is 51, not 51.00000000000001
    raise ConditionSyntaxError(
        "a duration literal needs a field whose name ends in _ms, _s, _days or days_left "
        f"(to know the unit), not {getattr(other, 'text', other)!r}"
    )


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class CompiledCondition:
    """A parsed condition: evaluate it with :meth:`check`."""

    expr: str
    node: Node
    severity: Severity = "critical"

    def check(self, observations: Mapping[str, Any]) -> tuple[bool, Any]:
        """Return ``(held, actual)`` where ``actual`` is the observed value(s) it looked at."""
        ok = bool(self.node.eval(observations))
        return ok, self._actual(observations)

    def _actual(self, observations: Mapping[str, Any]) -> Any:
        seen: dict[str, Any] = {}
        for path in self.node.paths():
            value = path.eval(observations)
            seen[path.text] = None if value is MISSING else value
        if len(seen) == 1:
            return next(iter(seen.values()))
        return seen or None


def compile_condition(text: str, severity: Severity = "critical") -> CompiledCondition:
    """Parse ``text`` into a :class:`CompiledCondition` or raise :class:`ConditionSyntaxError`."""
    if not text or not text.strip():
        raise ConditionSyntaxError("condition is empty")
    return CompiledCondition(text.strip(), _Parser(text).parse(), severity)


def evaluate(
    conditions: Sequence[CompiledCondition], observations: Mapping[str, Any]
) -> tuple[int, list[tuple[CompiledCondition, bool, Any]], str]:
    """Evaluate every condition; return ``(status, outcomes, message)``.

    ``status`` is a Nagios code: 2 when a critical condition failed, 1 when only
    warning-severity ones did, 0 otherwise. ``message`` names each failed condition with
    its actual value, so a person reading one line knows what was wrong.
    """
    outcomes = []
    failed: list[str] = []
    status = 0
    for cond in conditions:
        ok, actual = cond.check(observations)
        outcomes.append((cond, ok, actual))
        if not ok:
            status = max(status, 2 if cond.severity == "critical" else 1)
            failed.append(f"{cond.expr} failed (actual: {_show(actual)})")
    return status, outcomes, "; ".join(failed) if failed else "all conditions passed"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 120 else text[:117] + "..."
