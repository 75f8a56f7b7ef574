"""Throwaway servers that a test may stop, freeze or break: PostgreSQL, Redis, Prometheus,
and a TCP listener that never answers.

The shared servers (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379) are never
touched here: each fixture starts its own instance on a free port on 127.0.0.1, in its own
temporary directory, and teardown always thaws and stops it, whatever the test did.

``freeze()`` sends SIGSTOP: the server keeps its listening socket, so a client connects (the
kernel completes the handshake) and then waits forever for a reply -- the shape of a hung
server, for timeout tests. ``thaw()`` sends SIGCONT. ``stop()`` makes the port refuse.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.support.processes import pid_alive, stop_process
from tests.support.servers import QuietHandler, ServerThread, free_port, http_server, server_missing
from tests.support.waiting import http_get, wait_until

# --------------------------------------------------------------------------- processes


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc (Linux)."""
    children: list[int] = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..." -- comm may hold spaces or parentheses
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            children.append(int(Path(stat).parent.name))
    return children


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGCONT (in case it is frozen), then ``stop_process``: SIGTERM, SIGKILL after ``timeout``."""
    if process.poll() is None:
        _signal(process.pid, signal.SIGCONT)
    stop_process(process, timeout)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- PostgreSQL

PG_PASSWORD_ROLE = "paramedic"
PG_PASSWORD = "s3cret"


def _postgres_bin() -> Path | None:
    """``/usr/lib/postgresql/<highest version>/bin`` (Debian keeps it off PATH), if any."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    best = max(found, key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()])
    return Path(best).parent


def _as_postgres(argv: list[str]) -> list[str]:
    """``initdb`` and ``postgres`` refuse to run as root: run them as the ``postgres`` user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _workdir(prefix: str, *, for_postgres: bool = False) -> Path:
    """A fresh directory under /tmp for one server, marked with this process as its owner.

    Not under pytest's ``tmp_path``: that lives in a 0700 directory of root's that the
    ``postgres`` user cannot enter. The ``owner`` file lets a later session reap servers
    whose pytest was killed before its teardown could run (``reap_orphaned_servers``).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / "owner").write_text(f"{os.getpid()}\n")
    if for_postgres and os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


def _remove_in_background(path: Path) -> None:
    """Delete ``path`` in a (non-daemon) thread: a PostgreSQL data directory takes 0.5-2 s
    to delete on this disk, time the next test need not wait for. Should the process die
    first, ``reap_orphaned_servers`` removes what is left."""
    threading.Thread(target=shutil.rmtree, args=(path,), kwargs={"ignore_errors": True}, name=f"rm {path.name}").start()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _belongs_to(pid: int, root: Path) -> bool:
    """Whether ``pid`` is a server started in ``root`` (guards against pid reuse)."""
    proc = Path(f"/proc/{pid}")
    try:
        if str(root) in (proc / "cmdline").read_bytes().decode(errors="replace"):
            return True
        return os.readlink(proc / "cwd").startswith(str(root))  # redis chdirs to --dir
    except OSError:
        return False


def reap_orphaned_servers() -> list[Path]:
    """Kill and delete the throwaway servers of test sessions that died without teardown.

    Servers of a pytest process that still runs (another session on this machine) are
    left alone. Returns the directories removed.
    """
    reaped: list[Path] = []
    pattern = os.path.join(tempfile.gettempdir(), "paramedic-[pr]*-*")  # pg, redis, prom
    for root in map(Path, glob.glob(pattern)):
        owner = _read_pid(root / "owner")
        if owner is None or pid_alive(owner):
            continue
        for pidfile in (root / "data" / "postmaster.pid", root / "server.pid"):
            pid = _read_pid(pidfile)
            if pid is not None and pid_alive(pid) and _belongs_to(pid, root):
                for child in _child_pids(pid):  # a frozen server's children are stopped too
                    _signal(child, signal.SIGCONT)
                _signal(pid, signal.SIGCONT)
                _signal(pid, signal.SIGQUIT if pidfile.name == "postmaster.pid" else signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped


@pytest.fixture(scope="session", autouse=True)
def _reap_orphaned_servers() -> None:
    reap_orphaned_servers()


_PG_HBA = f"""\
# generated by tests/support/services.py: trust, except the password role on TCP
local all all trust
host all {PG_PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256
host all {PG_PASSWORD_ROLE} ::1/128 scram-sha-256
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
"""

_PG_CONF = """
# generated by tests/support/services.py: a disposable, fast server
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 40
password_encryption = 'scram-sha-256'
logging_collector = off
"""


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL server on ``host:port``.

    ``postgres`` is a trust-auth superuser; role ``paramedic`` / ``s3cret`` (owner of the
    database ``paramedic``) must give its password over TCP (scram-sha-256).
    """

    bindir: Path
    root: Path
    port: int
    host: str = "127.0.0.1"
    superuser: str = "postgres"
    password_user: str = PG_PASSWORD_ROLE
    password: str = PG_PASSWORD
    _frozen: list[int] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def dsn(
        self,
        user: str = "postgres",
        password: str | None = None,
        dbname: str = "postgres",
        connect_timeout: int = 5,
    ) -> str:
        """A libpq URI for this server (TCP, never the socket)."""
        auth = urllib.parse.quote(user, safe="")
        if password is not None:
            auth += ":" + urllib.parse.quote(password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}?connect_timeout={connect_timeout}"

    @property
    def password_dsn(self) -> str:
        """DSN of the password role, on its own database."""
        return self.dsn(self.password_user, self.password, dbname=self.password_user)

    def pid(self) -> int | None:
        """The postmaster's pid, from ``postmaster.pid`` (None when it is not running)."""
        return _read_pid(self.datadir / "postmaster.pid")

    def _pg_ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args]
        return subprocess.run(_as_postgres(argv), capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        """Start (or restart after ``stop()``) and wait until it accepts connections."""
        result = self._pg_ctl("-l", str(self.logfile), "-w", "-t", "30", "-o", f"-p {self.port}", "start")
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed ({result.returncode}): {result.stderr}\n{_tail(self.logfile)}")

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode``; killed if that fails). Idempotent."""
        self.thaw()
        pid = self.pid()
        if pid is None:
            return
        stopped = self._pg_ctl("-m", mode, "-w", "-t", "20", "stop").returncode == 0
        if not stopped and mode != "immediate":
            self._pg_ctl("-m", "immediate", "-w", "-t", "10", "stop")
        if self.pid() is not None:  # still there: it would hold the port and the files
            for child in _child_pids(pid):
                _signal(child, signal.SIGKILL)
            _signal(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                (self.datadir / "postmaster.pid").unlink()

    def freeze(self) -> None:
        """SIGSTOP the postmaster, then each of its children (backends, checkpointer...).

        New connections complete the TCP handshake and then hang; established sessions hang
        too, since their backends are stopped as well.
        """
        pid = self.pid()
        if pid is None:
            raise RuntimeError("postgres is not running")
        _signal(pid, signal.SIGSTOP)
        self._frozen = [pid]
        for child in _child_pids(pid):
            _signal(child, signal.SIGSTOP)
            self._frozen.append(child)

    def thaw(self) -> None:
        """SIGCONT what ``freeze()`` stopped (children first). Idempotent."""
        for pid in reversed(self._frozen):
            _signal(pid, signal.SIGCONT)
        self._frozen = []

    def cleanup(self) -> None:
        self.stop("immediate")  # no shutdown checkpoint: the files are deleted next
        _remove_in_background(self.root)


def _init_postgres_template(bindir: Path) -> Path:
    """``initdb`` once; every instance starts from a copy (~0.1 s instead of ~1 s)."""
    root = _workdir("paramedic-pg-template-", for_postgres=True)
    datadir = root / "data"
    argv = [
        str(bindir / "initdb"),
        "-D",
        str(datadir),
        "-U",
        "postgres",
        "--auth=trust",
        "--no-sync",
        "--encoding=UTF8",
        "--locale=C",
    ]
    result = subprocess.run(_as_postgres(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")
    (datadir / "pg_hba.conf").write_text(_PG_HBA)
    with (datadir / "postgresql.conf").open("a") as conf:
        conf.write(_PG_CONF)
    return root


def _start_postgres(bindir: Path, template: Path) -> PostgresServer:
    import psycopg  # only the tests that start a server pay for the import

    root = _workdir("paramedic-pg-", for_postgres=True)
    subprocess.run(["cp", "-a", str(template / "data"), str(root / "data")], check=True)
    with (root / "data" / "postgresql.conf").open("a") as conf:
        conf.write(f"unix_socket_directories = '{root}'\n")
    for _attempt in range(3):  # the free port may be taken between the check and the bind
        server = PostgresServer(bindir=bindir, root=root, port=free_port())
        try:
            server.start()
            break
        except RuntimeError:
            if "already in use" not in _tail(server.logfile, 50):
                shutil.rmtree(root, ignore_errors=True)
                raise
    else:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError("no free port for postgres after 3 attempts")
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {PG_PASSWORD_ROLE} LOGIN PASSWORD '{PG_PASSWORD}'")
            conn.execute(f"CREATE DATABASE {PG_PASSWORD_ROLE} OWNER {PG_PASSWORD_ROLE}")
    except BaseException:
        server.cleanup()
        raise
    return server


@pytest.fixture(scope="session")
def _postgres_template() -> Iterator[tuple[Path, Path]]:
    bindir = _postgres_bin()
    if bindir is None:
        server_missing("PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
        raise AssertionError("unreachable")
    root = _init_postgres_template(bindir)
    try:
        yield bindir, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_factory(
    _postgres_template: tuple[Path, Path],
) -> Iterator[Callable[[], PostgresServer]]:
    """Call it to start another throwaway PostgreSQL; all are stopped at teardown."""
    bindir, template = _postgres_template
    started: list[PostgresServer] = []

    def start() -> PostgresServer:
        server = _start_postgres(bindir, template)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.cleanup()


@pytest.fixture
def throwaway_postgres(postgres_factory: Callable[[], PostgresServer]) -> PostgresServer:
    """A throwaway PostgreSQL for this test (see ``PostgresServer``)."""
    return postgres_factory()


# --------------------------------------------------------------------------- Redis


@dataclass
class RedisServer:
    """A throwaway ``redis-server`` on ``host:port`` (nothing kept on disk).

    ``password`` set: ``requirepass`` (the ``default`` user needs it). ``acl_user`` set:
    an extra ACL user ``acl_user`` / ``password`` with every permission.
    """

    root: Path
    port: int
    password: str | None = None
    acl_user: str | None = None
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    _log: Any = None

    @property
    def logfile(self) -> Path:
        return self.root / "redis.log"

    def url(self, username: str | None = None, password: str | None = None, db: int = 0) -> str:
        """``redis://[user[:password]@]host:port/db``; defaults to this server's password."""
        password = self.password if password is None else password
        auth = ""
        if password is not None:
            user = urllib.parse.quote(username or "", safe="")
            auth = f"{user}:{urllib.parse.quote(password, safe='')}@"
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    def argv(self) -> list[str]:
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
        if self.password is not None:
            argv += ["--requirepass", self.password]
            if self.acl_user is not None:
                argv += ["--user", self.acl_user, "on", f">{self.password}", "~*", "&*", "+@all"]
        return argv

    def _ping(self) -> bool | None:
        """True when the server answers (PONG, or NOAUTH: it is up either way)."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {_tail(self.logfile)}")
        with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
        return True if reply.startswith((b"+PONG", b"-NOAUTH")) else None

    def start(self) -> None:
        """Start (or restart after ``stop()``) and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        self._close_log()
        self._log = self.logfile.open("ab")
        self.process = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        (self.root / "server.pid").write_text(f"{self.process.pid}\n")
        wait_until(self._ping, timeout=10, what=f"redis on port {self.port}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 10 s). Idempotent."""
        if self.process is not None:
            _stop_process(self.process)
        self._close_log()

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, commands never answered."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("redis is not running")
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT. Idempotent."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


RedisFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_factory() -> Iterator[RedisFactory]:
    """``redis_factory(password=None, acl_user=None)`` starts another throwaway Redis."""
    if shutil.which("redis-server") is None:
        server_missing("redis-server")
    started: list[RedisServer] = []

    def start(password: str | None = None, acl_user: str | None = None) -> RedisServer:
        if acl_user is not None and password is None:
            raise ValueError("an ACL user needs a password")
        root = _workdir("paramedic-redis-")
        last: Exception | None = None
        for _attempt in range(3):  # the free port may be taken between check and bind
            server = RedisServer(root, free_port(), password=password, acl_user=acl_user)
            started.append(server)
            try:
                server.start()
            except (RuntimeError, TimeoutError) as error:
                server.stop()
                last = error
                continue
            return server
        raise RuntimeError(f"could not start redis-server: {last}")

    try:
        yield start
    finally:
        for server in started:
            server.cleanup()


@pytest.fixture
def throwaway_redis(redis_factory: RedisFactory) -> RedisServer:
    """A throwaway Redis without a password (see ``RedisServer``)."""
    return redis_factory()


# --------------------------------------------------------------------------- Prometheus


class MetricsExporter:
    """A tiny exporter: ``GET /metrics`` serves whatever text ``set_metrics`` last set."""

    def __init__(self, text: str = "") -> None:
        self._text = text
        self._lock = threading.Lock()
        self.scrapes = 0
        exporter = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter._scrape().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._serving = ServerThread(http_server(Handler), poll_interval=0.1)
        self.port: int = self._serving.server.server_address[1]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_metrics(self, text: str) -> None:
        """Replace the exposition text (Prometheus text format; a trailing newline is added)."""
        with self._lock:
            self._text = text if text.endswith("\n") or not text else text + "\n"

    def _scrape(self) -> str:
        with self._lock:
            self.scrapes += 1
            return self._text

    def close(self) -> None:
        self._serving.close()


@dataclass
class PrometheusServer:
    """A throwaway Prometheus at ``url`` scraping ``exporter`` (job ``exporter``) every 1 s."""

    url: str
    exporter: MetricsExporter
    process: subprocess.Popen[bytes]
    root: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's ``data.result`` (a list of ``{"metric", "value"}``)."""
        reply = http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        payload = json.loads(reply.body)
        if payload.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {payload}")
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 15.0,
    ) -> list[dict[str, Any]]:
        """Poll ``promql`` until ``predicate(result)`` holds (default: non-empty); return it."""
        last: list[dict[str, Any]] = []

        def attempt() -> list[dict[str, Any]] | None:
            nonlocal last
            last = self.query(promql)
            return last if predicate(last) else None

        try:
            return wait_until(attempt, timeout=timeout, interval=0.2, what=promql)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; last result {last!r}") from None

    def value(self, promql: str) -> float | None:
        """The value of a single-sample query, or None when it has no result."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def reset(self, timeout: float = 15.0) -> None:
        """Empty the exporter, then wait until its target is up and no old series remain."""
        self.exporter.set_metrics("")
        self.wait_for('up{job="exporter"} == 1', timeout=timeout)
        self.wait_for('{job="exporter", __name__!~"up|scrape_.+"}', lambda result: not result, timeout)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Stop Prometheus (SIGTERM, SIGKILL after 10 s); the exporter keeps serving."""
        _stop_process(self.process)

    def freeze(self) -> None:
        """SIGSTOP: its HTTP API accepts connections and never answers (``throwaway_prometheus``
        only: the shared ``prometheus_server`` must stay usable)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT. Idempotent."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        if self.process.poll() is None:  # its data is deleted next: no graceful shutdown
            self.process.kill()
            self.process.wait(timeout=10)
        self.exporter.close()
        shutil.rmtree(self.root, ignore_errors=True)


_PROMETHEUS_YML = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ["{target}"]
"""


def _start_prometheus(binary: str, exporter: MetricsExporter) -> PrometheusServer:
    root = _workdir("paramedic-prom-")
    config = root / "prometheus.yml"
    config.write_text(_PROMETHEUS_YML.format(target=exporter.target))
    log_path = root / "prometheus.log"
    for _attempt in range(3):
        port = free_port()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        (root / "server.pid").write_text(f"{process.pid}\n")
        server = PrometheusServer(f"http://127.0.0.1:{port}", exporter, process, root)

        def ready(process: subprocess.Popen[bytes] = process, url: str = server.url) -> bool | None:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {_tail(log_path)}")
            return True if http_get(f"{url}/-/ready", timeout=1.0).status == 200 else None

        try:
            wait_until(ready, timeout=30, what="prometheus /-/ready")
        except RuntimeError:
            process.wait()
            if "address already in use" in _tail(log_path, 50):
                continue
            shutil.rmtree(root, ignore_errors=True)
            raise
        except BaseException:
            _stop_process(process)
            shutil.rmtree(root, ignore_errors=True)
            raise
        return server
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError("no free port for prometheus after 3 attempts")


def _prometheus_started() -> PrometheusServer:
    """A new Prometheus whose exporter target is up (5-6 s: Prometheus applies discovered
    targets on a fixed 5 s tick that 2.42 cannot shorten)."""
    binary = shutil.which("prometheus")
    if binary is None:
        server_missing("Prometheus")
        raise AssertionError("unreachable")
    exporter = MetricsExporter()
    try:
        server = _start_prometheus(binary, exporter)
    except BaseException:
        exporter.close()
        raise
    try:
        server.wait_for('up{job="exporter"} == 1', timeout=30)
    except BaseException:
        server.cleanup()
        raise
    return server


@pytest.fixture(scope="session")
def _shared_prometheus() -> Iterator[PrometheusServer]:
    server = _prometheus_started()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def prometheus_server(_shared_prometheus: PrometheusServer) -> PrometheusServer:
    """A Prometheus (shared by the session) whose exporter serves nothing yet, target up.

    Set what it scrapes with ``prometheus_server.exporter.set_metrics("name 1\\n")`` and
    wait for it with ``prometheus_server.wait_for("name", lambda result: ...)``.

    Starting Prometheus costs 5-6 s, so one instance serves every test; before each test the
    exporter is emptied and the series of the previous test are stale (instant queries no
    longer see them). Their samples remain in the history, though: a test that uses range
    queries (``rate(x[1m])``) should use metric names no other test uses. A test that stops
    or breaks Prometheus itself takes ``throwaway_prometheus`` instead.
    """
    _shared_prometheus.reset()
    return _shared_prometheus


@pytest.fixture
def throwaway_prometheus() -> Iterator[PrometheusServer]:
    """A Prometheus of this test's own (5-6 s to start), stopped at teardown."""
    server = _prometheus_started()
    try:
        yield server
    finally:
        server.cleanup()


# --------------------------------------------------------------------------- hanging listener


class HangingListener:
    """A TCP listener on 127.0.0.1 (``port``) that accepts connections and never replies.

    For timeout tests: connecting succeeds, reading blocks forever. Each accepted connection
    is held open (never read from nor written to) in ``accepted``, so a test can count the
    connections a client made. ``close()`` stops accepting and closes all of them.
    """

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, daemon=True)
        self._thread.start()

    def _accept_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def hanging_listener() -> Iterator[int]:
    """The port of a ``HangingListener`` (accepts, never replies); closed at teardown."""
    listener = HangingListener()
    try:
        yield listener.port
    finally:
        listener.close()
