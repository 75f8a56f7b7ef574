"""End to end: the installed ``paramedic`` command, run as a subprocess against real servers.

The HTTP targets are real local servers (the ones the HTTP integration tests use); the
command is the console script pip installed, so entry point, imports, exit codes and
output are exactly what a cron job would see.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_probe_http import TestServer, serving
from tests.support.installed import PARAMEDIC, installed
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

UNIT_FIXTURES = Path(__file__).parents[1] / "unit" / "fixtures" / "config"
EXIT_CODES = "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN"




def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "PARAMEDIC_CONFIG"} | (env or {})
    return subprocess.run(
        [PARAMEDIC, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def write_config(directory: Path, checks: list[dict[str, Any]], name: str = "paramedic.yaml", **top: Any) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump({**top, "checks": checks}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def server() -> Iterator[TestServer]:
    with serving() as srv:
        yield srv


def http(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "http", "url": url, "timeout": "3s", **extra}


# ---------------------------------------------------------------- validate


def test_validate_ok(tmp_path: Path, server: TestServer) -> None:
    cfg = write_config(
        tmp_path,
        [http("app", server.url("/ok")), {"name": "db", "type": "tcp", "host": "127.0.0.1", "port": 5432}],
        runbooks=[{"name": "restart-app", "match": {"checks": ["app"]}, "steps": [{"action": "restart"}]}],
    )
    proc = run("validate", "-c", str(cfg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "config OK: 2 checks, 1 runbooks"
    assert proc.stderr == ""


def test_validate_invalid_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    cfg = UNIT_FIXTURES / "many_problems.yaml"
    proc = run("validate", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"config {cfg} is invalid (")
    for expected in (
        "  bogus: unknown key",
        "  defaults.timeout: input should be a valid duration like 500ms, 10s, 5m, 1h (got 'soon')",
        "  checks[0].url: must be an http:// or https:// URL with a host",
        "  checks[1].colour: unknown key",
        "  checks[3].name: duplicate name 'app-health' (also checks[0])",
    ):
        assert expected in lines
    assert "Traceback" not in proc.stderr


def test_validate_bad_duration_path(tmp_path: Path) -> None:
    proc = run("validate", "-c", str(UNIT_FIXTURES / "bad_duration.yaml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "  checks[2].timeout: input should be a valid duration" in proc.stderr


def test_validate_missing_config_file_exits_2(tmp_path: Path) -> None:
    proc = run("validate", "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


# ------------------------------------------- check and audit: a config or usage problem is 3 (UNKNOWN)
# Cron and Nagios wrappers read these codes: 2 would page people as CRITICAL for a typo.


@pytest.mark.parametrize("command", ["check", "audit"])
def test_missing_config_file_exits_3(tmp_path: Path, command: str) -> None:
    proc = run(command, "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("command", ["check", "audit"])
def test_default_config_missing_exits_3(tmp_path: Path, command: str) -> None:
    proc = run(command, cwd=tmp_path)  # no --config, no $PARAMEDIC_CONFIG, no ./config.yaml
    assert proc.returncode == 3, proc.stderr
    assert "config.yaml does not exist" in proc.stderr


@pytest.mark.parametrize("command", ["check", "audit"])
def test_invalid_config_exits_3(tmp_path: Path, command: str) -> None:
    proc = run(command, "-c", str(UNIT_FIXTURES / "unknown_check_key.yaml"), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "  checks[0].retry: unknown key" in proc.stderr.splitlines()
    assert proc.stdout == ""


@pytest.mark.parametrize("command", ["check", "audit"])
@pytest.mark.parametrize("args", [("--output", "xml"), ("--bogus",), ("--output",), ("-c",), ("stray-argument",)])
def test_bad_usage_exits_3(tmp_path: Path, command: str, args: tuple[str, ...]) -> None:
    proc = run(command, *args, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "Error: " in proc.stderr  # click's message, as before
    assert "Traceback" not in proc.stderr


def test_audit_has_no_only_option_exits_3(tmp_path: Path) -> None:
    proc = run("audit", "--only", "app", cwd=tmp_path)
    assert proc.returncode == 3
    assert "No such option" in proc.stderr
    assert "--only" in proc.stderr


def test_remediate_without_store_exits_3_before_probing(tmp_path: Path, server: TestServer) -> None:
    cfg = write_config(tmp_path, [http("app", server.url("/ok"))])
    seen_before = len(server.seen)
    proc = run("check", "-c", str(cfg), "--remediate", "--no-store", cwd=tmp_path)
    assert proc.returncode == 3
    assert "--remediate needs the store" in proc.stderr
    assert len(server.seen) == seen_before  # refused before any probe ran


@pytest.mark.parametrize("args", [("validate", "--bogus"), ("validate", "-c"), ("run", "--log-format", "xml"),
                                  ("history", "--limit", "many")])
def test_other_commands_keep_exit_2_for_bad_usage(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr


# ---------------------------------------------------------------- check: exit codes


def _cases(server: TestServer) -> dict[str, dict[str, Any]]:
    warn = {"expr": 'body contains "version 2"', "severity": "warning"}
    return {
        "ok": http("ok", server.url("/ok"), conditions=["status_code == 200"]),
        "warning": http("warning", server.url("/ok"), conditions=["status_code == 200", warn]),
        "error500": http("error500", server.url("/status/500"), conditions=["status_code == 200"]),
        "refused": http("refused", f"http://127.0.0.1:{free_port()}/health"),
        "dns": http("dns", "http://paramedic-e2e.invalid/health"),
    }


@pytest.mark.parametrize(
    ("names", "code"),
    [
        (["ok"], 0),
        (["warning"], 1),
        (["error500"], 2),
        (["refused"], 2),
        (["dns"], 3),
        (["ok", "warning"], 1),
        (["ok", "error500"], 2),
        (["warning", "dns"], 3),
        (["dns", "refused"], 2),  # a known outage outranks a check that could not tell
        (["ok", "warning", "error500", "refused", "dns"], 2),
    ],
)
def test_check_exit_code_is_the_worst_status(tmp_path: Path, server: TestServer, names: list[str],
                                             code: int) -> None:
    cases = _cases(server)
    cfg = write_config(tmp_path, [cases[n] for n in names])
    proc = run("check", "-c", str(cfg), cwd=tmp_path)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_table_is_readable(tmp_path: Path, server: TestServer) -> None:
    cases = _cases(server)
    cfg = write_config(tmp_path, [cases["ok"], cases["error500"], cases["refused"], cases["dns"]])
    proc = run("check", "-c", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "TYPE", "STATUS", "LATENCY"]
    rows = {line.split()[0]: line for line in lines[1:5]}
    assert rows["ok"].split()[1:3] == ["http", "OK"]
    assert server.url("/ok") in rows["ok"]
    assert rows["error500"].split()[2] == "CRITICAL"
    assert "status_code == 200 failed (actual: 500)" in rows["error500"]
    refused_port = cases["refused"]["url"].split(":")[2].split("/")[0]
    assert f"connection refused by 127.0.0.1:{refused_port}" in rows["refused"]
    assert rows["dns"].split()[2] == "UNKNOWN"
    assert "cannot resolve host 'paramedic-e2e.invalid'" in rows["dns"]
    assert lines[-1] == "4 checks: 1 OK, 1 UNKNOWN, 2 CRITICAL"
    assert "\x1b[" not in proc.stdout  # no colour codes when stdout is not a terminal


def test_check_json_shape(tmp_path: Path, server: TestServer) -> None:
    cases = _cases(server)
    cfg = write_config(tmp_path, [cases["ok"], cases["warning"], cases["error500"], cases["refused"]])
    proc = run("check", "-c", str(cfg), "--output", "json", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"results", "status"}
    assert doc["status"] == "CRITICAL"
    results = {r["name"]: r for r in doc["results"]}
    assert [r["name"] for r in doc["results"]] == ["ok", "warning", "error500", "refused"]
    for r in doc["results"]:
        assert {"name", "type", "status", "message", "duration_ms", "observations", "conditions"} <= set(r)
        assert r["type"] == "http"
        assert r["status"] in {"OK", "WARNING", "CRITICAL", "UNKNOWN"}
        assert isinstance(r["message"], str)
        assert isinstance(r["duration_ms"], int | float)
        assert r["duration_ms"] >= 0
        assert isinstance(r["observations"], dict)
        for cond in r["conditions"]:
            assert {"expr", "ok", "actual"} <= set(cond)
            assert isinstance(cond["ok"], bool)

    ok = results["ok"]
    assert ok["status"] == "OK"
    assert ok["observations"]["status_code"] == 200
    assert ok["conditions"] == [{"expr": "status_code == 200", "ok": True, "actual": 200, "severity": "critical"}]

    warning = results["warning"]
    assert warning["status"] == "WARNING"
    assert [(c["expr"], c["ok"]) for c in warning["conditions"]] == [
        ("status_code == 200", True),
        ('body contains "version 2"', False),
    ]
    assert warning["conditions"][1]["actual"] == "all healthy\n"

    error = results["error500"]
    assert error["status"] == "CRITICAL"
    assert error["message"] == "status_code == 200 failed (actual: 500)"
    assert error["conditions"] == [{"expr": "status_code == 200", "ok": False, "actual": 500, "severity": "critical"}]

    refused = results["refused"]
    assert refused["status"] == "CRITICAL"
    assert refused["message"].startswith("connection refused by 127.0.0.1:")
    assert refused["observations"] == {}
    assert refused["conditions"] == []


def test_json_status_is_ok_when_everything_passes(tmp_path: Path, server: TestServer) -> None:
    cfg = write_config(tmp_path, [_cases(server)["ok"]])
    proc = run("check", "-c", str(cfg), "-o", "json", cwd=tmp_path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["status"] == "OK"


# ---------------------------------------------------------------- check --output nagios

NAGIOS_PERF = re.compile(r"^[A-Za-z0-9_.:-]+=\d+(?:\.\d+)?(?:s|%|B)?;;;$")


def test_check_nagios_output(tmp_path: Path, server: TestServer) -> None:
    cases = _cases(server)
    cfg = write_config(tmp_path, [cases["ok"], cases["warning"], cases["error500"], cases["refused"]])
    proc = run("check", "-c", str(cfg), "--output", "nagios", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr  # the worst status, as with the table
    first, *long_text = proc.stdout.splitlines()
    text, perf = first.split(" | ")
    assert text.startswith("PARAMEDIC CRITICAL - 3 of 4 checks failing: "
                           "error500 (status_code == 200 failed (actual: 500)), refused (connection refused by ")
    assert text.endswith('), warning (body contains "version 2" failed (actual: \'all healthy\\n\'))')
    items = perf.split(" ")
    assert [i.split("=")[0] for i in items if "_latency=" in i] == [
        "ok_latency", "warning_latency", "error500_latency", "refused_latency"]
    assert "ok_body_bytes=12B;;;" in items
    for item in items:
        assert NAGIOS_PERF.match(item), item
    assert long_text[0] == "CRITICAL error500: status_code == 200 failed (actual: 500)"
    assert long_text[1].startswith("CRITICAL refused: connection refused by 127.0.0.1:")
    assert long_text[2].startswith("WARNING warning: ")
    assert len(long_text) == 3


def test_check_nagios_output_all_ok(tmp_path: Path, server: TestServer) -> None:
    cfg = write_config(tmp_path, [_cases(server)["ok"]])
    proc = run("check", "-c", str(cfg), "-o", "nagios", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"PARAMEDIC OK - 1 of 1 check OK \| ok_latency=[\d.]+s;;; ok_body_bytes=12B;;;\n",
                        proc.stdout), proc.stdout


def test_check_nagios_output_for_a_config_or_usage_problem(tmp_path: Path, tagged: Path) -> None:
    """Nagios shows only stdout: a problem that is not a check's verdict still says UNKNOWN there."""
    proc = run("check", "-c", str(UNIT_FIXTURES / "unknown_check_key.yaml"), "-o", "nagios", cwd=tmp_path)
    assert proc.returncode == 3
    assert proc.stdout.startswith("PARAMEDIC UNKNOWN - config ")
    assert "checks[0].retry: unknown key" in proc.stdout
    assert len(proc.stdout.splitlines()) == 1
    proc = run("check", "-c", str(tagged), "-o", "nagios", "--only", "ghost", cwd=tmp_path)
    assert proc.returncode == 3
    assert proc.stdout == f"PARAMEDIC UNKNOWN - no check named 'ghost' in {tagged}\n"


# ---------------------------------------------------------------- selection


@pytest.fixture
def tagged(tmp_path: Path, server: TestServer) -> Path:
    return write_config(
        tmp_path,
        [
            http("app", server.url("/ok"), tags=["app", "web"]),
            http("api", server.url("/status/500"), tags=["app"]),
            http("docs", server.url("/ok"), tags=["web"]),
            http("dns", "http://paramedic-e2e.invalid/"),
        ],
    )


def _names(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [r["name"] for r in json.loads(proc.stdout)["results"]]


def test_only_selects_by_name(tagged: Path, tmp_path: Path) -> None:
    proc = run("check", "-c", str(tagged), "-o", "json", "--only", "docs", "--only", "app", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _names(proc) == ["app", "docs"]


def test_tag_selects_by_tag(tagged: Path, tmp_path: Path) -> None:
    proc = run("check", "-c", str(tagged), "-o", "json", "--tag", "app", cwd=tmp_path)
    assert proc.returncode == 2
    assert _names(proc) == ["app", "api"]
    proc = run("check", "-c", str(tagged), "-o", "json", "--tag", "web", cwd=tmp_path)
    assert proc.returncode == 0
    assert _names(proc) == ["app", "docs"]


def test_only_and_tag_combine(tagged: Path, tmp_path: Path) -> None:
    proc = run("check", "-c", str(tagged), "-o", "json", "--only", "api", "--only", "docs", "--tag", "web",
               cwd=tmp_path)
    assert proc.returncode == 0
    assert _names(proc) == ["docs"]


def test_only_unknown_name_exits_3(tagged: Path, tmp_path: Path) -> None:
    proc = run("check", "-c", str(tagged), "--only", "app", "--only", "ghost", cwd=tmp_path)
    assert proc.returncode == 3
    assert "no check named 'ghost'" in proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------- config resolution and help


def test_paramedic_config_env_is_used(tmp_path: Path, server: TestServer) -> None:
    cfg = write_config(tmp_path, [http("from-env", server.url("/ok"))], name="elsewhere.yaml")
    workdir = tmp_path / "empty"
    workdir.mkdir()
    proc = run("check", "-o", "json", cwd=workdir, env={"PARAMEDIC_CONFIG": str(cfg)})
    assert proc.returncode == 0, proc.stderr
    assert _names(proc) == ["from-env"]


def test_explicit_config_beats_env_and_cwd_default(tmp_path: Path, server: TestServer) -> None:
    env_cfg = write_config(tmp_path, [http("from-env", server.url("/ok"))], name="env.yaml")
    explicit = write_config(tmp_path, [http("explicit", server.url("/ok"))], name="explicit.yaml")
    write_config(tmp_path, [http("from-cwd", server.url("/ok"))], name="config.yaml")
    proc = run("check", "-o", "json", "-c", str(explicit), cwd=tmp_path, env={"PARAMEDIC_CONFIG": str(env_cfg)})
    assert _names(proc) == ["explicit"]
    proc = run("check", "-o", "json", cwd=tmp_path, env={"PARAMEDIC_CONFIG": str(env_cfg)})
    assert _names(proc) == ["from-env"]
    proc = run("check", "-o", "json", cwd=tmp_path)
    assert _names(proc) == ["from-cwd"]


@pytest.mark.parametrize("args", [("--help",), ("check", "--help"), ("audit", "--help")])
def test_help_mentions_exit_codes(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert EXIT_CODES in text
    assert "--config" in text or "validate" in text


# ---------------------------------------------------------------- secrets never leak

CANARY = "CANARY-7f3a9"


def _canary_checks(server: TestServer, refused_port: int) -> list[dict[str, Any]]:
    headers = {"Authorization": "Bearer ${API_TOKEN}", "X-Api-Key": f"{CANARY}-apikey"}
    query = f"token={CANARY}-query%2Bplus&page=1"  # percent-encoded on the wire
    return [
        # the live server echoes the request line and every header back in its body
        http("echo", f"http://ops:{CANARY}-urlpass@127.0.0.1:{server.port}/echo?{query}", headers=headers,
             conditions=['body contains "no such text"', "json.headers.authorization == 1", "status_code == 200"]),
        http("echo-ok", f"http://ops:{CANARY}-urlpass@127.0.0.1:{server.port}/echo?{query}", headers=headers),
        http("refused", f"http://ops:{CANARY}-urlpass@127.0.0.1:{refused_port}/health?{query}", headers=headers),
        http("redirected", server.url(f"/to?url=/echo?{query}"), headers=headers),
        {"name": "db", "type": "tcp", "host": "127.0.0.1", "port": refused_port,
         "description": f"postgresql://app:{CANARY}-dsn@127.0.0.1/app"},
    ]


@pytest.mark.parametrize("output", ["table", "json", "nagios"])
def test_canary_secrets_never_appear_in_output(tmp_path: Path, server: TestServer, output: str) -> None:
    refused_port = free_port()
    cfg = write_config(tmp_path, _canary_checks(server, refused_port))
    env = {"API_TOKEN": f"{CANARY}-bearer"}
    seen_before = len(server.seen)
    proc = run("check", "-c", str(cfg), "--output", output, cwd=tmp_path, env=env)
    everything = proc.stdout + proc.stderr
    # the probes really ran and the secrets really went out and came back
    assert proc.returncode == 2, everything
    echoed = [s for s in server.seen[seen_before:] if s.path.startswith("/echo")]
    assert len(echoed) == 3
    assert all(s.headers["authorization"] == f"Bearer {CANARY}-bearer" for s in echoed)
    assert all(f"token={CANARY}-query" in s.path for s in echoed)
    assert "connection refused by 127.0.0.1" in everything
    assert "***" in everything
    # ... and none of it is printed
    assert CANARY not in everything
    if output == "json":
        assert CANARY not in json.dumps(json.loads(proc.stdout), ensure_ascii=False)
    # nor recorded in the state store next to the config
    for stored in tmp_path.glob("*.db*"):
        assert CANARY.encode() not in stored.read_bytes(), stored


def test_canary_secrets_never_appear_in_validate_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        checks:
          - name: app
            type: http
            url: http://ops:{CANARY}@127.0.0.1:1/x?token={CANARY}
            headers: {{Authorization: "Bearer {CANARY}"}}
            timeout: forever
        """))
    proc = run("validate", "-c", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert "checks[0].timeout" in proc.stderr
    assert CANARY not in proc.stdout + proc.stderr


# ---------------------------------------------------------------- lazy imports

WRAPPER = """\
import json, os, sys
from agent.cli.main import main
sys.argv = ["paramedic", *sys.argv[1:]]
try:
    main()
finally:
    with open(os.environ["MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)
"""
HEAVY = ("docker", "psycopg", "psycopg_binary", "redis", "prometheus_api_client", "tenacity", "httpx",
         "aiohttp", "requests", "pandas", "numpy")


def test_check_of_http_probes_imports_no_heavy_sdk(tmp_path: Path, server: TestServer) -> None:
    cfg = write_config(tmp_path, [http("a", server.url("/ok")), http("b", server.url("/json"))])
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [str(installed().python), str(wrapper), "check", "-c", str(cfg)],
        cwd=tmp_path, env=os.environ | {"MODULES_OUT": str(out)}, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    modules = set(json.loads(out.read_text()))
    assert {"agent.cli.main", "checks.http", "h11"} <= modules  # the probes did run
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert loaded == []
    # incidents and notifications are for `check --remediate` (and the daemon) only
    layers = sorted(m for m in modules if m in ("agent.runtime.incidents", "agent.app.incident_wiring",
                                                "agent.runtime.evidence", "agent.runtime.outbox",
                                                "agent.cli.remedy") or m.startswith("agent.notify"))
    assert layers == []


def test_run_on_a_busy_server_port_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path, [], server={"listen": f"127.0.0.1:{port}"})
        proc = run("run", "-c", str(cfg), cwd=tmp_path, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert f"server.listen: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
