"""The ``paramedic`` command line.

Exit codes (documented in the README and in ``paramedic --help``):

* ``check`` and ``audit``: the worst status of the selected checks, Nagios style — 0 OK,
  1 WARNING, 2 CRITICAL, 3 UNKNOWN; and 3 (UNKNOWN, never CRITICAL) when the config is
  invalid or missing or the command line is wrong (unknown option, bad value, ``--only``
  naming an unknown check, ``--remediate`` with ``--no-store``): see
  :mod:`agent.cli.exits`.
* any other command: 2 when the config is invalid (every problem is printed with its
  path) or the command line is wrong; 3 for an unexpected internal error.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from agent import __version__
from agent.cli.exits import USAGE_EXIT, NagiosCommand
from agent.config.model import Config, load_config, resolve_path
from agent.kernel.errors import ConfigError, ParamedicError, StoreError
from agent.kernel.results import Result

if TYPE_CHECKING:
    from agent.core.state import Transition

EXIT_CODES_HELP = """\b
Exit codes of `check` and `audit`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (worst
check wins; the Nagios plugin convention), and 3 for an invalid or missing config
or bad usage. Other commands exit 2 for an invalid config or bad usage, 3 for an
internal error.
"""

config_option = click.option(
    "--config", "-c", "config_path", metavar="FILE", default=None,
    help="Config file. Default: $PARAMEDIC_CONFIG, then ./config.yaml.",
)


def _load(config_path: str | None, exit_code: int | None = None, status_line: bool = False) -> Config:
    """The config, or every problem on stderr and exit ``exit_code`` (default: ConfigError's 2).

    ``status_line``: also print the Nagios ``PARAMEDIC UNKNOWN - ...`` line on stdout (a
    monitoring system shows only stdout)."""
    path = resolve_path(config_path)
    try:
        return load_config(path)
    except ConfigError as exc:
        headline = f"config {exc.source} is invalid ({len(exc.problems)} problem(s))"
        click.echo(f"{headline}:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        if status_line:
            from agent.cli.nagios import unknown_line

            more = f" and {len(exc.problems) - 1} more" if len(exc.problems) > 1 else ""
            click.echo(unknown_line(f"{headline}: {exc.problems[0] if exc.problems else ''}{more}"))
        sys.exit(exc.exit_code if exit_code is None else exit_code)


def _unknown(message: str, output: str) -> NoReturn:
    """A usage problem of ``check``: the message on stderr (and the Nagios line on stdout), exit 3."""
    click.echo(message, err=True)
    if output == "nagios":
        from agent.cli.nagios import unknown_line

        click.echo(unknown_line(message))
    sys.exit(USAGE_EXIT)


#: Operator commands, imported only when one of them runs (or --help lists them), so that
#: a cron `paramedic check` does not pay for the store, incident and notification modules.
LAZY_COMMANDS = ("pause", "resume", "silence", "history", "approve", "reject", "incidents", "schema")
_OPS_LOADED: list[bool] = []


class _LazyGroup(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            _register_ops()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})


@click.group(cls=_LazyGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="paramedic")
def cli() -> None:
    """paramedic keeps a Docker-based service stack healthy.

    It probes services (HTTP, TCP, PostgreSQL, Redis, containers, Prometheus queries),
    matches failures to runbooks and applies safe fixes inside guardrails. Start with
    `paramedic validate`, then `paramedic check`.
    """


@cli.command()
@config_option
def validate(config_path: str | None) -> None:
    """Check a config file and report every problem with its path.

    Prints `config OK: N checks, M runbooks` and exits 0, or lists each problem
    (`checks[2].timeout: input should be a valid duration`) and exits 2.
    """
    config = _load(config_path)
    click.echo(f"config OK: {len(config.checks)} checks, {len(config.runbooks)} runbooks")


@cli.command(cls=NagiosCommand, epilog=EXIT_CODES_HELP)
@config_option
@click.option("--only", multiple=True, metavar="NAME", help="Run only this check (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="Run only checks with this tag (repeatable).")
@click.option("--output", "-o", type=click.Choice(["table", "json", "nagios"]), default="table", show_default=True,
              help="Table for people, one JSON document for programs, or the Nagios plugin's status line "
                   "with performance data.")
@click.option("--no-store", is_flag=True,
              help="Do not read or update the state store (an ad-hoc look that counts nothing).")
@click.option("--remediate", is_flag=True,
              help="Also apply runbooks to checks that are DOWN, with the daemon's guardrails and journal; "
                   "open, update and resolve incidents and deliver their notices (at most 15 s per run).")
def check(config_path: str | None, only: Sequence[str], tags: Sequence[str], output: str, no_store: bool,
          remediate: bool) -> None:
    """Run the selected checks once, concurrently, and exit with the worst status.

    Each probe runs under its own hard timeout. Results and each check's health state
    (OK / FAILING(n) / DOWN / RECOVERING) go to the same store the daemon uses, so a
    cron job counts consecutive failures across runs. Suitable for cron and for
    monitoring wrappers that understand Nagios exit codes (`--output nagios` prints the
    plugin's status line with performance data).
    """
    from agent.cli.output import results_json, results_table
    from agent.kernel.results import worst
    from agent.runtime.runner import run_once, select

    if remediate and no_store:
        click.echo("--remediate needs the store (budgets and cooldowns live there); drop --no-store", err=True)
        sys.exit(USAGE_EXIT)
    config = _load(config_path, USAGE_EXIT, status_line=output == "nagios")
    missing = [name for name in only if name not in {c.name for c in config.checks}]
    if missing:
        _unknown(f"no check named {', '.join(map(repr, missing))} in {config.source}", output)
    specs = select(config.checks, only, tags)
    if not specs:
        _unknown(f"no checks selected (tags: {', '.join(tags)})", output)
    results = asyncio.run(run_once(specs, config.redactor))
    states, transitions = ({}, []) if no_store else _record(config, results)
    if remediate:
        from agent.cli.remedy import echo_executions
        from agent.cli.remedy import remediate as remediate_down

        echo_executions(asyncio.run(remediate_down(config, results, transitions)))
    if output == "json":
        click.echo(results_json(results, states))
    elif output == "nagios":
        from agent.cli.nagios import results_nagios

        click.echo(results_nagios(results, config.redactor.text))
    else:
        targets = {s.name: config.redactor.text(s.target()) for s in specs}
        click.echo(results_table(results, targets, states, colour=sys.stdout.isatty()))
    sys.exit(int(worst(r.status for r in results)))


@cli.command()
@config_option
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Human-readable lines, or one JSON object per line for log shippers.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--dry-run", is_flag=True,
              help="Decide every runbook step and record it in the journal (marked dry-run); change nothing.")
def run(config_path: str | None, log_format: str, log_level: str, dry_run: bool) -> None:
    """Run as a daemon: probe every check at its interval, track state, serve /metrics.

    Logs one line per state change. SIGTERM/SIGINT stop gracefully (in-flight probes
    finish, results are flushed, exit 0); SIGHUP reloads the config (an invalid one is
    logged and the running one kept). The HTTP endpoint listens on `server.listen`
    (default 127.0.0.1:9321): /healthz, /metrics, /api/v1/checks.
    """
    from agent.app.daemon import Daemon
    from agent.kernel.logs import setup_logging

    redacting = setup_logging(log_format, log_level)
    config = _load(config_path)
    daemon = Daemon(config, config_path=resolve_path(config_path), redacting=redacting, freeze_gc=True,
                    dry_run=dry_run)
    with asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
        code = runner.run(daemon.run())
    sys.exit(code)


def fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (``pip install paramedic[fast]``), else None.

    The daemon's CPU per probe is mostly event-loop and socket plumbing; uvloop does that
    in C (about a third less CPU per probe on the benchmark, bench/daemon_throughput.py).
    """
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


@cli.command(cls=NagiosCommand, epilog=EXIT_CODES_HELP)
@config_option
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
def audit(config_path: str | None, output: str) -> None:
    """Dry-run audit: probe everything once and show, for each failing check, the runbook
    that matches, the step that would run, its plan, and every guardrail's decision.

    Changes nothing: no action, no state change (it only reads the store and Docker).
    Exits with the worst check status, like `check`.
    """
    import json

    from agent.cli.remedy import audit as audit_proposals
    from agent.cli.remedy import audit_text
    from agent.kernel.results import worst
    from agent.runtime.runner import run_once

    config = _load(config_path, USAGE_EXIT)

    async def go() -> tuple[list[Result], list[Any]]:
        results = await run_once(config.checks, config.redactor)
        return results, await audit_proposals(config, results)

    results, proposals = asyncio.run(go())
    if output == "json":
        doc = {"proposals": [p.as_dict() for p in proposals], "status": worst(r.status for r in results).name}
        click.echo(json.dumps(config.redactor.data(doc), indent=2, default=str))
    else:
        click.echo(config.redactor.text(audit_text(proposals)))
    sys.exit(int(worst(r.status for r in results)))


def _record(config: Config, results: Sequence[Result]) -> tuple[dict[str, str], list[Transition]]:
    """Store results and advance states; a store problem is reported, never fatal here.

    Returns each check's state label and the run's transitions (``--remediate`` feeds them
    to the incident layer)."""
    from agent.core.deploys import image_records
    from agent.store.sqlite import Store

    try:
        store = Store(config.store_path())
        try:
            states, transitions = store.apply_results(results, config.thresholds())
            store.record_images(image_records({c.name: c for c in config.checks}, results))
        finally:
            store.close()
    except StoreError as exc:
        click.echo(f"warning: results not recorded: {exc}", err=True)
        return {}, []
    return {name: state.label for name, state in states.items()}, transitions


def _register_ops() -> None:
    if _OPS_LOADED:
        return
    _OPS_LOADED.append(True)
    from agent.cli.incidents import build as build_incidents
    from agent.cli.ops import build
    from agent.cli.schema import schema

    for command in [*build(_load, config_option), *build_incidents(_load, config_option), schema]:
        cli.add_command(command)


def main() -> None:
    """Console-script entry point: turn stray paramedic errors into their exit codes."""
    try:
        cli()
    except ParamedicError as exc:
        click.echo(f"paramedic: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
