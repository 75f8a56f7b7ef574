"""``paramedic check`` (cron mode) keeps health state in the store across runs.

Each run is a new process; only the SQLite file connects them. The target is a port on
127.0.0.1 that refuses until the test starts listening on it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.store.sqlite import Store
from tests.support.installed import PARAMEDIC
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]



@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 (the kernel completes connects to it)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock
    finally:
        sock.close()


class Cron:
    """Runs ``paramedic check`` against one config file, as cron would."""

    def __init__(self, root: Path, db_port: int, up_port: int) -> None:
        self.config = root / "config.yaml"
        self.db = root / "state" / "paramedic.db"
        doc = {
            "store": {"path": "state/paramedic.db"},  # relative to the config file
            "checks": [
                {"name": "db", "type": "tcp", "host": "127.0.0.1", "port": db_port, "timeout": 2,
                 "failure_threshold": 3, "success_threshold": 2},
                {"name": "up", "type": "tcp", "host": "127.0.0.1", "port": up_port, "timeout": 2},
            ],
        }
        self.config.write_text(yaml.safe_dump(doc))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PARAMEDIC_")}
        self.cwd = root.parent  # not the config's directory: the store path must not depend on cwd

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PARAMEDIC), "check", "-c", str(self.config), *args],
            capture_output=True, text=True, timeout=60, env=self.env, cwd=self.cwd, check=False,
        )

    def json_states(self, *args: str) -> tuple[int, dict[str, Any]]:
        proc = self.run("-o", "json", *args)
        doc = json.loads(proc.stdout)
        return proc.returncode, {r["name"]: r.get("state") for r in doc["results"]}

    def table_states(self) -> tuple[int, dict[str, str]]:
        proc = self.run()
        lines = proc.stdout.splitlines()
        header = lines[0].split()
        assert header[:5] == ["NAME", "TYPE", "STATUS", "LATENCY", "STATE"], lines
        column = header.index("STATE")
        rows = {cells[0]: cells[column] for cells in map(str.split, lines[1:]) if cells and cells[0] in ("db", "up")}
        return proc.returncode, rows

    def stored(self, check: str) -> Any:
        store = Store(self.db)
        try:
            return store.states()[check]
        finally:
            store.close()


def test_cron_runs_count_consecutive_failures_and_passes_across_processes(
    tmp_path: Path, listener: socket.socket
) -> None:
    db_port = free_port()  # nothing listens: connection refused
    (tmp_path / "etc").mkdir()
    cron = Cron(tmp_path / "etc", db_port, listener.getsockname()[1])

    assert cron.json_states() == (2, {"db": "FAILING(1)", "up": "OK"})
    assert cron.db.exists()
    assert cron.json_states() == (2, {"db": "FAILING(2)", "up": "OK"})
    assert cron.table_states() == (2, {"db": "DOWN", "up": "OK"})  # failure_threshold 3
    assert cron.stored("db").failures == 3

    # an ad-hoc look with --no-store neither shows nor counts state
    assert cron.json_states("--no-store") == (2, {"db": None, "up": None})
    assert cron.stored("db").failures == 3

    # the same state is read by the next run: still DOWN, one more failure
    assert cron.json_states("--only", "db") == (2, {"db": "DOWN"})
    assert cron.stored("db").failures == 4
    since = cron.stored("db").since

    # the service comes back: success_threshold 2 passes are needed
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", db_port))
        server.listen(64)
        assert cron.json_states() == (0, {"db": "RECOVERING(1)", "up": "OK"})
        assert cron.stored("db").since > since
        assert cron.table_states() == (0, {"db": "OK", "up": "OK"})

    # and it goes down again from the start of the ladder
    assert cron.json_states("--only", "db") == (2, {"db": "FAILING(1)"})
