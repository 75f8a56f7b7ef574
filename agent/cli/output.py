"""How results look to people (a table) and to programs (one JSON document)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence

import click

from agent.kernel.results import Result, Status, worst

_COLOURS = {Status.OK: "green", Status.WARNING: "yellow", Status.CRITICAL: "red", Status.UNKNOWN: "magenta"}


def results_json(results: Sequence[Result], states: Mapping[str, str] | None = None) -> str:
    """``{"results": [...], "status": "<worst>"}`` as documented for ``check --output json``.

    With ``states``, each result also carries ``"state"``: its check's health after this run.
    """
    states = states or {}
    items = [r.as_dict() | ({"state": states[r.name]} if r.name in states else {}) for r in results]
    doc = {"results": items, "status": worst(r.status for r in results).name}
    return json.dumps(doc, indent=2, default=str)


def _latency(result: Result) -> str:
    latency = result.observations.get("latency_ms")
    value = latency if isinstance(latency, int | float) else result.duration_ms
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def results_table(
    results: Sequence[Result], targets: Mapping[str, str], states: Mapping[str, str] | None = None,
    colour: bool = True,
) -> str:
    """A fixed-column table: name, type, status, latency, state, and what failed with its value."""
    states = states or {}
    header = ("NAME", "TYPE", "STATUS", "LATENCY", "STATE", "DETAIL")
    rows = [
        (r.name, r.type, r.status.name, _latency(r), states.get(r.name, "-"),
         r.message if r.status is not Status.OK else f"{targets.get(r.name, '')}: {r.message}".lstrip(": "))
        for r in results
    ]
    cols = len(header) - 1
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(cols)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header[:cols], widths, strict=True)) + "  " + header[cols]]
    for row, result in zip(rows, results, strict=True):
        cells = [str(c).ljust(w) for c, w in zip(row[:cols], widths, strict=True)]
        if colour:
            cells[2] = click.style(cells[2], fg=_COLOURS[result.status], bold=result.status is not Status.OK)
        lines.append("  ".join(cells) + "  " + row[cols])
    lines.append("")
    lines.append(summary(results))
    return "\n".join(lines)


def summary(results: Sequence[Result]) -> str:
    """``4 checks: 3 OK, 1 CRITICAL`` (statuses in severity order)."""
    counts = Counter(r.status for r in results)
    parts = [f"{counts[s]} {s.name}" for s in sorted(counts, key=lambda s: s.rank)]
    noun = "check" if len(results) == 1 else "checks"
    return f"{len(results)} {noun}: " + (", ".join(parts) if parts else "nothing selected")
