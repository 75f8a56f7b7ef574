"""``disk`` probe: space and inode usage of the filesystem holding ``path``, via ``statvfs``.

The figures match ``df``: ``used_percent`` is used / (used + available to unprivileged
users), so the blocks reserved for root count neither as used nor as free, and 100 %
means "a normal process can no longer write". The filesystem is the one the *agent*
sees: run paramedic on the host, or mount the volume you care about into its container.

Observations: ``used_ratio`` (0..1), ``used_percent`` (0..100), ``used_bytes``,
``free_bytes`` (available to unprivileged users), ``total_bytes``, ``inodes_used_ratio``,
``inodes_used_percent``, ``inodes_used``, ``inodes_free``, ``inodes_total`` (0 and a
ratio of 0.0 on filesystems without an inode limit) and ``read_only`` (mounted
read-only, e.g. after an ext4 ``errors=remount-ro``).

``statvfs`` runs in a worker thread. It has no timeout of its own: on a hung network
mount the engine's timeout still ends the check (CRITICAL, "timed out"), but the thread
stays blocked in the kernel until the mount answers.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from agent.kernel.errors import AgentSideError, ProbeError, TargetError
from checks.base import CheckSpec, Probe

#: errno values that mean the *configuration* names a path the agent cannot use.
_AGENT_SIDE = {
    errno.ENOENT: "does not exist",
    errno.ENOTDIR: "does not exist (a parent is not a directory)",
    errno.EACCES: "is not accessible (permission denied)",
    errno.EPERM: "is not accessible (operation not permitted)",
    errno.ELOOP: "cannot be resolved (too many symbolic links)",
    errno.ENAMETOOLONG: "is too long",
}


class DiskSpec(CheckSpec):
    """Which filesystem to look at: the one that holds ``path`` (a directory or a file)."""

    type: Literal["disk"]
    path: str = Field(min_length=1)

    default_conditions: ClassVar[tuple[str, ...]] = ("used_percent < 90",)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not os.path.isabs(value):
            raise ValueError("must be an absolute path (the agent's working directory is not fixed)")
        return value

    def target(self) -> str:
        return self.path


class DiskProbe(Probe[DiskSpec]):
    """One ``statvfs`` call per run; nothing is kept between runs."""

    spec_model = DiskSpec

    async def observe(self) -> dict[str, Any]:
        path = self.spec.path
        try:
            st = await asyncio.to_thread(os.statvfs, path)
        except OSError as exc:
            raise statvfs_error(path, exc) from None
        return usage(st)


def statvfs_error(path: str, exc: OSError) -> ProbeError:
    """Map a failed ``statvfs``: a path the agent cannot use is UNKNOWN, a broken FS CRITICAL.

    A missing or forbidden path is a problem of the config (or of what is mounted into
    the agent's container), so it must never trigger a remediation. EIO, ESTALE (NFS) or
    ENOTCONN (a dead FUSE mount) mean the filesystem itself is failing.
    """
    if exc.errno in _AGENT_SIDE:
        return AgentSideError(f"path {path} {_AGENT_SIDE[exc.errno]} on the agent's host")
    reason = exc.strerror or type(exc).__name__
    return TargetError(f"filesystem of {path} is failing: statvfs: {reason}")


def usage(st: os.statvfs_result) -> dict[str, Any]:
    """Observations from one ``statvfs`` result (pure, so it is tested without a disk)."""
    frsize = st.f_frsize or st.f_bsize
    total = st.f_blocks * frsize
    free = st.f_bavail * frsize
    used = (st.f_blocks - st.f_bfree) * frsize
    usable = used + free
    ratio = used / usable if usable > 0 else 0.0
    inodes_total = st.f_files
    inodes_used = max(st.f_files - st.f_ffree, 0)
    inodes_ratio = inodes_used / inodes_total if inodes_total > 0 else 0.0
    return {
        "used_ratio": round(ratio, 6),
        "used_percent": round(ratio * 100, 4),
        "used_bytes": used,
        "free_bytes": free,
        "total_bytes": total,
        "inodes_used_ratio": round(inodes_ratio, 6),
        "inodes_used_percent": round(inodes_ratio * 100, 4),
        "inodes_used": inodes_used,
        "inodes_free": st.f_favail,
        "inodes_total": inodes_total,
        "read_only": bool(st.f_flag & os.ST_RDONLY),
    }
