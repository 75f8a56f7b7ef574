"""``check --output nagios``: the Nagios plugin's status line, with performance data.

One line a monitoring system shows and graphs, then one line of long text per check
that is not OK (Nagios, Icinga and Naemon show those in the service's details)::

    PARAMEDIC CRITICAL - 1 of 9 checks failing: app-health (status_code == 200 failed (actual: 503))
      | app-health_latency=0.004s;;; db_latency=0.002s;;; db_longest_query=0s;;; ...
    CRITICAL app-health: status_code == 200 failed (actual: 503)

(the first two lines here are one line of output).

The performance data follows the Nagios plugin development guidelines:
``'label'=value[UOM];[warn];[crit];[min];[max]``, the label quoted when it holds a space,
``=`` or a quote, UOM one of ``s``, ``%``, ``B``, or none; values are plain decimals
(never an exponent). For each result, in this order:

* ``<check>_latency`` in seconds: the ``latency_ms`` observation, or the run's own
  duration when the probe has none (as the table's LATENCY column);
* every top-level numeric observation, sorted by name, whose name says its unit:
  ``*_s`` in seconds (``db_longest_query``, ``cache_uptime``), ``*_percent`` in ``%``
  (``disk_used``), ``*_bytes`` in ``B`` (``disk_free_bytes``), ``*days_left`` as a
  number of days (``cert_days_left``), and a Prometheus query's ``value``
  (``app-up_value``). Labels are unique: an observation whose short label is taken
  already keeps its whole name.

No thresholds are filled in: paramedic's conditions are expressions, not warn/crit ranges.
The text part never contains ``|`` (Nagios' perfdata separator; it becomes ``/``) nor a
line break. The first line names at most :data:`MAX_NAMED` failing checks, each message
cut at :data:`MAX_MESSAGE` characters; the long text lines carry them all, whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from agent.kernel.results import Result, Status, worst

PREFIX = "PARAMEDIC"
#: Failing checks named on the status line (the rest: ``and N more``, and the long text).
MAX_NAMED = 3
#: A message on the status line is cut at this many characters.
MAX_MESSAGE = 100

#: Observation name suffix -> (what the label keeps of it, unit, decimals kept). ``_bytes``
#: stays in the label: ``used_bytes`` and ``used_percent`` must not both be ``_used``.
_UNITS: tuple[tuple[str, str, str, int], ...] = (
    ("_percent", "", "%", 2), ("_bytes", "_bytes", "B", 0), ("_s", "", "s", 6))


def _text(value: str) -> str:
    """One line without Nagios' perfdata separator."""
    return " ".join(value.replace("|", "/").split())


def _cut(value: str, limit: int = MAX_MESSAGE) -> str:
    return value if len(value) <= limit else value[: limit - 3].rstrip() + "..."


def number(value: float, places: int = 6) -> str:
    """A plain decimal for perfdata: ``0.0039``, ``85.12``, ``2500000000`` (never ``1e-05``)."""
    text = format(Decimal(repr(round(float(value), places))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def label(name: str) -> str:
    """The perfdata label, quoted (``'a b'``, a quote doubled) when it needs to be."""
    if any(c in name for c in " ='"):
        return "'" + name.replace("'", "''") + "'"
    return name


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unit(key: str) -> tuple[str, str, int] | None:
    """``(label suffix, unit, decimals)`` for an observation worth graphing, else None."""
    if key == "value" or key.endswith("days_left"):
        return key, "", 6
    for suffix, kept, unit, places in _UNITS:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key.removesuffix(suffix) + kept, unit, places
    return None


def _observed(observations: Mapping[str, Any]) -> list[tuple[str, float, str, int]]:
    """``(label suffix, value, unit, decimals)`` for the observations worth graphing, by name."""
    out: list[tuple[str, float, str, int]] = []
    taken = {"latency"}
    for key in sorted(observations):
        value = observations[key]
        found = _unit(key) if _numeric(value) and key != "latency_ms" else None
        if found is None:
            continue
        name, unit, places = found
        if name in taken:  # a clash (``x_s`` beside ``x_percent``): this one keeps its whole name
            name = key
        taken.add(name)
        out.append((name, float(value), unit, places))
    return out


def perfdata(result: Result) -> list[str]:
    """The performance data items of one result (see the module docstring)."""
    latency: Any = result.observations.get("latency_ms")
    seconds = float(latency if _numeric(latency) else result.duration_ms) / 1000.0
    items = [f"{label(result.name + '_latency')}={number(seconds)}s;;;"]
    for suffix, value, unit, places in _observed(result.observations):
        items.append(f"{label(f'{result.name}_{suffix}')}={number(value, places)}{unit};;;")
    return items


def _failing(results: Sequence[Result]) -> list[Result]:
    """The results that are not OK, worst first, in config order within a status."""
    bad = [r for r in results if r.status is not Status.OK]
    return sorted(bad, key=lambda r: -r.status.rank)  # sorted() is stable


def status_line(results: Sequence[Result]) -> str:
    """``PARAMEDIC CRITICAL - 1 of 9 checks failing: app-health (...)`` (no perfdata)."""
    status = worst(r.status for r in results)
    failing = _failing(results)
    total = len(results)
    noun = "check" if total == 1 else "checks"
    if not failing:
        return f"{PREFIX} {status.name} - {total} of {total} {noun} OK"
    named = ", ".join(f"{r.name} ({_cut(_text(r.message))})" for r in failing[:MAX_NAMED])
    more = f" and {len(failing) - MAX_NAMED} more" if len(failing) > MAX_NAMED else ""
    return f"{PREFIX} {status.name} - {len(failing)} of {total} {noun} failing: {named}{more}"


def results_nagios(results: Sequence[Result], redact: Callable[[str], str] = str) -> str:
    """The plugin output: status line ``|`` perfdata, then a long text line per failing check.

    ``redact`` masks secrets (``config.redactor.text``), applied to every line.
    """
    perf = " ".join(item for r in results for item in perfdata(r))
    first = _text(redact(status_line(results)))
    lines = [f"{first} | {perf}" if perf else first]
    lines.extend(_text(redact(f"{r.status.name} {r.name}: {r.message}")) for r in _failing(results))
    return "\n".join(lines)


def unknown_line(reason: str) -> str:
    """The status line when there are no results to report: a config or usage problem."""
    return f"{PREFIX} {Status.UNKNOWN.name} - {_text(reason)}"
