"""Cold start of `paramedic check` with two HTTP probes; run: .venv/bin/python bench/cold_start.py

Starts a local HTTP server in its own process (``python -m http.server`` on a free
127.0.0.1 port), writes a throwaway config with two HTTP probes against it, then times
``paramedic check -c CONFIG`` as a cron job runs it: 2 warm-up runs, then 20 measured runs
(wall time around ``subprocess.run``), taking turns with ``--no-store`` and with ``python
-c pass``, which is the machine's reference. Prints figures; asserts nothing about them (the target in issue 2 is a
median under 0.35 s).

Bytecode: the children run without ``PYTHONDONTWRITEBYTECODE``, as a cron job on an
ordinary machine does, so the warm-up runs leave ``__pycache__`` behind and the measured
runs load compiled modules (``pip install .`` compiles at install time anyway). Some
sandboxes export ``PYTHONDONTWRITEBYTECODE=1``; with an editable install that makes every
run recompile paramedic's own modules from source (about 35-50 ms more here) unless a
``__pycache__`` was written before.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def paramedic_command() -> str:
    beside = Path(sys.executable).parent / "paramedic"
    found = str(beside) if beside.exists() else shutil.which("paramedic")
    if not found:
        sys.exit("paramedic is not installed: pip install -e '.[dev]'")
    return found


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"the benchmark's HTTP server did not start on 127.0.0.1:{port}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


Measured = tuple[list[float], list[float]]


def timed(commands: list[list[str]], runs: int, warmup: int, cwd: Path) -> list[Measured]:
    """Wall and CPU seconds of each measured run of each command; every run must exit 0.

    The commands take turns (one run of each per round), so a machine that speeds up or
    slows down during the bench (this one drifts by a third within minutes) weighs on all
    of them alike, and ``python -c pass`` stays a fair reference.
    """
    measured: list[Measured] = [([], []) for _ in commands]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for i in range(warmup + runs):
        for argv, (wall, cpu) in zip(commands, measured, strict=True):
            c0, t0 = _children_cpu(), time.perf_counter()
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
            elapsed, used = time.perf_counter() - t0, _children_cpu() - c0
            if proc.returncode != 0:
                sys.exit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
            if i >= warmup:
                wall.append(elapsed)
                cpu.append(used)
    return measured


def describe(label: str, measured: Measured) -> str:
    wall, cpu = measured
    p90 = statistics.quantiles(wall, n=10, method="inclusive")[8]
    return (f"{label:<34} median {statistics.median(wall) * 1000:7.1f} ms   "
            f"p90 {p90 * 1000:7.1f} ms   min {min(wall) * 1000:7.1f} ms   "
            f"(CPU median {statistics.median(cpu) * 1000:6.1f} ms, n={len(wall)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="paramedic-bench-") as tmp:
        root = Path(tmp)
        site = root / "site"
        site.mkdir()
        (site / "health").write_text('{"status": "ok"}\n')
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port)
            config = root / "config.yaml"
            config.write_text(
                "checks:\n"
                f"  - name: app-health\n    type: http\n    url: http://127.0.0.1:{port}/health\n"
                "    conditions: [status_code == 200, latency_ms < 500, 'body contains \"ok\"']\n"
                f"  - name: app-root\n    type: http\n    url: http://127.0.0.1:{port}/\n"
                "    conditions: [status_code == 200]\n"
            )
            paramedic = paramedic_command()
            check, no_store, bare = timed([
                [paramedic, "check", "-c", str(config)],
                [paramedic, "check", "--no-store", "-c", str(config)],
                [sys.executable, "-c", "pass"],
            ], args.runs, args.warmup, root)
        finally:
            server.terminate()
            server.wait(10)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"cold start, two HTTP probes against 127.0.0.1:{port} ({os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}, load average {load})")
    print(describe("paramedic check -c cfg", check))
    print(describe("paramedic check --no-store -c cfg", no_store))
    print(describe("python -c pass", bare))
    print(f"target: median < 350 ms -> {'met' if statistics.median(check[0]) < 0.35 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
