"""Count this process's open TCP sockets to a port, from /proc (Linux; no psutil needed).

Timeout tests use it to prove that a cancelled probe closed its connection: a socket
still held by one of our descriptors and connected to the server's port is a leak.
"""

from __future__ import annotations

import os
from pathlib import Path


def _socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed between listdir and readlink
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    return inodes


def open_connections_to(port: int) -> int:
    """How many sockets held open by this process have ``port`` as their remote port."""
    ours = _socket_inodes()
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in ours:
                count += 1
    return count
