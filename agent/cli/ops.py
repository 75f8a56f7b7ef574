"""Operator commands that act on the shared store: pause/resume, silences, history.

They change nothing in the stack; they change what the agent is *allowed* to do (the
guardrails read the pause flag and silences on every decision, so a running daemon
obeys within one scheduling tick) or show what it did (the journal).
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from agent.config.model import Config
from agent.kernel.durations import parse_duration
from agent.store.sqlite import Store

PAUSE_FLAG = "pause"

Loader = Callable[[str | None], Config]


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _open(load: Loader, config_path: str | None) -> tuple[Config, Store]:
    config = load(config_path)
    return config, Store(config.store_path())


def build(load: Loader, config_option: Callable[[Any], Any]) -> list[click.Command]:
    """The commands, bound to the CLI's config loader and ``--config`` option."""

    @click.command()
    @config_option
    @click.option("--reason", default="", help="Why; shown in every blocked decision.")
    def pause(config_path: str | None, reason: str) -> None:
        """Kill switch: block every remediation until `paramedic resume`.

        Probing and state tracking go on. Survives restarts (it lives in the store); a
        running daemon obeys it within one scheduling tick.
        """
        _, store = _open(load, config_path)
        store.set_flag(PAUSE_FLAG, {"reason": reason, "by": _user(), "at": time.time()})
        store.close()
        click.echo(f"paused: no remediation will run until `paramedic resume`{f' ({reason})' if reason else ''}")

    @click.command()
    @config_option
    def resume(config_path: str | None) -> None:
        """Lift `paramedic pause`: remediations may run again (guardrails still apply)."""
        _, store = _open(load, config_path)
        was = store.flag(PAUSE_FLAG)
        store.set_flag(PAUSE_FLAG, None)
        store.close()
        click.echo("resumed" if was else "was not paused")

    @click.group()
    def silence() -> None:
        """Silence a check: its failures are still probed and shown, but never acted on."""

    @silence.command("add")
    @config_option
    @click.option("--check", "check_name", required=True, metavar="NAME", help="The check to silence.")
    @click.option("--for", "duration", required=True, metavar="DURATION", help="How long, e.g. 30m, 2h.")
    @click.option("--reason", required=True, help="Why (shown in every decision it blocks).")
    def silence_add(config_path: str | None, check_name: str, duration: str, reason: str) -> None:
        """Add a silence: no actions for NAME for DURATION."""
        config, store = _open(load, config_path)
        if check_name not in {c.name for c in config.checks}:
            store.close()
            click.echo(f"no check named {check_name!r} in {config.source}", err=True)
            sys.exit(2)
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            store.close()
            click.echo(f"--for: {exc}", err=True)
            sys.exit(2)
        until = time.time() + seconds
        silence_id = store.add_silence(check_name, reason, until, _user())
        store.close()
        click.echo(f"silence {silence_id}: {check_name} until {_when(until)} ({reason})")

    @silence.command("list")
    @config_option
    @click.option("--all", "show_all", is_flag=True, help="Include expired silences.")
    @click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
    def silence_list(config_path: str | None, show_all: bool, output: str) -> None:
        """List active silences (or all with --all)."""
        _, store = _open(load, config_path)
        items = store.silences(None if show_all else time.time())
        store.close()
        if output == "json":
            click.echo(json.dumps({"silences": items}, indent=2))
            return
        if not items:
            click.echo("no silences")
            return
        for s in items:
            click.echo(f"{s['id']:>4}  {s['check']:<24} until {_when(s['until'])}  by {s['created_by']}: {s['reason']}")

    @silence.command("remove")
    @config_option
    @click.argument("silence_id", type=int)
    def silence_remove(config_path: str | None, silence_id: int) -> None:
        """End a silence now."""
        _, store = _open(load, config_path)
        removed = store.remove_silence(silence_id)
        store.close()
        if not removed:
            click.echo(f"no silence {silence_id}", err=True)
            sys.exit(2)
        click.echo(f"silence {silence_id} removed")

    @click.command()
    @config_option
    @click.option("--limit", default=50, show_default=True, help="How many actions.")
    @click.option("--target", default=None, help="Only actions on this target (e.g. 'container web').")
    @click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
    def history(config_path: str | None, limit: int, target: str | None, output: str) -> None:
        """What the agent did or decided: each action with its runbook, step, guardrail
        decisions, outcome and verification, newest first."""
        config, store = _open(load, config_path)
        entries = store.journal(limit=limit, target=target)
        store.close()
        entries = config.redactor.data(entries)
        if output == "json":
            click.echo(json.dumps({"actions": entries}, indent=2, default=str))
            return
        if not entries:
            click.echo("no actions recorded")
            return
        for e in entries:
            click.echo(_history_line(e))

    def decide(status: str) -> click.Command:
        verb = "approve" if status == "approved" else "reject"

        @click.command(verb, help=f"{verb.capitalize()} a pending remediation step (its id is in the log, "
                                  "`paramedic history` and the approval message). Approving lets the step run "
                                  "at the agent's next decision, guardrails permitting; rejecting escalates.")
        @config_option
        @click.argument("request_id", type=int)
        def command(config_path: str | None, request_id: int) -> None:
            _, store = _open(load, config_path)
            try:
                entry = next((e for e in store.journal(limit=10_000) if e["id"] == request_id), None)
                if entry is None or entry["outcome"] != "pending-approval":
                    click.echo(f"no pending approval request {request_id}", err=True)
                    sys.exit(2)
                earlier = store.flag(f"approval:{request_id}")
                if earlier:
                    click.echo(f"request {request_id} was already {earlier['status']} by {earlier['by']}", err=True)
                    sys.exit(2)
                store.set_flag(f"approval:{request_id}", {"status": status, "by": _user(), "at": time.time()})
            finally:
                store.close()
            click.echo(f"request {request_id} {status}: {entry['action']} {entry['target']} "
                       f"(runbook {entry['runbook']}, step {entry['step'] + 1})")

        return command

    return [pause, resume, silence, history, decide("approved"), decide("rejected")]


def _history_line(e: dict[str, Any]) -> str:
    step = f"step {e['step'] + 1}" if e.get("step") is not None else "-"
    mode = " (dry-run)" if e["dry_run"] else ""
    outcome = e["outcome"] or "IN PROGRESS / interrupted"
    line = (f"#{e['id']:<4} {_when(e['at'])}  {e['action']} {e['target']}{mode}  "
            f"[{e['runbook']} {step}, check {e['check']}] -> {outcome}")
    detail = e.get("outcome_detail") or {}
    why = detail.get("reasons") or detail.get("reason") or (detail.get("result") or {}).get("message")
    verification = detail.get("verification")
    if why:
        line += f"\n      why: {why if isinstance(why, str) else '; '.join(why)}"
    if verification:
        verdict = "passed" if verification.get("ok") else "failed"
        line += f"\n      verify: {verdict} after {verification.get('runs')} run(s)"
    return line
