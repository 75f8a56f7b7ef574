"""contrib/paramedic.service: systemd accepts it, and the daemon behaves as the unit assumes.

``systemd-analyze verify`` checks the unit's syntax, every directive and that ExecStart's
program exists and is executable; the test points ExecStart at the ``paramedic`` of the
wheel installed in a fresh venv (the unit's own ``/opt/paramedic`` does not exist on a
test machine), changing nothing else. With ``CI=true`` a missing ``systemd-analyze`` fails
the test (Debian's ``systemd`` package, installed by scripts/setup-test-env).

The unit relies on the daemon's exit codes and signals: ``RestartPreventExitStatus=2 3``
(an invalid config exits 2, so it is not restarted in a loop), ``ExecReload`` sends SIGHUP
(the config is reloaded), SIGTERM stops it with exit 0 (``Restart=on-failure`` then leaves
it stopped).
"""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.installed import REPO, Installed

pytestmark = pytest.mark.e2e

UNIT = REPO / "contrib" / "paramedic.service"


def unit_service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_restarts_on_failure_but_not_for_a_bad_config() -> None:
    service = unit_service()
    assert service["Restart"] == "on-failure"
    assert {"2", "3"} <= set(service["RestartPreventExitStatus"].split())
    assert service["ExecReload"].split() == ["/bin/kill", "-HUP", "$MAINPID"]
    assert service["ExecStart"].split()[1:3] == ["run", "--config"]
    assert service["StateDirectory"] == "paramedic"


def test_systemd_analyze_verifies_the_unit(installed_paramedic: Installed, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text().replace("/opt/paramedic/bin/paramedic", str(installed_paramedic.paramedic))
    assert text != UNIT.read_text()
    unit = tmp_path / "paramedic.service"
    unit.write_text(text)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    noise = [line for line in proc.stderr.splitlines() if "paramedic.service" in line]
    assert proc.returncode == 0, proc.stderr
    assert noise == []


def _config(tmp_path: Path, interval: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "server": {"listen": ""}, "store": {"path": str(tmp_path / "p.db")},
        "checks": [{"name": "local", "type": "disk", "path": str(tmp_path), "interval": interval}],
    }))
    return path


def test_the_daemon_reloads_on_hup_and_exits_0_on_term(installed_paramedic: Installed, tmp_path: Path) -> None:
    config = _config(tmp_path, "1s")
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen([str(installed_paramedic.paramedic), "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        _wait_for(tmp_path / "daemon.log", "paramedic running", proc)
        _config(tmp_path, "2s")
        proc.send_signal(signal.SIGHUP)
        _wait_for(tmp_path / "daemon.log", "config reloaded", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_an_invalid_config_exits_2_so_systemd_does_not_restart_it(installed_paramedic: Installed,
                                                                   tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("checks: [{name: a, type: tcp, host: h, port: 1, timeout: 5 parsecs}]\n")
    proc = subprocess.run([str(installed_paramedic.paramedic), "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "checks[0].timeout" in proc.stderr


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        if proc.poll() is not None:
            pytest.fail(f"paramedic exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"{text!r} not logged within {timeout} s:\n{log.read_text()[-3000:]}")
