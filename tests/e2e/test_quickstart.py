"""The README's quick start works to the letter, in a copy of the tree, as a newcomer runs it.

The command line is read from the README (the first ``sh`` block under ``## Quick start``)
so the two cannot drift: it creates a venv, ``pip install .`` (not editable) and starts
``paramedic run --config config.yaml``. The test waits for ``/healthz`` to answer, stops
the daemon with SIGTERM, and expects the whole command line to exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.installed import REPO, source_files

pytestmark = pytest.mark.e2e


def quickstart_commands(readme: str) -> list[str]:
    """The non-empty lines of the first ``sh`` block of the README's ``## Quick start``."""
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "README's Quick start has no ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_quickstart_block_is_the_install_and_run_line() -> None:
    """Guards the parse below: the line a newcomer copies installs the wheel and runs the agent."""
    lines = quickstart_commands((REPO / "README.md").read_text())
    assert lines == ["python3 -m venv .venv && .venv/bin/pip install . && "
                     ".venv/bin/paramedic run --config config.yaml"]


@pytest.mark.timeout(420)
def test_readme_quickstart_runs_to_the_letter(tmp_path: Path) -> None:
    clone = tmp_path / "paramedic"
    for name in source_files():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)
    listen = yaml.safe_load((clone / "config.yaml").read_text())["server"]["listen"]
    host, port = listen.rsplit(":", 1)
    _require_free(host, int(port))

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PARAMEDIC_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    log = (tmp_path / "quickstart.log").open("w")
    script = "\n".join(quickstart_commands((clone / "README.md").read_text()))
    shell = subprocess.Popen(["bash", "-e", "-c", script], cwd=clone, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_healthz(shell, f"http://{host}:{port}/healthz", tmp_path / "quickstart.log", deadline=300)
        daemon = _child_named(shell.pid, "paramedic")
        os.kill(daemon, signal.SIGTERM)
        assert shell.wait(timeout=60) == 0, (tmp_path / "quickstart.log").read_text()[-3000:]
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        log.close()
    output = (tmp_path / "quickstart.log").read_text()
    assert "Traceback" not in output
    assert (clone / ".venv" / "bin" / "paramedic").exists()
    # a real install, not an editable one: the agent package is in the venv's site-packages
    site = list((clone / ".venv" / "lib").glob("python3*/site-packages/agent/notify/__init__.py"))
    assert site, "agent/notify is not in the installed package"


def _require_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        if sock.connect_ex((host, port)) == 0:
            pytest.fail(f"{host}:{port} (config.yaml's server.listen) is in use; stop what listens there")


def _wait_for_healthz(shell: subprocess.Popen[bytes], url: str, log: Path, deadline: float) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if shell.poll() is not None:
            pytest.fail(f"the quick start exited {shell.returncode} before /healthz answered:\n"
                        f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback URL from config.yaml
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"/healthz did not answer within {deadline} s:\n{log.read_text()[-3000:]}")


def _child_named(pid: int, name: str) -> int:
    """The process of ``pid`` or its direct child whose command is ``name`` (the daemon).

    bash ``exec``s the last command of ``-c`` itself, so the daemon may be ``pid``."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in [pid, *map(int, children)]:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if any(part.endswith(name.encode()) for part in cmdline[:2]):
            return child
    raise AssertionError(f"no {name} process under bash (children: {children})")
