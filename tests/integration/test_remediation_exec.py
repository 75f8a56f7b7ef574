"""``exec`` running real processes: output, exit codes, timeouts that end the whole group."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from remediations.base import Outcome, Plan, Target
from remediations.exec import Exec, ExecParams

pytestmark = [pytest.mark.integration]

TARGET = Target(check="app")


def run(**fields: Any) -> tuple[Plan, Outcome | None]:
    action = Exec(ExecParams.model_validate(fields))

    async def go() -> tuple[Plan, Outcome | None]:
        plan = action.plan(TARGET, await action.inspect(TARGET))
        return plan, (await action.apply(plan) if plan.changes else None)

    return asyncio.run(go())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_output_and_exit_code_are_captured() -> None:
    _, outcome = run(argv=["sh", "-c", "echo out; echo err >&2; exit 3"], expect_exit=[0, 3])
    assert outcome is not None
    assert outcome.ok
    assert outcome.message == "sh -c echo out; echo err >&2; exit 3 exited with 3"
    assert outcome.data["output"] == "out\nerr\n"
    assert (outcome.data["exit_code"], outcome.data["timed_out"], outcome.data["truncated"]) == (3, False, False)


def test_unexpected_exit_code_is_a_failure() -> None:
    _, outcome = run(argv=["false"])
    assert outcome is not None
    assert not outcome.ok
    assert outcome.message == "false exited with 1 (expected 0)"


def test_arguments_are_never_interpreted_by_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _, outcome = run(argv=["echo", "$(touch", f"{marker})", ";", "rm", "-rf", "*", "|", "`id`"])
    assert outcome is not None
    assert outcome.data["output"] == f"$(touch {marker}) ; rm -rf * | `id`\n"
    assert not marker.exists()


def test_env_cwd_and_secret_masking_in_output(tmp_path: Path) -> None:
    _, outcome = run(argv=["sh", "-c", 'echo "$MODE $API_TOKEN $(pwd)"'], cwd=str(tmp_path),
                     env={"MODE": "prod", "API_TOKEN": "tok-very-secret"})
    assert outcome is not None
    assert outcome.ok
    assert outcome.data["output"] == f"prod *** {tmp_path}\n"
    assert "tok-very-secret" not in repr(outcome.as_dict())


def test_output_is_truncated_but_fully_drained() -> None:
    _, outcome = run(argv=["sh", "-c", "yes 0123456789 | head -c 1000000; exit 0"], max_output_bytes=100)
    assert outcome is not None
    assert outcome.ok
    assert len(outcome.data["output"]) == 100
    assert (outcome.data["output_bytes"], outcome.data["truncated"]) == (1_000_000, True)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    _, outcome = run(argv=["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo started; wait"], timeout="1s")
    elapsed = time.monotonic() - started
    assert outcome is not None
    assert not outcome.ok
    assert outcome.data["timed_out"] is True
    assert outcome.data["output"] == "started\n"
    assert "did not finish within 1s: its process group was killed" in outcome.message
    assert elapsed < 5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_a_background_child_holding_the_pipe_does_not_hold_the_action(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    _, outcome = run(argv=["sh", "-c", f"sleep 60 & echo $! > {pidfile}; exit 0"], timeout="30s")
    assert outcome is not None
    assert outcome.ok, outcome.message
    assert time.monotonic() - started < 6
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_missing_program_is_refused() -> None:
    plan, outcome = run(argv=["paramedic-no-such-tool", "x"])
    assert outcome is None
    assert plan.refused == "paramedic-no-such-tool is not an executable file on PATH"


def test_a_program_that_cannot_be_executed_fails_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    _, outcome = run(argv=[str(script)])
    assert outcome is not None
    assert not outcome.ok
    assert outcome.message.startswith(f"cannot run {script}: ")
