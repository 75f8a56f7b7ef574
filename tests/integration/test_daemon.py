"""The real daemon, ``paramedic run``, as a subprocess against servers this module controls.

Targets: a stdlib HTTP server (answers, echoes the Authorization header, or fails on
demand), a TCP port where nothing listens (connection refused) and a listener that
accepts and never answers (``HangingListener``). The daemon logs JSON to a file; the tests
read its lines, its HTTP endpoint and its SQLite store, and signal it as an init system would.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.store.sqlite import Store
from tests.support.servers import QuietHandler, ServerThread, free_port, http_server
from tests.support.services import HangingListener
from tests.support.waiting import HttpReply, http_get, poll

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PARAMEDIC = Path(sys.executable).with_name("paramedic")


# --------------------------------------------------------------------------- targets


class Target:
    """An HTTP server on 127.0.0.1: ``/ok`` answers 200, ``/echo`` returns the request's
    Authorization header in its body and in ``X-Echo``; ``status`` overrides both."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0  # seconds each answer waits
        self.authorizations: list[str] = []
        target = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                time.sleep(target.delay)
                auth = self.headers.get("Authorization", "")
                target.authorizations.append(auth)
                body = f"auth={auth}\n".encode() if self.path.startswith("/echo") else b"ok\n"
                self.send_response(target.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                if self.path.startswith("/echo"):
                    self.send_header("X-Echo", auth)
                self.end_headers()
                self.wfile.write(body)

        self._serving = ServerThread(http_server(Handler), poll_interval=0.05)
        self.port: int = self._serving.server.server_address[1]

    def url(self, path: str = "/ok") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._serving.close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def refused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connect is refused)."""
    return free_port()


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """One ``paramedic run`` process with its config file, log file, store and port."""

    def __init__(self, root: Path, name: str = "daemon") -> None:
        self.root = root
        self.config_path = root / "config.yaml"
        self.db = root / "paramedic.db"
        self.port = free_port()
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PARAMEDIC_")}

    # config

    def write_config(self, checks: list[dict[str, Any]], **top: Any) -> None:
        doc: dict[str, Any] = {
            "store": {"path": str(self.db)},
            "server": {"listen": f"127.0.0.1:{self.port}"},
            "scheduler": {"jitter": 0, "flush_interval": 0.05},
            **top,
            "checks": checks,
        }
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.replace(tmp, self.config_path)  # atomic: a SIGHUP never reads half a file

    # process

    def start(self, log_name: str | None = None) -> Daemon:
        if log_name is not None:
            self.log = self.root / log_name
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(PARAMEDIC), "run", "-c", str(self.config_path), "--log-format", "json"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=self.root, env=self.env,
            )
        poll(lambda: self.get("/healthz").status == 200, 20, "GET /healthz 200", self)
        return self

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns the exit code and how long the exit took."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon did not exit within {timeout}s of SIGTERM:\n{self.log_text()}")
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    # observation

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self) -> list[dict[str, Any]]:
        """Every complete stderr line, each of which must be one JSON object."""
        text = self.log_text()
        complete = text[: text.rfind("\n") + 1]
        out = []
        for line in complete.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"not a JSON log line: {line!r}\n{text}")
        return out

    def transitions(self, check: str | None = None) -> list[tuple[str, str]]:
        return [(d["from"], d["to"]) for d in self.lines()
                if "from" in d and "to" in d and (check is None or d.get("check") == check)]

    def get(self, path: str) -> HttpReply:
        return http_get(f"http://127.0.0.1:{self.port}{path}", timeout=5.0)

    def checks(self) -> dict[str, dict[str, Any]]:
        reply = self.get("/api/v1/checks")
        assert reply.status == 200
        return {c["name"]: c for c in json.loads(reply.body)["checks"]}

    def stored_state(self, check: str) -> Any:
        store = Store(self.db)
        try:
            return store.states().get(check)
        finally:
            store.close()

    def stored_results(self, check: str, limit: int = 1000) -> list[dict[str, Any]]:
        store = Store(self.db)
        try:
            return store.recent_results(check, limit)
        finally:
            store.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[], Daemon]]:
    """``daemons()`` makes a Daemon rooted in ``tmp_path``; every process is killed at teardown."""
    made: list[Daemon] = []

    def make() -> Daemon:
        d = Daemon(tmp_path, name=f"daemon{len(made)}")
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.kill()


def tcp(name: str, port: int, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "tcp", "host": "127.0.0.1", "port": port, "interval": 0.1, "timeout": 1, **kw}


def http(name: str, url: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "http", "url": url, "interval": 0.1, "timeout": 1, **kw}


# --------------------------------------------------------------------------- state changes and logs


def test_a_failing_check_goes_down_with_one_log_line_per_state_change(
    daemons: Callable[[], Daemon], target: Target, refused_port: int
) -> None:
    d = daemons()
    # a flush every 0.5 s batches ~5 runs: OK -> FAILING -> DOWN arrive in one batch
    d.write_config([tcp("refused", refused_port), http("web", target.url())],
                   scheduler={"jitter": 0, "flush_interval": 0.5})
    d.start()
    poll(lambda: d.checks()["refused"]["state"] == "DOWN", 15, "refused DOWN", d)
    # plenty of probes of both checks...
    poll(lambda: len(d.stored_results("web")) >= 10 and len(d.stored_results("refused")) >= 10, 15, "10 runs", d)
    rc, _ = d.terminate()
    assert rc == 0

    lines = d.lines()
    changes = [x for x in lines if "from" in x]
    assert [(x["check"], x["from"], x["to"], x["status"]) for x in changes] == [
        ("refused", "OK", "FAILING", "CRITICAL"),
        ("refused", "FAILING", "DOWN", "CRITICAL"),
    ]
    assert all(x["level"] == "warning" for x in changes)
    assert changes[0]["msg"].startswith("check refused: OK -> FAILING")
    assert changes[1]["msg"].startswith("check refused: FAILING -> DOWN")
    # ...and not a line per probe: nothing at all about the healthy check
    assert not [x for x in lines if "web" in json.dumps(x)]
    assert len(lines) < 10, lines
    assert d.stored_state("refused").health.value == "DOWN"


def test_a_failure_is_confirmed_after_retry_interval_not_a_whole_interval(
    daemons: Callable[[], Daemon], refused_port: int
) -> None:
    d = daemons()
    d.write_config([tcp("refused", refused_port, interval=30, failure_threshold=3, retry_interval=0.2)])
    d.start()
    poll(lambda: d.checks()["refused"]["state"] == "DOWN", 5, "DOWN within seconds, not 60 s", d)
    results = sorted(r["started_at"] for r in d.stored_results("refused"))
    assert len(results) == 3, results  # three quick failures; DOWN goes back to the 30 s interval
    assert all(0.15 < b - a < 1.0 for a, b in itertools.pairwise(results)), results
    rc, _ = d.terminate()
    assert rc == 0


def test_a_hung_server_is_confirmed_by_a_hedged_run_alongside_the_first(daemons: Callable[[], Daemon]) -> None:
    hanging = HangingListener()
    try:
        d = daemons()
        # a 30 s interval and a 1 s retry: without a hedge the second failure would start only
        # after the first run's 2 s timeout (and the retry), one run after the other
        d.write_config([http("hung", f"http://127.0.0.1:{hanging.port}/", interval=30, timeout=2,
                             failure_threshold=2, retry_interval=1)])
        d.start()
        poll(lambda: d.checks()["hung"]["state"] == "DOWN", 15, "hung DOWN", d)
        first, second = sorted(d.stored_results("hung"), key=lambda r: r["started_at"])
        assert first["error"] == second["error"] == "ProbeTimeoutError"
        first_ended = first["started_at"] + first["duration_ms"] / 1000
        assert second["started_at"] < first_ended - 0.5, (first, second)  # it ran alongside the first
        assert len(hanging.accepted) == 2
        families = _families(d.get("/metrics").body.decode())
        assert _sample(families, "paramedic_hedged_runs", "paramedic_hedged_runs_total", check="hung") == 1
        assert d.terminate()[0] == 0
    finally:
        hanging.close()


def test_a_slow_but_healthy_server_is_not_hedged(daemons: Callable[[], Daemon], target: Target) -> None:
    # 10x its 20 ms retry_interval, well inside the 2 s timeout: slow is not failing, and a
    # hedge (4x the slowest passing run, at most half the timeout) would wait 0.8-1 s
    target.delay = 0.2
    d = daemons()
    d.write_config([http("slow", target.url(), interval=0.4, timeout=2, failure_threshold=2)])
    d.start()
    poll(lambda: len(d.stored_results("slow")) >= 6, 20, "six runs", d)
    assert {r["status"] for r in d.stored_results("slow")} == {"OK"}
    families = _families(d.get("/metrics").body.decode())
    assert not _sample(families, "paramedic_hedged_runs", "paramedic_hedged_runs_total", check="slow")
    assert d.terminate()[0] == 0
    assert len(target.authorizations) == len(d.stored_results("slow"))  # one request per run, none extra


def test_a_failure_is_written_at_once_not_at_the_next_batch(daemons: Callable[[], Daemon], refused_port: int) -> None:
    d = daemons()
    d.write_config([tcp("refused", refused_port, interval=0.5, failure_threshold=1)],
                   scheduler={"jitter": 0, "flush_interval": 60})
    d.start()
    # batches every 60 s: only the write-at-once path can show DOWN within seconds
    poll(lambda: d.checks()["refused"]["state"] == "DOWN", 10, "DOWN long before the first batch", d)
    assert d.stored_state("refused").health.value == "DOWN"
    assert d.terminate()[0] == 0


def test_a_restart_resumes_state(
    daemons: Callable[[], Daemon], target: Target, refused_port: int
) -> None:
    first = daemons()
    first.write_config([tcp("refused", refused_port), http("web", target.url())])
    first.start()
    poll(lambda: first.checks()["refused"]["state"] == "DOWN", 15, "refused DOWN", first)
    assert first.terminate()[0] == 0
    before = first.stored_state("refused")
    assert before.health.value == "DOWN"
    runs_before = len(first.stored_results("refused"))
    assert runs_before == before.failures  # every result was flushed before exit

    # one interval long enough that a daemon which forgot the state could not reach DOWN again
    second = daemons()
    second.write_config([tcp("refused", refused_port, interval=60), http("web", target.url())])
    second.start()
    right_after = second.checks()["refused"]
    assert right_after["state"] == "DOWN"
    assert right_after["since"] == pytest.approx(before.since)
    assert second.stored_state("refused").health.value == "DOWN"
    # its first run (at start, jitter 0) is one more failure on top of the old count
    poll(lambda: len(second.stored_results("refused")) > runs_before, 10, "a new result", second)
    poll(lambda: second.checks()["refused"]["consecutive_failures"] == before.failures + 1, 5, "count + 1", second)
    state = second.checks()["refused"]
    assert state["state"] == "DOWN"
    assert state["last_result"]["status"] == "CRITICAL"
    assert state["since"] == pytest.approx(before.since)
    assert second.terminate()[0] == 0
    assert second.transitions() == []  # in particular, no OK -> FAILING

    # the cron mode reads and advances the same state
    cron = subprocess.run([str(PARAMEDIC), "check", "-c", str(second.config_path), "-o", "json", "--only", "refused"],
                          capture_output=True, text=True, timeout=30, env=second.env, check=False)
    assert cron.returncode == 2, cron.stderr
    assert json.loads(cron.stdout)["results"][0]["state"] == "DOWN"
    assert second.stored_state("refused").failures == before.failures + 2


# --------------------------------------------------------------------------- reload


def test_sighup_applies_a_good_config_and_keeps_the_old_one_on_a_bad_config(
    daemons: Callable[[], Daemon], target: Target, refused_port: int
) -> None:
    d = daemons()
    keep = tcp("keep", refused_port)
    d.write_config([keep, http("retime", target.url(), interval=1)])
    d.start()
    poll(lambda: d.checks()["keep"]["state"] == "DOWN", 15, "keep DOWN", d)
    since = d.checks()["keep"]["since"]

    # good: keep unchanged, retime every 0.1 s instead of 1 s, one new check
    d.write_config([keep, http("retime", target.url(), interval=0.1), http("new", target.url())])
    d.send(signal.SIGHUP)
    # last_result shows at once, state one flush later
    poll(lambda: (d.checks().get("new") or {}).get("state") == "OK", 10, "the new check's first state", d)
    checks = d.checks()
    assert set(checks) == {"keep", "retime", "new"}
    assert checks["keep"]["state"] == "DOWN"
    assert checks["keep"]["since"] == since
    assert checks["retime"]["interval_s"] == 0.1
    assert checks["new"]["state"] == "OK"
    count = len(d.stored_results("retime"))
    poll(lambda: len(d.stored_results("retime")) >= count + 5, 3, "retime running every 0.1 s", d)
    assert any(x["msg"].startswith("config reloaded") for x in d.lines())
    assert d.transitions("keep") == [("OK", "FAILING"), ("FAILING", "DOWN")]  # nothing new for keep

    # bad: two problems; the running config stays
    d.write_config([keep, http("retime", target.url(), timeout="5 parsecs"), {"name": "x", "type": "nope"}])
    d.send(signal.SIGHUP)
    rejected = poll(lambda: [x for x in d.lines() if x["level"] == "error"], 10, "an error log line", d)
    assert len(rejected) == 1
    assert "reload rejected" in rejected[0]["msg"]
    assert "checks[1].timeout" in rejected[0]["msg"]
    assert "checks[2].type" in rejected[0]["msg"]
    assert any(p.startswith("checks[1].timeout") for p in rejected[0]["problems"])
    runs = {n: len(d.stored_results(n)) for n in ("keep", "retime", "new")}
    poll(lambda: all(len(d.stored_results(n)) >= runs[n] + 3 for n in runs), 5, "results after the bad reload", d)
    checks = d.checks()
    assert set(checks) == {"keep", "retime", "new"}
    assert checks["retime"]["interval_s"] == 0.1
    assert checks["keep"]["since"] == since
    assert d.terminate()[0] == 0


# --------------------------------------------------------------------------- shutdown


def test_sigterm_waits_for_the_probe_in_flight_flushes_it_and_exits_0(
    daemons: Callable[[], Daemon], target: Target
) -> None:
    hanging = HangingListener()
    try:
        d = daemons()
        d.write_config([http("hang", f"http://127.0.0.1:{hanging.port}/", timeout=2, interval=30,
                             failure_threshold=1),  # one failure decides: no hedged run beside it
                        http("web", target.url(), timeout=1)])
        d.start()
        poll(lambda: hanging.accepted, 10, "the hanging probe's connection", d)
        assert d.stored_results("hang") == []  # still in flight
        rc, took = d.terminate()
        assert rc == 0
        assert took < 2.0 + 1.0, f"exit took {took:.2f}s"
        results = d.stored_results("hang")
        assert len(results) == len(hanging.accepted) == 1
        assert results[0]["status"] == "CRITICAL"
        assert results[0]["error"] == "ProbeTimeoutError"
        assert d.lines()[-1]["msg"] == "stopped"
    finally:
        hanging.close()


# --------------------------------------------------------------------------- endpoints


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(families: dict[str, Any], family: str, sample: str, **labels: str) -> float | None:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


def test_http_endpoints(daemons: Callable[[], Daemon], target: Target, refused_port: int) -> None:
    d = daemons()
    d.write_config([tcp("refused", refused_port), http("web", target.url())])
    d.start()
    healthz = d.get("/healthz")
    assert (healthz.status, healthz.body) == (200, b"ok\n")
    poll(lambda: d.checks()["refused"]["state"] == "DOWN", 15, "refused DOWN", d)
    poll(lambda: len(d.stored_results("web")) >= 3, 10, "web results", d)

    reply = d.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    families = _families(reply.body.decode())
    assert families["paramedic_probe_duration_seconds"].type == "histogram"
    for check, kind in (("web", "http"), ("refused", "tcp")):
        count = _sample(families, "paramedic_probe_duration_seconds", "paramedic_probe_duration_seconds_count",
                        check=check, type=kind)
        assert (count or 0) >= 3
    assert _sample(families, "paramedic_check_status", "paramedic_check_status", check="web") == 0
    assert _sample(families, "paramedic_check_status", "paramedic_check_status", check="refused") == 2
    transitions = "paramedic_state_transitions"
    for before, after in (("OK", "FAILING"), ("FAILING", "DOWN")):
        labels = {"check": "refused", "from": before, "to": after}
        assert _sample(families, transitions, transitions + "_total", **labels) == 1
    assert _sample(families, transitions, transitions + "_total", check="web") is None
    errors = _sample(families, "paramedic_probe_errors", "paramedic_probe_errors_total",
                     check="refused", kind="ConnectionRefusedProbeError")
    assert (errors or 0) >= 3
    assert _sample(families, "paramedic_probe_errors", "paramedic_probe_errors_total", check="web") is None
    lag_count = _sample(families, "paramedic_scheduler_lag_seconds", "paramedic_scheduler_lag_seconds_count")
    assert (lag_count or 0) >= 6

    checks = d.checks()
    assert set(checks) == {"refused", "web"}
    for item in checks.values():
        assert {"state", "since", "last_result"} <= set(item)
        assert isinstance(item["since"], float)
    assert checks["web"]["state"] == "OK"
    assert checks["web"]["last_result"]["status"] == "OK"
    assert checks["web"]["last_result"]["observations"]["status_code"] == 200
    assert checks["refused"]["state"] == "DOWN"
    assert checks["refused"]["last_result"]["error"] == "ConnectionRefusedProbeError"

    one = d.get("/api/v1/checks/web")
    assert one.status == 200
    doc = json.loads(one.body)
    assert doc["name"] == "web"
    assert doc["state"] == "OK"
    recent = doc["recent_results"]
    assert len(recent) >= 3
    assert [r["started_at"] for r in recent] == sorted((r["started_at"] for r in recent), reverse=True)
    assert {r["status"] for r in recent} == {"OK"}

    missing = d.get("/api/v1/checks/no-such-check")
    assert missing.status == 404
    assert "no-such-check" in json.loads(missing.body)["error"]
    assert d.terminate()[0] == 0


# --------------------------------------------------------------------------- secrets


PASSWORD = "pw-canary-7f3a9c"
TOKEN = "tok-canary-91b2e4"


def test_secrets_never_leave_the_config(
    daemons: Callable[[], Daemon], target: Target, refused_port: int
) -> None:
    d = daemons()
    d.env["PARAMEDIC_TEST_TOKEN"] = TOKEN
    auth = {"Authorization": "Bearer ${PARAMEDIC_TEST_TOKEN}"}
    quoted = urllib.parse.quote(PASSWORD)
    d.write_config([
        http("echo", f"http://probe:{quoted}@127.0.0.1:{target.port}/echo", headers=auth),
        # fails on purpose: its message quotes the body, which echoes the token
        http("echo-fail", f"http://probe:{quoted}@127.0.0.1:{target.port}/echo?v=1", headers=auth,
             conditions=['body contains "never-there"'], failure_threshold=1),
        http("refused", f"http://probe:{quoted}@127.0.0.1:{refused_port}/", headers=auth),
    ])
    d.start()
    poll(lambda: d.checks()["echo-fail"]["state"] == "DOWN", 15, "echo-fail DOWN", d)
    poll(lambda: d.checks()["refused"]["state"] == "DOWN", 15, "refused DOWN", d)
    poll(lambda: len(d.stored_results("echo")) >= 3, 10, "echo results", d)
    # not vacuous: the token really went out, and the echoes came back (masked)
    assert f"Bearer {TOKEN}" in target.authorizations
    stored = d.stored_results("echo")[0]
    assert stored["observations"]["body"] == "auth=***\n"  # the whole header value is a secret
    assert stored["observations"]["headers"]["x-echo"] == "***"
    assert "probe:***@" in d.checks()["echo"]["target"]
    assert "never-there" in d.checks()["echo-fail"]["last_result"]["message"]

    seen: dict[str, bytes] = {}
    seen["/api/v1/checks"] = d.get("/api/v1/checks").body
    for name in ("echo", "echo-fail", "refused"):
        seen[f"/api/v1/checks/{name}"] = d.get(f"/api/v1/checks/{name}").body
    seen["/metrics"] = d.get("/metrics").body
    for suffix in ("", "-wal"):
        path = Path(f"{d.db}{suffix}")
        if path.exists():
            seen[f"db{suffix} (running)"] = path.read_bytes()
    assert d.terminate()[0] == 0
    seen["stderr"] = d.log.read_bytes()
    for suffix in ("", "-wal"):
        path = Path(f"{d.db}{suffix}")
        if path.exists():
            seen[f"db{suffix} (stopped)"] = path.read_bytes()
    assert seen["db (stopped)"]
    assert any(b"echo-fail" in line and b"DOWN" in line for line in seen["stderr"].splitlines())

    for secret in (PASSWORD, quoted, TOKEN):
        leaks = [where for where, data in seen.items() if secret.encode() in data]
        assert leaks == [], f"{secret!r} leaked into {leaks}"


# --------------------------------------------------------------------------- a probe that cannot be built


def test_a_check_whose_probe_cannot_be_set_up_is_unknown_and_stops_nothing(
    daemons: Callable[[], Daemon], target: Target, tmp_path: Path
) -> None:
    """A missing CA file makes the http probe's constructor fail. At start and on reload,
    that check must report UNKNOWN (as ``paramedic check`` does) and the others go on."""
    missing_ca = str(tmp_path / "no-such-ca.pem")
    broken = http("broken-tls", f"https://127.0.0.1:{target.port}/", tls={"ca_file": missing_ca})
    d = daemons()
    d.write_config([http("web", target.url())])
    d.start()
    poll(lambda: d.checks()["web"]["state"] == "OK", 10, "web OK", d)

    d.write_config([http("web", target.url()), broken])
    d.send(signal.SIGHUP)
    item = poll(lambda: (d.checks().get("broken-tls") or {}).get("last_result"), 10, "broken-tls result", d)
    assert item["status"] == "UNKNOWN"
    assert "cannot load TLS files" in item["message"]
    runs = len(d.stored_results("web"))
    poll(lambda: len(d.stored_results("web")) >= runs + 5, 5, "web results still flushed", d)
    assert d.get("/healthz").status == 200
    assert d.terminate()[0] == 0

    # and a daemon started with it runs too
    again = daemons()
    again.write_config([http("web", target.url()), broken])
    again.start()
    poll(lambda: (again.checks()["broken-tls"].get("last_result") or {}).get("status") == "UNKNOWN", 10, "UNKNOWN",
         again)
    assert again.terminate()[0] == 0
