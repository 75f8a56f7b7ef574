"""``paramedic incidents list|show|ack|report``: the incidents the agent opened, from the shared store.

``ack`` writes the acknowledgement to the store and queues its notice (PagerDuty
acknowledge, an ``ack`` message to the other channels) in the outbox; it then tries to
send it for a few seconds itself, and whatever is left is sent by the running daemon's
dispatcher (they share the outbox).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agent.config.model import Config
from agent.notify.templates import iso_time
from agent.store.sqlite import Store

Loader = Callable[[str | None], Config]
#: How long ``incidents ack`` tries to deliver the acknowledgement itself.
ACK_SEND_TIMEOUT = 10.0


def _open(load: Loader, config_path: str | None) -> tuple[Config, Store]:
    config = load(config_path)
    return config, Store(config.store_path())


def _line(i: dict[str, Any]) -> str:
    flags = []
    if i["acked_at"]:
        flags.append(f"acked by {i['acked_by']}")
    if i["escalated_at"]:
        flags.append("escalated")
    issue = (i["data"] or {}).get("issue", "")
    return (f"#{i['id']:<4} {i['severity']}  {i['status']:<8} {iso_time(i['opened_at'])}  "
            f"{i['runbook']} on {i['target']}: {issue}" + (f"  [{', '.join(flags)}]" if flags else ""))


def build(load: Loader, config_option: Callable[[Any], Any]) -> list[click.Command]:
    """The ``incidents`` group, bound to the CLI's config loader and ``--config`` option."""

    @click.group()
    def incidents() -> None:
        """Incidents the agent opened for failures a runbook handles (see docs/incidents.md)."""

    @incidents.command("list")
    @config_option
    @click.option("--all", "show_all", is_flag=True, help="Include resolved incidents.")
    @click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
    def list_(config_path: str | None, show_all: bool, output: str) -> None:
        """Open incidents, newest first (all with --all)."""
        config, store = _open(load, config_path)
        try:
            items = config.redactor.data(store.incidents(include_resolved=show_all))
        finally:
            store.close()
        if output == "json":
            click.echo(json.dumps({"incidents": items}, indent=2, default=str))
            return
        if not items:
            click.echo("no incidents" if show_all else "no open incidents")
            return
        for item in items:
            click.echo(_line(item))

    @incidents.command("show")
    @config_option
    @click.argument("incident_id", type=int)
    @click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
    def show(config_path: str | None, incident_id: int, output: str) -> None:
        """One incident with its timeline and evidence."""
        config, store = _open(load, config_path)
        try:
            incident = store.incident(incident_id)
            events = store.incident_events(incident_id) if incident else []
        finally:
            store.close()
        if incident is None:
            click.echo(f"no incident {incident_id}", err=True)
            sys.exit(2)
        incident, events = config.redactor.data(incident), config.redactor.data(events)
        if output == "json":
            click.echo(json.dumps({"incident": incident, "events": events}, indent=2, default=str))
            return
        click.echo(_line(incident))
        click.echo(f"dedup key: {incident['dedup_key']}")
        for ev in events:
            click.echo(f"  {iso_time(ev['at'])}  {ev['kind']:<9} {ev['summary']}")
        for item in incident["data"].get("evidence") or []:
            click.echo(f"\n--- {item['name']}{'' if item['ok'] else ' (failed)'}\n{item['output']}")

    @incidents.command("ack")
    @config_option
    @click.argument("incident_id", type=int)
    @click.option("--by", "by", default=None, help="Who acknowledges (default: the login name).")
    def ack(config_path: str | None, incident_id: int, by: str | None) -> None:
        """Acknowledge an incident: reminders and response-time escalation stop; PagerDuty is acknowledged."""
        from agent.cli.ops import _user
        from agent.runtime.incidents import Incidents
        from agent.runtime.outbox import Notifier

        config, store = _open(load, config_path)
        try:
            async def go() -> tuple[str, bool]:
                notifier = Notifier(config.notifications, store, redactor=config.redactor)
                try:
                    outcome = Incidents(config, store, notifier).ack(incident_id, by or _user())
                    sent = await notifier.drain(ACK_SEND_TIMEOUT) if outcome == "acked" else True
                finally:
                    await notifier.stop(1.0)
                return outcome, sent

            outcome, sent = asyncio.run(go())
        finally:
            store.close()
        if outcome == "missing":
            click.echo(f"no incident {incident_id}", err=True)
            sys.exit(2)
        if outcome == "resolved":
            click.echo(f"incident {incident_id} is already resolved", err=True)
            sys.exit(2)
        if outcome == "already":
            click.echo(f"incident {incident_id} was already acknowledged")
            return
        click.echo(f"incident {incident_id} acknowledged: reminders stop"
                   + ("" if sent else "; the notification is queued and the running agent will send it"))

    @incidents.command("report")
    @config_option
    @click.argument("incident_id", type=int)
    @click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), default=None,
                  help="Write the report to FILE instead of standard output.")
    def report(config_path: str | None, incident_id: int, out: str | None) -> None:
        """The post-incident report in Markdown: summary, severity, duration, timeline (probes, actions with
        plans, guardrail decisions and verification), evidence, root cause and follow-ups."""
        from agent.cli.report import gather, render

        config, store = _open(load, config_path)
        try:
            data = gather(store, incident_id, time.time(), config.redactor)
        finally:
            store.close()
        if data is None:
            click.echo(f"no incident {incident_id}", err=True)
            sys.exit(2)
        text = config.redactor.text(render(data))
        if out is None:
            click.echo(text)
            return
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"report of incident {incident_id} written to {out}")

    return [incidents]
