"""Time to recovery: from a fault in a container's web server to its endpoint answering 200 again.

Run it from the repository root, with the Docker engine up (``bash scripts/setup-test-env``)::

    .venv/bin/python bench/time_to_recovery.py                          # 10 + 10 runs, 3 with defaults
    .venv/bin/python bench/time_to_recovery.py --runs 20 --default-runs 0
    .venv/bin/python bench/time_to_recovery.py --only hang --runs 5
    .venv/bin/python bench/time_to_recovery.py --only docker --runs 5 --alone   # no other container on the bridge

It prints figures and never asserts: timing is the machine's business, not CI's.

The target: one container from the local busybox test image whose PID 1 is ``sh`` (trapping
SIGTERM, so a graceful restart takes a fraction of a second) with busybox ``httpd`` in the
background, port 80 published on a fixed 127.0.0.1 port (Docker would pick a new random
one at every restart). Each run starts a fresh ``paramedic run`` (a fresh store: no
cooldown or budget left over from the previous run) with one ``http`` check on that port
and one runbook, act on DOWN with a graceful restart (``stop_timeout`` 1 s), waits until the
daemon has seen the check OK, waits a random fraction of the check's interval (so the fault
lands at a uniformly random point of the probe cycle), then injects the fault and polls the
endpoint from here every 50 ms (each GET with a 0.2 s timeout) until it answers 200.

Scenarios (the issue's targets, medians of 10 runs, in brackets):

* ``hang`` (<= 2.5 s): ``killall -STOP httpd``: the port still accepts, nothing answers.
  Check: interval 1 s, timeout 1 s, failure_threshold 2, success_threshold 1.
* ``fail-fast`` (<= 1.2 s): ``killall httpd``: nothing listens (connection refused or
  closed at once). Same check settings.
* ``defaults`` (<= 30 s): the hang again, with the check and scheduler left at paramedic's
  defaults (interval 30 s, timeout 5 s, failure_threshold 3, jitter 10 s). Slow: about
  a minute and a half per run, hence ``--default-runs`` (3).
* ``docker``: the floor, ``docker restart -t 1`` by hand 0.2 s after hanging the server,
  polled on the same path as the other scenarios.

``--retry-interval`` sets the checks' ``retry_interval`` (how soon a failed run that does
not make the check DOWN yet is repeated); ``--retry-interval 3600`` reproduces the
engine before it existed (the next run waits a whole interval).

The stack around it (``--alone`` leaves it out): a second container, ``sleep``-ing on the
same Docker network, stands for the rest of a real stack (the seed's app shares its host
with PostgreSQL, Redis and Prometheus). It matters on this host: when the bench's
container is the only one on the default bridge, restarting it removes the bridge's only
port, ``docker0`` loses its carrier, the kernel flushes its ARP entries, and the first
connection to the container made before the new veth is up (the poll's, or docker-proxy's
for the published port) leaves the entry INCOMPLETE until the next ARP probe
(``net.ipv4.neigh.docker0.retrans_time_ms``, 1 s). Every tool that restarts the container
pays that ~0.8 s alike; ``docker restart -t 1`` by hand, polled every 50 ms, measured from
the fault: ~1.5-1.65 s alone on the bridge, ~0.8 s with a neighbour (the 0.2 s wait and
the ``docker exec`` included), which matches the issue's "docker restart itself 0.4 s".

``--via port`` (default) polls the published port, as the service's clients do;
``--via ip`` polls the container's bridge address, port 80, as a client on the Docker
network does. With a neighbour on the bridge both give the same figures. paramedic's own
check probes the published port either way.

Figures per run, all wall-clock on this host, from the fault = the moment just before
the ``docker exec`` that injects it:

* **recovered**: the first 200 seen by the poll;
* **detect**: the journal intent's time (the daemon decided to act: after the
  failures, the flush and the guardrails), split into **down** (the daemon's log line
  for the check's transition to DOWN, millisecond resolution) and **decide** (from that
  transition to the intent: Docker inspect, the guardrails' store reads, the intent write);
* **restart**: from the intent to the container's new ``State.StartedAt``;
* **up**: from ``StartedAt`` to the first 200 (httpd starting, the poll's resolution and,
  with ``--alone``, the ARP stall above).

The summary prints the median (and min/max) of each, next to the target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import yaml
from _common import IMAGE, PARAMEDIC, ensure_image, first_logged, free_port, stop_process
from docker.models.containers import Container

from checks.container import parse_docker_time

SERVER = ("trap 'exit 0' TERM; mkdir -p /www && echo ok > /www/index.html && httpd -f -p 80 -h /www & "
          "while true; do sleep 0.1; done")
TARGETS = {"hang": 2.5, "fail-fast": 1.2, "defaults": 30.0}
TIGHT = {"interval": 1, "timeout": 1, "failure_threshold": 2, "success_threshold": 1}


def published(port: int) -> tuple[str, int]:
    """The published port (what paramedic's check probes)."""
    return "127.0.0.1", port


def url(target: tuple[str, int] | None) -> str:
    return "-" if target is None else f"http://{target[0]}:{target[1]}/"


def answers(target: tuple[str, int] | None, timeout: float = 0.2) -> bool:
    """One GET of ``http://host:port/``: True for a 200, False for anything else (refused, hung, error, no
    address yet)."""
    if target is None:
        return False
    host, port = target
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (OSError, urllib.error.URLError, ConnectionError, ValueError):
        return False
    except Exception:  # http.client.RemoteDisconnected and friends: not an answer
        return False


def bridge_address(container: Container) -> str | None:
    """The container's address on its Docker network, from a fresh inspect (None while it has none)."""
    container.reload()
    settings = container.attrs.get("NetworkSettings") or {}
    address = settings.get("IPAddress")
    if not address:  # not on the default bridge: the first network that has an address
        address = next((net.get("IPAddress") for net in (settings.get("Networks") or {}).values()
                        if net.get("IPAddress")), None)
    return str(address) if address else None


def neighbours(client: docker.DockerClient, container: Container) -> int:
    """How many other containers share the container's networks (with none, the bridge loses its carrier
    at every restart: see the caveat in the module's docstring)."""
    container.reload()
    others: set[str] = set()
    for name in container.attrs.get("NetworkSettings", {}).get("Networks") or {}:
        with contextlib.suppress(docker.errors.APIError):
            others |= set(client.networks.get(name).attrs.get("Containers") or {})
    others.discard(container.id)
    return len(others)


class Endpoint:
    """What the bench polls: the container's bridge address, port 80 (``ip``), or the published port (``port``)."""

    def __init__(self, container: Container, port: int, via: str) -> None:
        self.container, self.port, self.via = container, port, via
        self.address: str | None = None

    def target(self) -> tuple[str, int] | None:
        if self.via == "port":
            return published(self.port)
        if not self.address:  # read once, and again (after a reload) whenever it is missing
            self.address = bridge_address(self.container)
        return (self.address, 80) if self.address else None

    def check_address(self) -> None:
        """After a run: the address should not have moved (it has not in these runs); follow it if it has."""
        if self.via != "ip":
            return
        address = bridge_address(self.container)
        if address and address != self.address:
            print(f"note: the container's address moved from {self.address} to {address}", file=sys.stderr, flush=True)
            self.address = address


def wait(predicate: Any, timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(every)


def started_at(container: Container) -> float:
    container.reload()
    when = parse_docker_time(container.attrs["State"]["StartedAt"])
    assert when is not None
    return when.timestamp()


@contextlib.contextmanager
def neighbour(client: docker.DockerClient, alone: bool) -> Iterator[Container | None]:
    """The rest of the stack: one container sleeping on the default bridge (none with ``--alone``)."""
    if alone:
        yield None
        return
    container = client.containers.run(
        IMAGE, ["sleep", "3600"], detach=True, name=f"paramedic-bench-ttr-stack-{uuid.uuid4().hex[:8]}",
        labels={"paramedic-test": "1", "paramedic-test.pid": str(os.getpid())},
    )
    try:
        yield container
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def web_server(client: docker.DockerClient) -> Iterator[tuple[Container, int]]:
    port = free_port()
    container = client.containers.run(
        IMAGE, ["sh", "-c", SERVER], detach=True, name=f"paramedic-bench-ttr-{uuid.uuid4().hex[:8]}",
        ports={"80/tcp": ("127.0.0.1", port)}, labels={"paramedic-test": "1", "paramedic-test.pid": str(os.getpid())},
    )
    try:
        wait(lambda: answers(published(port), 1.0), 15, "the web server")
        yield container, port
    finally:
        container.remove(force=True)


class Daemon:
    """``paramedic run`` on a fresh store in ``root``, with one http check and one restart runbook."""

    def __init__(self, root: Path, container: str, port: int, check: dict[str, Any], scheduler: dict[str, Any]) -> None:
        root.mkdir(parents=True)
        self.db = root / "paramedic.db"
        self.api = free_port()
        config = {
            "store": {"path": str(self.db)},
            "server": {"listen": f"127.0.0.1:{self.api}"},
            "scheduler": scheduler,
            "checks": [{"name": "web", "type": "http", "url": f"http://127.0.0.1:{port}/", **check}],
            "runbooks": [{"name": "web-down", "match": {"checks": ["web"]}, "steps": [
                {"action": "restart", "params": {"container": container, "mode": "graceful", "stop_timeout": 1},
                 "verify_for": 10}]}],
        }
        path = root / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = root / "daemon.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen([str(PARAMEDIC), "run", "-c", str(path), "--log-format", "json"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)

    def health(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api}/api/v1/checks", timeout=1) as r:
                return str(json.loads(r.read())["checks"][0]["health"])
        except (OSError, ValueError, KeyError, IndexError):
            return None

    def intent_at(self, after: float) -> float | None:
        """The first journal intent written after ``after`` (epoch s)."""
        if not self.db.exists():
            return None
        try:
            db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1)
            try:
                row = db.execute("SELECT min(at) FROM journal WHERE phase = 'intent' AND at > ?", (after,)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return float(row[0]) if row and row[0] is not None else None

    def down_at(self, after: float) -> float | None:
        """When the log said the check went DOWN (the first time after ``after``)."""
        return first_logged(self.log_path, lambda doc: doc.get("to") == "DOWN", after)

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)
        self.log.close()


@dataclass
class Run:
    recovered: float
    detect: float | None = None
    down: float | None = None
    restart: float | None = None
    up: float | None = None


def inject(container: Container, scenario: str) -> None:
    signal_args = ["-STOP"] if scenario in ("hang", "defaults", "docker") else []
    code, out = container.exec_run(["killall", *signal_args, "httpd"])
    if code != 0:
        raise RuntimeError(f"killall failed: {out!r}")


def poll_recovery(endpoint: Endpoint, limit: float) -> float:
    """Poll the endpoint every 50 ms until a 200; the wall time of that answer."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        began = time.monotonic()
        if answers(endpoint.target()):
            return time.time()
        time.sleep(max(0.0, 0.05 - (time.monotonic() - began)))
    raise TimeoutError(f"no 200 from {url(endpoint.target())} within {limit}s of the fault")


def one_run(tmp: Path, index: int, scenario: str, endpoint: Endpoint, retry_interval: float | None) -> Run:
    container = endpoint.container
    if scenario == "docker":  # the restart 0.2 s after the fault, polled like the others
        fault = time.time()
        inject(container, scenario)
        restart = threading.Timer(0.2, container.restart, kwargs={"timeout": 1})
        restart.start()
        recovered = poll_recovery(endpoint, 30)
        restart.join()
        return Run(recovered - fault)
    defaults = scenario == "defaults"
    check: dict[str, Any] = {} if defaults else dict(TIGHT)
    if retry_interval is not None:
        check["retry_interval"] = retry_interval
    scheduler: dict[str, Any] = {} if defaults else {"jitter": 0}
    interval = 30.0 if defaults else 1.0
    daemon = Daemon(tmp / f"{scenario}-{index}", container.name, endpoint.port, check, scheduler)
    try:
        wait(lambda: daemon.health() == "OK", 45, "the daemon's first OK")
        time.sleep(random.uniform(0, interval))  # a uniformly random point of the probe cycle
        before_start = started_at(container)
        fault = time.time()
        inject(container, scenario)
        recovered = poll_recovery(endpoint, 200 if defaults else 30)
        intent = wait(lambda: daemon.intent_at(fault), 5, "the journal intent")
        new_start = started_at(container)
        down = daemon.down_at(fault - 0.001)
        run = Run(recovered - fault, intent - fault, down - fault if down is not None else None)
        if new_start != before_start:
            run.restart, run.up = new_start - intent, recovered - new_start
        return run
    finally:
        daemon.stop()


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of hang, fail-fast and docker (default 10)")
    parser.add_argument("--default-runs", type=int, default=3, help="runs with paramedic's defaults (default 3)")
    parser.add_argument("--only", choices=["hang", "fail-fast", "defaults", "docker"], action="append",
                        help="run only this scenario (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random fault timing")
    parser.add_argument("--retry-interval", type=float, default=None, metavar="SECONDS",
                        help="the checks' retry_interval (default: paramedic's, a twentieth of the interval, "
                             "at most 1 s; 3600 gives the behaviour before retry_interval existed)")
    parser.add_argument("--via", choices=["ip", "port"], default="port",
                        help="where to poll for the 200: the published 127.0.0.1 port (port, the default: what the "
                             "service's clients see) or the container's bridge address, port 80 (ip: what a client "
                             "on the Docker network sees); paramedic's check probes the published port either way")
    parser.add_argument("--alone", action="store_true",
                        help="no second container on the bridge (it then loses its carrier at every restart, and "
                             "each restart costs ~0.8 s of ARP stall: see the module's docstring)")
    args = parser.parse_args()
    random.seed(args.seed)
    client = docker.from_env()
    ensure_image(client)
    scenarios = args.only or ["docker", "hang", "fail-fast", "defaults"]
    results: dict[str, list[Run]] = {}
    with (tempfile.TemporaryDirectory(prefix="paramedic-ttr-") as tmp_name, neighbour(client, args.alone),
          web_server(client) as (container, port)):
        tmp = Path(tmp_name)
        endpoint = Endpoint(container, port, args.via)
        wait(lambda: answers(endpoint.target(), 1.0), 15, f"the web server via {args.via}")
        polled = url(endpoint.target())
        print(f"polling {polled} (--via {args.via}); paramedic's check probes {url(published(port))}; "
              f"other containers on the network: {neighbours(client, container)}", flush=True)
        for scenario in scenarios:
            n = args.default_runs if scenario == "defaults" else args.runs
            for i in range(n):
                run = one_run(tmp, i, scenario, endpoint, args.retry_interval)
                results.setdefault(scenario, []).append(run)
                split = "" if run.detect is None else (
                    f"  detect {run.detect:5.2f} (down {run.down or 0:5.2f})"
                    f"  restart {run.restart or 0:4.2f}  up {run.up or 0:4.2f}")
                print(f"{scenario:<9} run {i + 1:>2}/{n}: recovered {run.recovered:6.2f} s{split}", flush=True)
                endpoint.check_address()
                # both paths settled (the daemon of the next run probes the published port)
                wait(lambda: answers(endpoint.target(), 1.0) and answers(published(port), 1.0), 30,
                     "the web server after the run")

    retry = "paramedic's default" if args.retry_interval is None else f"{args.retry_interval:g} s"
    print(f"\nmedians (min, max), from the fault to the first 200 of {polled} (--via {args.via}; "
          f"retry_interval: {retry}):")
    for scenario in scenarios:
        runs = results.get(scenario, [])
        if not runs:
            continue
        target = TARGETS.get(scenario)
        goal = f"   target <= {target} s" if target else "   (docker restart -t 1 by hand: the floor)"
        print(f"  {scenario:<9} recovered {fmt([r.recovered for r in runs])}{goal}")
        if scenario != "docker":
            print(f"  {'':<9} detect    {fmt([r.detect for r in runs if r.detect is not None])}")
            print(f"  {'':<9}  down     {fmt([r.down for r in runs if r.down is not None])}")
            print(f"  {'':<9}  decide   {fmt([r.detect - r.down for r in runs if r.detect and r.down])}")
            print(f"  {'':<9} restart   {fmt([r.restart for r in runs if r.restart is not None])}")
            print(f"  {'':<9} up        {fmt([r.up for r in runs if r.up is not None])}")


if __name__ == "__main__":
    main()
