"""``paramedic schema`` through the installed command: JSON on stdout or in a file, usable by an editor."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.support.installed import PARAMEDIC

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PARAMEDIC_CONFIG"}
    return subprocess.run([PARAMEDIC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_schema_prints_the_json_schema_on_stdout(tmp_path: Path) -> None:
    proc = run("schema", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    schema = json.loads(proc.stdout)
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "paramedic config"
    validator = jsonschema.Draft7Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load((REPO / "config.yaml").read_text()))) == []
    assert list(validator.iter_errors({"checks": [{"name": "a", "type": "http", "url": "http://x", "colour": 1}]}))


def test_schema_output_file_and_the_yaml_language_server_line(tmp_path: Path) -> None:
    """The README's editor set-up: the schema next to the config, named on the config's first line."""
    proc = run("schema", "--output", "paramedic.schema.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert json.loads((tmp_path / "paramedic.schema.json").read_text())["title"] == "paramedic config"
    assert proc.stdout + proc.stderr == "wrote the config schema to paramedic.schema.json\n"
    config = tmp_path / "config.yaml"
    config.write_text("# yaml-language-server: $schema=./paramedic.schema.json\n"
                      "checks:\n  - {name: db, type: tcp, host: 127.0.0.1, port: 5432}\n")
    proc = run("validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "config OK: 1 checks, 0 runbooks\n"


def test_schema_output_to_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    proc = run("schema", "--output", str(tmp_path / "no" / "such" / "dir.json"), cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "No such file or directory" in proc.stderr
