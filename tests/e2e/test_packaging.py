"""What ``pip install .`` gives users holds the whole tree.

The wheel once lacked ``agent/notify`` (the packages were listed by hand), and every
command but ``check`` crashed with ModuleNotFoundError while the editable install the
tests used saw the checkout. These tests read the wheel the e2e tier installs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.installed import REPO, Installed, source_files

pytestmark = pytest.mark.e2e

PACKAGES = ("agent", "checks", "remediations")


def test_every_module_of_the_tree_is_in_the_wheel(installed_paramedic: Installed) -> None:
    names = installed_paramedic.wheel_names()
    tree = [f for f in source_files() if f.split("/")[0] in PACKAGES and f.endswith(".py")]
    assert len(tree) > 50  # the tree was read (a broken listing would pass vacuously)
    assert [f for f in tree if f not in names] == []


def test_every_non_python_file_of_the_packages_is_in_the_wheel(installed_paramedic: Installed) -> None:
    """Templates, ``py.typed`` markers and any data file the code loads ship too."""
    names = installed_paramedic.wheel_names()
    data = [f for f in source_files() if f.split("/")[0] in PACKAGES and not f.endswith((".py", ".pyc"))]
    assert "agent/py.typed" in data
    assert [f for f in data if f not in names] == []


def test_the_wheel_holds_no_tests_or_benchmarks(installed_paramedic: Installed) -> None:
    tops = {name.split("/")[0] for name in installed_paramedic.wheel_names()}
    assert tops <= {*PACKAGES, f"paramedic-{_version()}.dist-info"}


def test_every_command_of_the_installed_paramedic_starts(installed_paramedic: Installed, tmp_path: Path) -> None:
    """``--help`` of each command imports its modules: a module missing from the wheel fails here."""
    import subprocess

    top = subprocess.run([str(installed_paramedic.paramedic), "--help"], capture_output=True, text=True,
                         timeout=60, check=False, cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    listing = top.stdout.split("Commands:\n")[1].split("\n\n")[0]  # up to the epilog
    commands = [line.split()[0] for line in listing.splitlines() if line.strip()]
    assert {"run", "check", "validate", "audit", "incidents", "silence"} <= set(commands)
    for command in commands:
        proc = subprocess.run([str(installed_paramedic.paramedic), command, "--help"], capture_output=True,
                              text=True, timeout=60, check=False, cwd=tmp_path)
        assert proc.returncode == 0, f"paramedic {command} --help: {proc.stderr}"
        assert "Traceback" not in proc.stderr


def _version() -> str:
    import tomllib

    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])
