"""``exec``: run one command (an argument list, never a shell string) for what the built-ins miss.

``argv`` is executed directly (``asyncio.create_subprocess_exec``): no shell parses it,
so nothing in a value can become a second command, a redirection or a glob. A string
where a list belongs is a config error, not something we split.

* ``inspect`` (read only) resolves ``argv[0]`` on ``PATH`` (with the step's ``env``) and
  checks ``cwd``, so a typo shows up as a refusal in ``paramedic audit`` rather than as a
  failed action at 3 a.m.
* ``plan`` (pure) shows the command, its timeout, directory and environment, with values
  masked where the key looks secret (``API_TOKEN``, ``DB_PASSWORD``...), URL passwords
  masked, and ``--password=...``-style arguments masked.
* ``apply`` runs it with stdin from ``/dev/null``, stdout and stderr merged and captured
  (the first ``max_output_bytes``; the rest is read and dropped so the child never blocks
  on a full pipe), in a new session so that on timeout the whole process group is ended:
  SIGTERM, then SIGKILL after :data:`KILL_GRACE` seconds. ``ok`` iff it exited in time
  with a code in ``expect_exit``. The child inherits the agent's environment plus ``env``.
  Secret values from ``env``/``argv`` are masked in the captured output too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, field_validator

from agent.kernel.durations import Duration, format_duration
from agent.kernel.redact import MASK, redact_url
from remediations.base import Outcome, Params, Plan, Remediation, Target

#: Seconds between SIGTERM and SIGKILL for a command that overran its timeout.
KILL_GRACE = 2.0
#: Seconds to keep reading output after the command exited (a background child may hold the pipe).
DRAIN_AFTER_EXIT = 1.0
_CHUNK = 65536
POLL_INTERVAL = 0.02
#: Same idea as agent.kernel.redact's query-parameter rule, for environment variable names and flags.
SECRET_KEY = re.compile(r"(pass|secret|token|key|auth|signature|credential|cookie|session)", re.I)
_FLAG = re.compile(r"^(--?[A-Za-z0-9_.-]+)=(.+)$", re.S)


class ExecParams(Params):
    """The command and how to judge it."""

    argv: tuple[str, ...] = Field(min_length=1)
    timeout: Duration = Field(default=60.0, gt=0)
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    expect_exit: tuple[int, ...] = Field(default=(0,), min_length=1)
    max_output_bytes: int = Field(default=65536, ge=0)

    @field_validator("argv", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("argv must be a list of arguments, never a shell string: "
                             "write [systemctl, restart, app], not 'systemctl restart app'")
        if isinstance(value, list | tuple):  # YAML reads [sleep, 5] with an int: it is still an argument
            return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("argv")
    @classmethod
    def _program(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value[0].strip():
            raise ValueError("argv[0] (the program) must not be empty")
        if any("\x00" in arg for arg in value):
            raise ValueError("arguments must not contain NUL bytes")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not key or "=" in key or "\x00" in key or "\x00" in item:
                raise ValueError(f"invalid environment variable name or value for {key!r}")
        return value


# --------------------------------------------------------------------------- masking (pure)


def secret_values(params: ExecParams) -> list[str]:
    """Strings to mask anywhere they appear: secret-looking env values and flag values."""
    found = [v for k, v in params.env.items() if SECRET_KEY.search(k)]
    for arg in params.argv:
        match = _FLAG.match(arg)
        if match and SECRET_KEY.search(match.group(1)):
            found.append(match.group(2))
        masked = redact_url(arg) if "://" in arg else arg
        if masked != arg:
            found.extend(_url_parts(arg))
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def _url_parts(url: str) -> list[str]:
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if SECRET_KEY.search(k)]
    return [s for s in found if s]


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with each secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def shown_argv(params: ExecParams) -> list[str]:
    """``argv`` as the plan and journal show it."""
    secrets = secret_values(params)
    out = []
    for arg in params.argv:
        match = _FLAG.match(arg)
        if match and SECRET_KEY.search(match.group(1)):
            out.append(f"{match.group(1)}={MASK}")
        else:
            out.append(mask(redact_url(arg) if "://" in arg else arg, secrets))
    return out


def shown_env(params: ExecParams) -> dict[str, str]:
    """``env`` with secret-looking values masked."""
    secrets = secret_values(params)
    return {k: MASK if SECRET_KEY.search(k) else mask(v, secrets) for k, v in params.env.items()}


# --------------------------------------------------------------------------- the action


class Exec(Remediation[ExecParams]):
    """Run an argument list with a timeout; capture its output; judge it by its exit code."""

    action: ClassVar[str] = "exec"
    params_model: ClassVar[type[ExecParams]] = ExecParams

    async def inspect(self, target: Target) -> dict[str, Any]:
        return await asyncio.to_thread(self._inspect)

    def _inspect(self) -> dict[str, Any]:
        """Where the program is and whether ``cwd`` exists (file system calls: off the loop)."""
        p = self.params
        path = p.env.get("PATH", os.environ.get("PATH", os.defpath))
        program = p.argv[0]
        if os.sep in program:
            where = program if os.path.isabs(program) or p.cwd is None else os.path.join(p.cwd, program)
            found = program if os.access(where, os.X_OK) and os.path.isfile(where) else None
        else:
            found = shutil.which(program, path=path)
        return {"program": found, "cwd_ok": p.cwd is None or os.path.isdir(p.cwd)}

    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        p = self.params
        argv = shown_argv(p)
        if "program" in snapshot and not snapshot["program"]:
            return Plan.refuse(self.action, target, f"{argv[0]} is not an executable file"
                               + ("" if os.sep in p.argv[0] else " on PATH"))
        if not snapshot.get("cwd_ok", True):
            return Plan.refuse(self.action, target, f"working directory {p.cwd} does not exist")
        env = shown_env(p)
        where = f" in {p.cwd}" if p.cwd else ""
        with_env = (" with " + " ".join(f"{k}={v}" for k, v in sorted(env.items()))) if env else ""
        codes = ", ".join(str(c) for c in p.expect_exit)
        step = (f"run {argv!r}{where}{with_env} (timeout {format_duration(p.timeout)}, "
                f"success: exit code {codes})")
        data = {"argv": argv, "cwd": p.cwd, "env": env, "timeout": p.timeout, "expect_exit": list(p.expect_exit),
                "program": snapshot.get("program")}
        return Plan(self.action, target.describe(), True, f"run {' '.join(argv)}", steps=(step,), data=data)

    async def apply(self, plan: Plan) -> Outcome:
        p = self.params
        secrets = secret_values(p)
        shown = " ".join(shown_argv(p))
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *p.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=p.cwd, env={**os.environ, **p.env}, start_new_session=True,
            )
        except OSError as exc:
            return Outcome(False, mask(f"cannot run {shown}: {exc.strerror or exc}", secrets),
                           {"argv": shown_argv(p), "exit_code": None})
        capture = _Capture(p.max_output_bytes)
        timed_out = await _run(proc, capture, p.timeout)
        code = proc.returncode
        output = mask(capture.text(), secrets)
        data = {"argv": shown_argv(p), "exit_code": code, "timed_out": timed_out, "output": output,
                "output_bytes": capture.total, "truncated": capture.truncated,
                "duration_s": round(time.monotonic() - started, 3)}
        if timed_out:
            return Outcome(False, f"{shown} did not finish within {format_duration(p.timeout)}: its process "
                                  "group was killed", data)
        ok = code in p.expect_exit
        expected = ", ".join(str(c) for c in p.expect_exit)
        verdict = "" if ok else f" (expected {expected})"
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with {code}"
        return Outcome(ok, f"{shown} {how}{verdict}", data)


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


async def _read(proc: asyncio.subprocess.Process, capture: _Capture) -> None:
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(_CHUNK):
        capture.add(chunk)


async def _run(proc: asyncio.subprocess.Process, capture: _Capture, timeout: float) -> bool:
    """Wait for exit and EOF within ``timeout``; on timeout end the process group. True if it timed out."""
    reader = asyncio.ensure_future(_read(proc, capture))
    timed_out = False
    try:
        await asyncio.wait_for(_exited(proc), timeout)
    except TimeoutError:
        timed_out = True
    if not timed_out:
        # a background child may still hold the pipe; it gets DRAIN_AFTER_EXIT, then its group is ended
        done, _ = await asyncio.wait({reader}, timeout=DRAIN_AFTER_EXIT)
        if done:
            return False
    await _kill_group(proc)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(reader, KILL_GRACE)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    return timed_out


async def _exited(proc: asyncio.subprocess.Process) -> None:
    """Until the command itself exits. Not ``proc.wait()``: on Python 3.11 that also waits for
    its pipes to close, which a background child keeps open."""
    while proc.returncode is None:  # noqa: ASYNC110 - no event to wait on (see above)
        await asyncio.sleep(POLL_INTERVAL)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's process group, SIGKILL it after :data:`KILL_GRACE`; reap the leader."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + KILL_GRACE
            while _group_alive(proc.pid) and time.monotonic() < deadline:  # noqa: ASYNC110 - a process group has no exit event
                await asyncio.sleep(POLL_INTERVAL)
    await proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


__all__ = ["Exec", "ExecParams"]
