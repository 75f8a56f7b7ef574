"""The disk probe on real filesystems, compared with ``shutil.disk_usage``."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.config.model import parse_config
from agent.kernel.results import Result, Status
from agent.runtime.runner import run_once

pytestmark = pytest.mark.integration


def check(path: Path | str, *conditions: str) -> Result:
    lines = ["checks:", "  - name: disk", "    type: disk", f"    path: {str(path)!r}"]
    if conditions:
        lines += ["    conditions:", *(f"      - {c!r}" for c in conditions)]
    config = parse_config("\n".join(lines) + "\n")
    return asyncio.run(run_once(config.checks))[0]


def test_observations_match_shutil_disk_usage(tmp_path: Path) -> None:
    result = check(tmp_path, "used_percent <= 100")
    expected = shutil.disk_usage(tmp_path)

    assert result.status is Status.OK, result
    obs: dict[str, Any] = dict(result.observations)
    assert obs["total_bytes"] == expected.total
    slack = 64 * 2**20  # other processes may write between the two calls
    assert abs(obs["used_bytes"] - expected.used) <= slack
    assert abs(obs["free_bytes"] - expected.free) <= slack
    assert obs["used_ratio"] == pytest.approx(expected.used / (expected.used + expected.free), abs=0.01)
    assert obs["used_percent"] == pytest.approx(obs["used_ratio"] * 100, abs=0.001)
    st = os.statvfs(tmp_path)
    if st.f_files:
        assert obs["inodes_total"] == st.f_files
        assert obs["inodes_used_ratio"] == pytest.approx((st.f_files - st.f_ffree) / st.f_files, abs=0.01)
    assert obs["read_only"] is False


def test_conditions_around_the_real_value(tmp_path: Path) -> None:
    used = check(tmp_path, "used_percent >= 0").observations["used_percent"]
    below, above = max(used - 5, 0), used + 5

    assert check(tmp_path, f"used_percent < {above}").status is Status.OK
    result = check(tmp_path, f"used_percent < {below}")
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"used_percent < {below} failed (actual: ")
    assert check(tmp_path, "free_bytes > 1KiB", "inodes_used_percent < 100").status is Status.OK


def test_default_condition_on_the_root_filesystem() -> None:
    result = check("/")
    expected = Status.OK if result.observations["used_percent"] < 90 else Status.CRITICAL

    assert result.status is expected


def test_a_file_reports_its_filesystem(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")

    assert check(target).observations["total_bytes"] == shutil.disk_usage(tmp_path).total


def test_missing_path_is_unknown(tmp_path: Path) -> None:
    result = check(tmp_path / "nope")

    assert result.status is Status.UNKNOWN
    assert result.error == "AgentSideError"
    assert result.message == f"path {tmp_path / 'nope'} does not exist on the agent's host"
