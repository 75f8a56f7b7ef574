"""Daemon throughput: ``paramedic run`` vs Prometheus's blackbox_exporter, 1,000 HTTP probes/s.

Run it from the repository root (as root, or with sudo, if nginx, the exporter or
Prometheus is missing: it installs them with ``apt-get install -y``)::

    .venv/bin/python bench/daemon_throughput.py                # the figures: ~4 minutes
    .venv/bin/python bench/daemon_throughput.py --window 10 --only paramedic --loop asyncio   # to iterate

It prints figures and never asserts: timing is the machine's business, not CI's. Options:
``--checks`` (1000), ``--warmup`` (5 s), ``--window`` (30 s), ``--only paramedic|blackbox``,
``--loop both|asyncio|uvloop``, ``--blackbox-checks``, ``--hold`` (keep paramedic running
after the window, to attach ``py-spy``), ``--keep`` (keep the temp dir: configs, logs, store).

Everything runs against one local nginx (``return 200`` on ``/health``, its own config
in a temp dir, ``worker_processes 2``) on a free 127.0.0.1 port, one side after the other
(not at once: on two cores each would steal the other's CPU):

1. **paramedic**, once on plain asyncio and once on uvloop (the ``[fast]`` extra; skipped
   when not installed in .venv; for the asyncio run the bench hides uvloop from the
   process): a config of ``--checks`` HTTP checks (distinct names, the same URL with
   ``?i=N``), interval 1 s, timeout 1 s, ``status_code == 200``, scheduler jitter 1 s,
   the SQLite store in the temp dir, ``server.listen`` on a free port, run as
   ``python -c 'from agent.cli.main import main; main()' run -c CFG``: the whole pipeline
   (conditions, state, store, metrics). After the warm-up it measures over the window:
   CPU seconds of the process (utime+stime from ``/proc/PID/stat``, all threads; the
   kernel's share shown apart), max RSS (``VmRSS`` sampled twice a second), probes
   done = results in the store that started within the window (the end of the pipeline;
   vs checks x window, that says whether every run happened; the
   ``paramedic_probes_total`` delta between the two scrapes is printed as a
   cross-check), skipped runs (``paramedic_scheduler_skipped_runs_total`` delta), and
   scheduling lag p50/p99 from the ``paramedic_scheduler_lag_seconds`` bucket deltas
   (the bucket upper bound holding the quantile, and a linear estimate inside it). The
   two scrapes of ``/metrics`` (~0.2 s of CPU each with 1,000 checks) are part of what
   is measured, as Prometheus's would be.
2. **blackbox_exporter**: Debian's ``prometheus-blackbox-exporter`` with module ``http_2xx``
   (prober http, timeout 1 s) driven by a Prometheus server (temp storage, free port)
   scraping the same URLs through it (the standard relabelling: ``__param_target``,
   ``__address__`` -> exporter) every 1 s with a 1 s scrape timeout. Same warm-up and
   window; CPU and RSS of the exporter and, apart, of Prometheus; probes done =
   ``sum(count_over_time(probe_success[WINDOW]))`` at the window's end (a scrape that
   timed out leaves no sample). When the exporter cannot keep up (under 95% of the
   probes: on two cores it cannot do 1,000/s next to Prometheus and nginx, and then its
   scrapes time out and it burns CPU on them), the bench measures it again with half
   the targets, and so on: CPU per probe is compared at the highest rate it kept up with.

The summary prints CPU-seconds per 1,000 probes for each, the ratio paramedic / exporter
(and / exporter+Prometheus), how busy the rest of the machine was (a loaded machine
shows up as lag), and the issue's targets: no skipped runs, p99 lag < 100 ms, RSS < 100
MiB, CPU per 1,000 probes <= blackbox_exporter's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` (every thread), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of proc(5)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (from /proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # guest time is already inside user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        body: bytes = response.read()
        return body


def wait_until(
    what: str, probe: Callable[[], bool], deadline: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if probe():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {deadline}s ({last})")


@contextlib.contextmanager
def running(argv: list[str], log: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` (output to ``log``), and stop it (TERM, then KILL) on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    print(f"  {name} ignored SIGTERM for 15 s; killing it", file=sys.stderr)
                    proc.kill()
                    proc.wait()


def ensure_packages() -> None:
    need = {"nginx": "nginx", "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
            "prometheus": "prometheus"}
    missing = [pkg for cmd, pkg in need.items() if shutil.which(cmd) is None and not Path(f"/usr/sbin/{cmd}").exists()]
    if not missing:
        return
    print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    # policy-rc.d keeps package scripts from starting system-wide services on their own.
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if os.geteuid() == 0 and not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    try:
        if subprocess.run([*sudo, "apt-get", "install", "-y", "-q", *missing], env=env).returncode != 0:
            subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, check=True)
            subprocess.run([*sudo, "apt-get", "install", "-y", "-q", *missing], env=env, check=True)
    finally:
        if made_policy:
            policy.unlink()


# --------------------------------------------------------------------------- measuring


@dataclass
class Window:
    """CPU and RSS of some processes over the measured window."""

    pids: dict[str, int]
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    system: dict[str, float] = field(default_factory=dict)  # the kernel's share of cpu
    rss_max: dict[str, int] = field(default_factory=dict)
    others: float = 0.0  # cores kept busy by everything else on the machine, on average
    wall: tuple[float, float] = (0.0, 0.0)  # time.time() at the start and the end

    def measure(self, duration: float, on_start: Callable[[], None] | None = None) -> None:
        start = {k: cpu_times(p) for k, p in self.pids.items()}
        busy0, _ = machine_busy()
        t0, wall0 = time.monotonic(), time.time()
        if on_start is not None:
            on_start()
        self.rss_max = {k: rss_bytes(p) for k, p in self.pids.items()}
        while (left := t0 + duration - time.monotonic()) > 0:
            time.sleep(min(0.5, left))
            for k, p in self.pids.items():
                self.rss_max[k] = max(self.rss_max[k], rss_bytes(p))
        self.seconds = time.monotonic() - t0
        self.wall = (wall0, wall0 + self.seconds)
        end = {k: cpu_times(p) for k, p in self.pids.items()}
        busy1, _ = machine_busy()
        self.cpu = {k: sum(end[k]) - sum(start[k]) for k in self.pids}
        self.system = {k: end[k][1] - start[k][1] for k in self.pids}
        self.others = (busy1 - busy0 - sum(self.cpu.values())) / self.seconds


Metrics = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Metrics:
    """``/metrics`` as {sample name: [(labels, value)]}."""
    out: Metrics = {}
    for family in text_string_to_metric_families(http_get(url, timeout=60).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def total(metrics: Metrics, name: str, **match: str) -> float:
    return sum(v for labels, v in metrics.get(name, []) if all(labels.get(k) == x for k, x in match.items()))


def buckets(metrics: Metrics, name: str) -> dict[float, float]:
    return {float(labels["le"]): v for labels, v in metrics.get(f"{name}_bucket", [])}


def quantile_bucket(delta: dict[float, float], q: float) -> tuple[float, float]:
    """(upper bound of the bucket holding quantile ``q``, linear estimate inside it)."""
    bounds = sorted(delta)
    count = delta[bounds[-1]] if bounds else 0.0
    if count <= 0:
        return float("nan"), float("nan")
    rank = q * count
    lower, below = 0.0, 0.0
    for le in bounds:
        if delta[le] >= rank:
            if le == float("inf"):
                return le, lower
            inside = delta[le] - below
            return le, lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, delta[le]
    return float("inf"), lower


def stored_runs(db: Path, start: float, end: float) -> tuple[int, int]:
    """(runs, OK runs) in the store that started within [start, end) (wall clock)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute("SELECT count(*), coalesce(sum(status = 0), 0) FROM results"
                          " WHERE started_at >= ? AND started_at < ?", (start, end)).fetchone()
        return int(row[0]), int(row[1])
    finally:
        con.close()


# --------------------------------------------------------------------------- nginx


NGINX_CONF = """\
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /health {{ default_type text/plain; return 200 "ok\\n"; }}
        location / {{ return 404; }}
    }}
}}
"""


def start_nginx(tmp: Path, workers: int, stack: contextlib.ExitStack) -> str:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, workers=workers))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = stack.enter_context(running(
        [nginx, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(conf), "-g", "daemon off;"],
        tmp / "nginx.out", "nginx"))
    base = f"http://127.0.0.1:{port}/health"
    wait_until("nginx", lambda: http_get(base) == b"ok\n", 10, proc)
    return base


# --------------------------------------------------------------------------- paramedic


@dataclass
class Figures:
    """What one side did over the window: its probes and its processes' CPU and memory."""

    window: Window
    probes: float
    ok: float
    expected: float
    checks: int = 0  # checks / targets, i.e. the intended probes per second
    # paramedic only (its probes are the runs that started in the window, from the store)
    counted: float = 0.0  # runs that ended between the two /metrics scrapes
    skipped: float = 0.0
    lag_p50: tuple[float, float] = (float("nan"), float("nan"))
    lag_p99: tuple[float, float] = (float("nan"), float("nan"))
    lag_count: float = 0.0
    lag_max_bucket: float = float("nan")

    @property
    def kept_up(self) -> bool:
        """Did at least 95% of the intended probes happen?"""
        return self.probes >= 0.95 * self.expected

    def per_k(self, *names: str) -> float:
        """CPU-seconds per 1,000 probes of the named processes together."""
        cpu = sum(self.window.cpu[n] for n in names)
        return cpu / self.probes * 1000 if self.probes else float("nan")


def paramedic_config(url: str, n: int, port: int, tmp: Path) -> str:
    lines = [
        "store:", f"  path: {tmp / 'paramedic.db'}",
        "server:", f"  listen: \"127.0.0.1:{port}\"",
        "scheduler:", "  jitter: 1s",
        "checks:",
    ]
    for i in range(n):
        lines += [
            f"  - name: web-{i:04d}", "    type: http", f"    url: \"{url}?i={i}\"",
            "    interval: 1s", "    timeout: 1s", "    conditions: [\"status_code == 200\"]",
        ]
    return "\n".join(lines) + "\n"


def bench_paramedic(url: str, args: argparse.Namespace, tmp: Path, loop: str) -> Figures:
    """One paramedic run; ``loop`` "asyncio" hides uvloop from it (as if not installed)."""
    run_dir = tmp / f"paramedic-{loop}"
    run_dir.mkdir()
    port = free_port()
    cfg = run_dir / "paramedic.yaml"
    cfg.write_text(paramedic_config(url, args.checks, port, run_dir))
    db = run_dir / "paramedic.db"
    python = REPO / ".venv" / "bin" / "python"
    hide = "import sys; sys.modules['uvloop'] = None; " if loop == "asyncio" else ""
    argv = [str(python), *args.python_args.split(), "-c", f"{hide}from agent.cli.main import main; main()",
            "run", "-c", str(cfg)]
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    with running(argv, run_dir / "paramedic.log", "paramedic") as proc:
        wait_until("paramedic /healthz", lambda: http_get(f"http://127.0.0.1:{port}/healthz") == b"ok\n", 30, proc)
        print(f"  paramedic pid {proc.pid}: warming up {args.warmup:g}s", file=sys.stderr)
        time.sleep(args.warmup)
        before: list[Metrics] = []
        window = Window({"paramedic": proc.pid})
        print(f"  measuring {args.window:g}s", file=sys.stderr)
        window.measure(args.window, lambda: before.append(scrape(metrics_url)))
        after = scrape(metrics_url)
        time.sleep(2.5)  # runs started in the window end within their 1 s timeout, then a flush
        stored, stored_ok = stored_runs(db, *window.wall)
        if args.hold:
            print(f"  holding paramedic (pid {proc.pid}) for {args.hold:g}s: profile it now", file=sys.stderr)
            time.sleep(args.hold)
    [m0] = before
    counted = total(after, "paramedic_probes_total") - total(m0, "paramedic_probes_total")
    skipped = (total(after, "paramedic_scheduler_skipped_runs_total")
               - total(m0, "paramedic_scheduler_skipped_runs_total"))
    b0, b1 = buckets(m0, "paramedic_scheduler_lag_seconds"), buckets(after, "paramedic_scheduler_lag_seconds")
    delta = {le: b1[le] - b0.get(le, 0.0) for le in b1}
    top = next((le for le in sorted(delta) if delta[le] >= delta.get(float("inf"), 0)), float("inf"))
    return Figures(
        window, probes=stored, ok=stored_ok, expected=args.checks * window.seconds, checks=args.checks,
        counted=counted, skipped=skipped,
        lag_p50=quantile_bucket(delta, 0.5), lag_p99=quantile_bucket(delta, 0.99),
        lag_count=delta.get(float("inf"), 0.0), lag_max_bucket=top,
    )


# --------------------------------------------------------------------------- blackbox_exporter


BLACKBOX_CONF = """\
modules:
  http_2xx:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
"""


def prometheus_config(url: str, n: int, exporter: str) -> str:
    targets = json.dumps([f"{url}?i={i}" for i in range(n)])
    return f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1m
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [http_2xx]
    static_configs:
      - targets: {targets}
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: "{exporter}"
"""


def prom_query(base: str, query: str, at: float) -> float:
    qs = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    doc = json.loads(http_get(f"{base}/api/v1/query?{qs}", timeout=30))
    result = doc["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def bench_blackbox(url: str, args: argparse.Namespace, tmp: Path, n: int) -> Figures:
    """One exporter + Prometheus run with ``n`` targets."""
    tmp = tmp / f"blackbox-{n}"
    tmp.mkdir()
    bb_port, prom_port = free_port(), free_port()
    (tmp / "blackbox.yml").write_text(BLACKBOX_CONF)
    (tmp / "prometheus.yml").write_text(prometheus_config(url, n, f"127.0.0.1:{bb_port}"))
    (tmp / "prom-data").mkdir()
    prom_base = f"http://127.0.0.1:{prom_port}"
    with contextlib.ExitStack() as stack:
        exporter = stack.enter_context(running(
            ["prometheus-blackbox-exporter", f"--config.file={tmp / 'blackbox.yml'}",
             f"--web.listen-address=127.0.0.1:{bb_port}", "--log.level=warn"],
            tmp / "blackbox.log", "blackbox_exporter"))
        wait_until("blackbox_exporter", lambda: http_get(f"http://127.0.0.1:{bb_port}/metrics") != b"", 15, exporter)
        prom = stack.enter_context(running(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            tmp / "prometheus.log", "prometheus"))
        wait_until("prometheus", lambda: http_get(f"{prom_base}/-/ready").startswith(b"Prometheus"), 60, prom)
        print(f"  exporter pid {exporter.pid}, prometheus pid {prom.pid}: warming up {args.warmup:g}s",
              file=sys.stderr)
        time.sleep(args.warmup)
        window = Window({"exporter": exporter.pid, "prometheus": prom.pid})
        print(f"  measuring {args.window:g}s", file=sys.stderr)
        window.measure(args.window)
        end = time.time()
        time.sleep(2.5)  # let the last scrapes of the window land in the TSDB
        rng = f"{round(window.seconds * 1000)}ms"
        probes = prom_query(prom_base, f"sum(count_over_time(probe_success[{rng}]))", end)
        ok = prom_query(prom_base, f"sum(sum_over_time(probe_success[{rng}]))", end)
    return Figures(window, probes=probes, ok=ok, expected=n * window.seconds, checks=n)


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return "+Inf" if seconds == float("inf") else f"{seconds * 1000:.1f} ms"


def yes(ok: bool) -> str:
    return "yes" if ok else "NO "


def report(ps: dict[str, Figures], bs: list[Figures], args: argparse.Namespace) -> None:
    cores = os.cpu_count()
    print()
    print(f"HTTP probes at a 1 s interval against a local nginx, a new connection each; warm-up {args.warmup:g} s,"
          f" window {args.window:g} s; {cores} cores")
    print()
    rows = [("", "probes", "ok", "per s", "CPU s", "(kernel)", "CPU s / 1k probes", "max RSS")]

    def row(label: str, f: Figures, names: tuple[str, ...], counts: bool = True) -> None:
        w = f.window
        cpu, system = sum(w.cpu[n] for n in names), sum(w.system[n] for n in names)
        rss = sum(w.rss_max[n] for n in names)
        rows.append((label, f"{f.probes:.0f}" if counts else "", f"{f.ok:.0f}" if counts else "",
                     f"{f.probes / w.seconds:.0f}" if counts else "", f"{cpu:.2f}", f"{system:.2f}",
                     f"{f.per_k(*names):.3f}", f"{rss / MIB:.1f} MiB"))

    for loop, p in ps.items():
        row(f"paramedic, {loop} ({p.checks} checks)", p, ("paramedic",))
    for b in bs:
        row(f"blackbox_exporter ({b.checks} targets)", b, ("exporter",))
        row("  prometheus", b, ("prometheus",), counts=False)
        row("  exporter + prometheus", b, ("exporter", "prometheus"), counts=False)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    print()
    for loop, p in ps.items():
        name = f"paramedic/{loop}"
        print(f"{name}: expected ~{p.expected:.0f} runs in {p.window.seconds:.1f} s; in the store {p.probes:.0f} "
              f"({p.probes / p.expected:.1%}); /metrics counted {p.counted:.0f} between its scrapes;"
              f" skipped runs (metric) {p.skipped:.0f}")
        print(f"{name}: scheduling lag over {p.lag_count:.0f} starts: p50 <= {ms(p.lag_p50[0])} "
              f"(~{ms(p.lag_p50[1])}), p99 <= {ms(p.lag_p99[0])} (~{ms(p.lag_p99[1])}), "
              f"max <= {ms(p.lag_max_bucket)}  (bucket upper bounds, ~ interpolated)")
        print(f"{name}: meanwhile other processes (nginx among them) kept {p.window.others:.2f} of {cores} cores busy")
    for b in bs:
        name = f"blackbox/{b.checks}"
        print(f"{name}: expected ~{b.expected:.0f} probes in {b.window.seconds:.1f} s, done {b.probes:.0f} "
              f"({b.probes / b.expected:.1%}){'' if b.kept_up else ': it did NOT keep up (scrapes timed out)'}")
        print(f"{name}: meanwhile other processes (nginx among them) kept {b.window.others:.2f} of {cores} cores busy")
    # Compare with the exporter at the highest rate it kept up with: a collapsed exporter
    # burns CPU on scrapes that time out, and its CPU per probe says nothing then.
    ref = next((b for b in bs if b.kept_up), None)
    for loop, p in ps.items():
        print()
        print(f"targets (issue 4), paramedic on {loop}:")
        missed = p.expected - p.probes
        print(f"  every run happens         {yes(p.skipped == 0 and missed < 0.01 * p.expected)}"
              f"  skipped {p.skipped:.0f}; completed/expected {p.probes / p.expected:.1%}")
        print(f"  p99 lag < 100 ms          {yes(p.lag_p99[0] <= 0.1)}  p99 <= {ms(p.lag_p99[0])}")
        print(f"  RSS < 100 MiB             {yes(p.window.rss_max['paramedic'] < 100 * MIB)}"
              f"  {p.window.rss_max['paramedic'] / MIB:.1f} MiB")
        if ref is not None:
            ratio = p.per_k("paramedic") / ref.per_k("exporter")
            both = p.per_k("paramedic") / ref.per_k("exporter", "prometheus")
            print(f"  CPU/1k <= blackbox's      {yes(ratio <= 1)}  paramedic at {p.probes / p.window.seconds:.0f}/s"
                  f" / exporter at {ref.probes / ref.window.seconds:.0f}/s = {ratio:.2f}"
                  f"  (/ exporter+prometheus = {both:.2f})")
        elif bs:
            print("  CPU/1k <= blackbox's      ?    the exporter kept up at no rate tried")


def has_uvloop() -> bool:
    python = REPO / ".venv" / "bin" / "python"
    return subprocess.run([str(python), "-c", "import uvloop"], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=1000, help="HTTP checks (probes per second), default 1000")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring, default 5")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured, default 30")
    parser.add_argument("--only", choices=["paramedic", "blackbox"], help="run one side only")
    parser.add_argument("--blackbox-checks", type=int, default=0,
                        help="targets for blackbox_exporter (default: --checks, then half as many again and again"
                        " while it does not keep up)")
    parser.add_argument("--nginx-workers", type=int, default=2)
    parser.add_argument("--hold", type=float, default=0.0,
                        help="keep paramedic running this many seconds after the window (to attach a profiler)")
    parser.add_argument("--python-args", default="", help="extra interpreter arguments for paramedic")
    parser.add_argument("--loop", choices=["both", "asyncio", "uvloop"], default="both",
                        help="paramedic's event loop: asyncio, uvloop (the [fast] extra) or both, one after the"
                        " other (default; uvloop is skipped when not installed)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, store)")
    args = parser.parse_args()

    ensure_packages()
    tmp = Path(tempfile.mkdtemp(prefix="paramedic-bench-"))
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    if "uvloop" in loops and not has_uvloop():
        print("uvloop is not installed in .venv (pip install -e '.[fast]'): measuring asyncio only", file=sys.stderr)
        loops.remove("uvloop")
    p: dict[str, Figures] = {}
    b: list[Figures] = []
    try:
        with contextlib.ExitStack() as stack:
            url = start_nginx(tmp, args.nginx_workers, stack)
            print(f"nginx at {url}; temp dir {tmp}", file=sys.stderr)
            for loop in loops if args.only in (None, "paramedic") else ():
                print(f"paramedic on {loop}:", file=sys.stderr)
                p[loop] = bench_paramedic(url, args, tmp, loop)
            n = args.blackbox_checks or args.checks
            while args.only in (None, "blackbox"):
                print(f"blackbox_exporter + prometheus, {n} targets:", file=sys.stderr)
                b.append(bench_blackbox(url, args, tmp, n))
                if b[-1].kept_up or n <= 100 or args.blackbox_checks:
                    break
                n //= 2  # it cannot do this rate on this machine: measure its cost where it can
        report(p, b, args)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
