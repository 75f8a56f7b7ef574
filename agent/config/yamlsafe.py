"""Reading a config file with bounds: YAML that cannot blow up, hang or be ambiguous.

A config comes from a file someone may get wrong, or that an attacker may write: the
daemon reads it again on every SIGHUP. So, beyond ``yaml.safe_load``:

* the file must be a regular file of at most :data:`MAX_BYTES` (a FIFO would block the
  reader forever, ``/dev/zero`` would never end) and valid UTF-8;
* at most :data:`MAX_ALIASES` alias references (``*name``), and at most :data:`MAX_NODES`
  nodes once every alias is expanded: each alias is a whole copy once the config is
  walked, so nine nested levels of ten aliases are a billion nodes (the "billion
  laughs") from 90 aliases; real configs use a handful;
* at most :data:`MAX_DEPTH` levels of nesting;
* a key given twice in one mapping is an error (YAML says keys are unique; PyYAML would
  silently keep the last one, so a second ``interval:`` would win unseen).

Every problem is a :class:`ValueError` with the line and column, which the loader turns
into a ``<yaml>: ...`` config problem.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 4 * 1024 * 1024
MAX_ALIASES = 200
MAX_DEPTH = 64
MAX_NODES = 200_000


class ConfigReadError(ValueError):
    """The file cannot be read as a config (not a regular file, too large, not UTF-8)."""


def read_text(path: str | os.PathLike[str]) -> str:
    """The file's text; :class:`ConfigReadError` or ``OSError`` when it cannot be a config."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigReadError(f"{Path(path)} is not a regular file")
        if info.st_size > MAX_BYTES:
            raise ConfigReadError(f"{Path(path)} is larger than {MAX_BYTES // (1024 * 1024)} MiB")
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigReadError(f"{Path(path)} is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigReadError(f"{Path(path)} is not valid UTF-8 (byte {exc.start}, line {line})") from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases and depth and refuses duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _problem(f"more than {MAX_ALIASES} aliases", self._mark())
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _problem(f"nested deeper than {MAX_DEPTH} levels", self._mark())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _mark(self) -> Any:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        return event.start_mark

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: merged keys may be overridden, that is the point
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                continue  # unhashable: let SafeLoader report it
            if key in seen:
                raise _problem(f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _problem(text: str, mark: Any) -> yaml.MarkedYAMLError:
    return yaml.MarkedYAMLError(problem=text, problem_mark=mark)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` within the bounds above; raises ``yaml.YAMLError`` with a mark."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node, {})
        if expanded > MAX_NODES:
            raise _problem(f"the aliases expand to {expanded:,} nodes (at most {MAX_NODES:,})", node.start_mark)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes ``node`` is with every alias copied out (memoised: linear in the file)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a cycle (an alias to its own ancestor) counts once
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = min(total, MAX_NODES + 1)
    return memo[id(node)]
