"""The floor plan of ``agent/`` is a gate: drawn from the code's imports, no upward import, no cycle.

Floors, lowest first (README, "Layout"): ``agent.kernel`` (the vocabulary), ``agent.notify``
(channels), ``agent.registry``, ``agent.config``, ``agent.core`` (every decision, pure),
``agent.store``, ``agent.runtime`` (what awaits), ``agent.app`` (wiring, HTTP face),
``agent.cli``. A module may import its own floor and the floors below. Every import counts:
module level, inside functions (lazy) and under ``TYPE_CHECKING``, because each one is a
dependency a reader has to follow, whenever Python resolves it.

Plugins (``checks``, ``remediations``) and ``agent.notify`` import only ``agent.kernel``
(an action may use ``checks.base`` or a probe's public helper); the engine reaches a
concrete probe or action only through ``agent.registry`` (the plugin interfaces in
``PLUGIN_INTERFACES`` it may import). ``agent.core`` imports no
I/O library and reads no clock: the driver passes ``now`` in.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = ["kernel", "notify", "registry", "config", "core", "store", "runtime", "app", "cli"]
PLUGINS = ("checks", "remediations")
#: The plugin interfaces the engine may import: the probe and action bases, and the Docker
#: client the Docker actions share, which the engine warms at start and reads evidence with.
PLUGIN_INTERFACES = {"checks.base", "remediations.base", "remediations.dockerapi"}
IO_LIBRARIES = {"asyncio", "sqlite3", "docker", "aiohttp", "psycopg", "redis", "socket", "subprocess",
                "requests", "httpx", "h11", "ssl", "threading", "concurrent"}
CLOCK_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "sleep"),
               ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in ("agent", *PLUGINS):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``module`` imports (absolute names), with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield base, node.lineno
            for alias in node.names:  # `from agent import config`: the submodule is the import
                yield f"{base}.{alias.name}", node.lineno


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module a dotted import name lands in, if any."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def floor(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "agent" or len(parts) < 2:
        return None
    return FLOORS.index(parts[1]) if parts[1] in FLOORS else None


def graph() -> dict[str, set[tuple[str, int]]]:
    known = modules()
    edges: dict[str, set[tuple[str, int]]] = {}
    for module, path in known.items():
        targets = {(t, line) for name, line in imports(module, path)
                   if (t := resolve(name, known)) is not None and t != module and t not in ("agent",)}
        edges[module] = targets
    return edges


def test_every_module_of_agent_sits_on_a_floor() -> None:
    homeless = [m for m in modules() if m.startswith("agent.") and floor(m) is None]
    assert homeless == []


def test_no_upward_import_between_floors() -> None:
    upward = [f"{m} -> {t} (line {line})" for m, targets in graph().items() for t, line in sorted(targets)
              if (a := floor(m)) is not None and (b := floor(t)) is not None and b > a]
    assert upward == []


def test_plugins_and_channels_import_only_the_kernel() -> None:
    bad = []
    for module, targets in graph().items():
        if module.split(".")[0] in PLUGINS or module.startswith("agent.notify"):
            for target, line in sorted(targets):
                top = target.split(".")[0]
                ok = (target.startswith(("agent.kernel", "agent.notify")) if module.startswith("agent.notify")
                      else target.startswith("agent.kernel") or top in PLUGINS)
                if not ok:
                    bad.append(f"{module} -> {target} (line {line})")
    assert bad == []


def test_the_engine_reaches_concrete_plugins_only_through_the_registry() -> None:
    bad = [f"{m} -> {t} (line {line})" for m, targets in graph().items() if m.startswith("agent.")
           and m != "agent.registry" for t, line in sorted(targets)
           if t.split(".")[0] in PLUGINS and t not in PLUGIN_INTERFACES]
    assert bad == []


def test_no_import_cycle() -> None:
    edges = {m: {t for t, _ in targets} for m, targets in graph().items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert [" -> ".join(c) for c in cycles] == []


@pytest.mark.parametrize("module", sorted(m for m in modules() if m.startswith("agent.core")))
def test_core_does_no_io_and_reads_no_clock(module: str) -> None:
    path = modules()[module]
    libraries = sorted({name.split(".")[0] for name, _ in imports(module, path)} & IO_LIBRARIES)
    assert libraries == []
    clocks = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if (name, node.func.attr) in CLOCK_CALLS:
                clocks.append(f"line {node.lineno}: {name}.{node.func.attr}()")
    assert clocks == []


def test_the_gate_sees_a_violation(tmp_path: Path) -> None:
    """The walker is not vacuous: it finds the imports of a module written to break every rule."""
    bad = tmp_path / "bad.py"
    bad.write_text("from agent.cli import main\nimport asyncio\nfrom . import sibling\n")
    found = {name for name, _ in imports("agent.core.bad", bad)}
    assert {"agent.cli", "agent.cli.main", "asyncio", "agent.core.sibling"} <= found
    assert (floor("agent.cli.main"), floor("agent.core.x")) == (FLOORS.index("cli"), FLOORS.index("core"))
