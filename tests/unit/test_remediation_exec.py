"""``exec`` params, masking and plans (pure). Running commands: tests/integration/test_remediation_exec.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import Target
from remediations.exec import Exec, ExecParams, secret_values, shown_argv, shown_env

TARGET = Target(check="app-http")


def params(**fields: Any) -> ExecParams:
    return ExecParams.model_validate(fields)


def test_argv_must_be_a_list_never_a_shell_string() -> None:
    with pytest.raises(ValidationError, match="argv must be a list of arguments, never a shell string"):
        params(argv="systemctl restart app")
    with pytest.raises(ValidationError, match="at least 1 item"):
        params(argv=[])
    with pytest.raises(ValidationError, match="must not be empty"):
        params(argv=[" "])
    with pytest.raises(ValidationError):
        ExecParams.model_validate({"argv": ["ls"], "shell": True})  # extra=forbid
    with pytest.raises(ValidationError):
        params(argv=["ls"], expect_exit=[])
    with pytest.raises(ValidationError):
        params(argv=["ls", True])  # a boolean is not an argument


def test_defaults_and_yaml_numbers_as_arguments() -> None:
    p = params(argv=["sleep", 5], timeout="2m")
    assert p.argv == ("sleep", "5")
    assert (p.timeout, p.cwd, p.env, p.expect_exit, p.max_output_bytes) == (120.0, None, {}, (0,), 65536)


def test_secrets_are_masked_in_argv_and_env() -> None:
    p = params(argv=["/opt/tool", "--password=hunter2x", "--user=ops", "https://ops:pw123@example.test/x?token=tk999",
                     "-v"], env={"API_TOKEN": "abc123", "MODE": "prod", "DB_PASSWORD": "zzz999"})
    assert shown_argv(p) == ["/opt/tool", "--password=***", "--user=ops", "https://ops:***@example.test/x?token=***",
                             "-v"]
    assert shown_env(p) == {"API_TOKEN": "***", "MODE": "prod", "DB_PASSWORD": "***"}
    assert set(secret_values(p)) == {"hunter2x", "pw123", "tk999", "abc123", "zzz999"}


def test_plan_shows_the_command_and_nothing_secret() -> None:
    p = params(argv=["/usr/local/bin/flush-cache", "--all"], cwd="/srv", env={"MODE": "prod", "SECRET_KEY": "s3cr3t!"},
               timeout="30s", expect_exit=[0, 3])
    plan = Exec(p).plan(TARGET, {"program": "/usr/local/bin/flush-cache", "cwd_ok": True})
    assert plan.changes
    assert plan.steps == ("run ['/usr/local/bin/flush-cache', '--all'] in /srv with MODE=prod SECRET_KEY=*** "
                          "(timeout 30s, success: exit code 0, 3)",)
    assert plan.summary == "run /usr/local/bin/flush-cache --all"
    assert plan.data["argv"] == ["/usr/local/bin/flush-cache", "--all"]
    assert "s3cr3t!" not in json.dumps(plan.as_dict())


def test_plan_refuses_a_missing_program_or_directory() -> None:
    plan = Exec(params(argv=["no-such-tool"])).plan(TARGET, {"program": None, "cwd_ok": True})
    assert plan.refused == "no-such-tool is not an executable file on PATH"
    plan = Exec(params(argv=["/opt/x"])).plan(TARGET, {"program": None, "cwd_ok": True})
    assert plan.refused == "/opt/x is not an executable file"
    plan = Exec(params(argv=["ls"], cwd="/nope")).plan(TARGET, {"program": "/bin/ls", "cwd_ok": False})
    assert plan.refused == "working directory /nope does not exist"


def test_inspect_resolves_the_program(tmp_path: Any) -> None:
    import asyncio

    assert asyncio.run(Exec(params(argv=["sh"])).inspect(TARGET))["program"].endswith("/sh")
    missing = asyncio.run(Exec(params(argv=["paramedic-no-such-tool"])).inspect(TARGET))
    assert missing == {"program": None, "cwd_ok": True}
    assert asyncio.run(Exec(params(argv=["sh"], cwd=str(tmp_path / "x"))).inspect(TARGET))["cwd_ok"] is False
