"""``paramedic schema``: print the config file's JSON Schema (for editors; see agent.config.schema)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--output", "-o", "output", metavar="FILE", default=None,
              help="Write the schema to FILE instead of stdout.")
def schema(output: str | None) -> None:
    """Print the JSON Schema (draft-07) of the config file.

    Generated from the models that validate a config, every check type and every
    action's params included. Save it next to your config and make the config's first
    line `# yaml-language-server: $schema=./paramedic.schema.json`: editors with the
    YAML language server (VS Code's YAML extension, ...) then complete and check the file.
    """
    from agent.config.schema import config_schema

    text = json.dumps(config_schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.FileError(output, exc.strerror) from exc
    click.echo(f"wrote the config schema to {output}", err=True)
