"""Unit tests of the disk probe's pure parts: spec, usage arithmetic, error mapping."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config.model import parse_config
from agent.kernel.conditions import evaluate
from agent.kernel.errors import AgentSideError, TargetError
from checks.disk import DiskSpec, statvfs_error, usage


def statvfs(**fields: int) -> os.statvfs_result:
    """A statvfs result: 4 KiB blocks, 1000 blocks, 300 free (250 for non-root), 100 inodes."""
    values = {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1000, "f_bfree": 300, "f_bavail": 250,
              "f_files": 100, "f_ffree": 40, "f_favail": 40, "f_flag": 0, "f_namemax": 255} | fields
    order = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
             "f_favail", "f_flag", "f_namemax")
    return os.statvfs_result(tuple(values[k] for k in order))


def test_spec_from_yaml_with_defaults() -> None:
    config = parse_config("checks:\n  - {name: data, type: disk, path: /var/lib/docker}\n")
    check = config.checks[0]
    assert isinstance(check, DiskSpec)
    assert check.target() == "/var/lib/docker"
    assert [c.expr for c in check.effective_conditions()] == ["used_percent < 90"]


@pytest.mark.parametrize("path", ["", "relative/dir", "./x"])
def test_spec_rejects_non_absolute_paths(path: str) -> None:
    with pytest.raises(ValidationError):
        DiskSpec.model_validate({"name": "d", "type": "disk", "path": path})


def test_usage_matches_df_arithmetic() -> None:
    out = usage(statvfs())
    assert out == {
        "used_ratio": round(700 / 950, 6),
        "used_percent": round(700 / 950 * 100, 4),
        "used_bytes": 700 * 4096,
        "free_bytes": 250 * 4096,
        "total_bytes": 1000 * 4096,
        "inodes_used_ratio": 0.6,
        "inodes_used_percent": 60.0,
        "inodes_used": 60,
        "inodes_free": 40,
        "inodes_total": 100,
        "read_only": False,
    }


def test_usage_edge_cases() -> None:
    empty = usage(statvfs(f_blocks=0, f_bfree=0, f_bavail=0, f_files=0, f_ffree=0, f_favail=0))
    assert (empty["used_ratio"], empty["inodes_used_ratio"], empty["inodes_total"]) == (0.0, 0.0, 0)
    full = usage(statvfs(f_bfree=50, f_bavail=0))
    assert full["used_percent"] == 100.0
    assert usage(statvfs(f_flag=os.ST_RDONLY))["read_only"] is True
    assert usage(statvfs(f_frsize=0))["total_bytes"] == 1000 * 4096  # falls back to f_bsize


@pytest.mark.parametrize(
    ("obs", "status"),
    [({"used_percent": 89.9}, 0), ({"used_percent": 90.0}, 2), ({}, 2)],
)
def test_default_condition(obs: dict[str, Any], status: int) -> None:
    conditions = DiskSpec.model_validate({"name": "d", "type": "disk", "path": "/"}).effective_conditions()
    assert evaluate(conditions, obs)[0] == status


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [(errno.ENOENT, AgentSideError, "path /x does not exist on the agent's host"),
     (errno.EACCES, AgentSideError, "path /x is not accessible (permission denied) on the agent's host"),
     (errno.EIO, TargetError, "filesystem of /x is failing: statvfs: Input/output error"),
     (errno.ESTALE, TargetError, "filesystem of /x is failing: statvfs: Stale file handle")],
)
def test_statvfs_errors(code: int, error: type[Exception], text: str) -> None:
    err = statvfs_error("/x", OSError(code, os.strerror(code)))
    assert type(err) is error
    assert str(err) == text
