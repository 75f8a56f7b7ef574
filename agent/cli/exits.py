"""Exit codes for the commands that cron and Nagios wrappers read: ``check`` and ``audit``.

Their exit code is the worst check status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), so
a problem that is not a check's verdict must not look like one. The Nagios plugin
guidelines reserve 3 (UNKNOWN) for usage errors and internal problems: an invalid or
missing config file, an unknown option, a bad option value, ``--only`` naming an unknown
check, ``--remediate`` with ``--no-store``. Click's own usage errors exit 2, which a
monitoring system reads as CRITICAL and pages someone for a typo; :class:`NagiosCommand`
turns them into 3. Every other command keeps click's 2 for bad usage, and ``validate``
exits 2 for an invalid config.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from agent.kernel.errors import ConfigError
from agent.kernel.results import Status

#: Exit code of ``check`` and ``audit`` for bad usage or an invalid config: UNKNOWN.
USAGE_EXIT = int(Status.UNKNOWN)


class UsageUnknownError(click.UsageError):
    """A usage error of ``check`` or ``audit``: click's message, exit code 3."""

    exit_code = USAGE_EXIT

    @classmethod
    def of(cls, exc: click.UsageError) -> UsageUnknownError:
        """The same error (message, context, so the same text on stderr) with exit code 3."""
        return exc if isinstance(exc, cls) else cls(exc.format_message(), exc.ctx)


class NagiosCommand(click.Command):
    """A click command whose usage errors (and a config error that escapes it) exit 3, not 2.

    Click parses a subcommand's options in :meth:`make_context` and runs it in
    :meth:`invoke`; a :class:`click.UsageError` from either (unknown option, bad value,
    or one the command raises itself) gets exit code 3, and the group's ``main`` prints
    it as usual.
    """

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise UsageUnknownError.of(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise UsageUnknownError.of(exc) from exc
        except ConfigError as exc:  # the loader reports its own; this is a late one (defensive)
            click.echo(f"paramedic: {exc}", err=True)
            sys.exit(USAGE_EXIT)
