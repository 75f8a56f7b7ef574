"""How long the container image takes to answer: ``docker run`` to the first 200 from ``/healthz``.

Runs ``paramedic:latest`` (build it with ``scripts/build-image``) the way the README does
(``--read-only --tmpfs /tmp``, the Docker socket and its group, a config mounted read-only, a
volume on /var/lib/paramedic) with ``server.listen: 0.0.0.0:9321`` published on
``127.0.0.1::9321`` and one TCP check of its own port, then polls ``/healthz`` every 10 ms.
Prints, per run, when ``docker run -d`` returned and when the first 200 came, then the
medians; the image's size too. Figures only, no asserts.

    .venv/bin/python bench/image_start.py [--runs 5] [--image paramedic:latest]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SOCKET = Path("/var/run/docker.sock")
CONFIG = """\
store: {path: /var/lib/paramedic/paramedic.db}
server: {listen: "0.0.0.0:9321"}
checks:
  - {name: self, type: tcp, host: 127.0.0.1, port: 9321, interval: 5s}
"""


def answered(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310  (http://127.0.0.1 only)
            return bool(reply.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def one_run(image: str, config: Path, timeout: float = 60.0) -> tuple[float, float | None]:
    """(seconds until ``docker run -d`` returned, seconds until the first 200 or None)."""
    command = ["docker", "run", "-d", "--label", "paramedic-test=1", "--label", f"paramedic-test.pid={os.getpid()}",
               "--read-only", "--tmpfs", "/tmp", "--group-add", str(SOCKET.stat().st_gid),
               "-v", f"{SOCKET}:{SOCKET}", "-v", f"{config}:/etc/paramedic/config.yaml:ro",
               "-p", "127.0.0.1::9321", image]
    start = time.perf_counter()
    cid = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    returned = time.perf_counter() - start
    try:
        port = subprocess.run(["docker", "port", cid, "9321/tcp"], capture_output=True, text=True,
                              check=True).stdout.split()[0].rpartition(":")[2]
        url = f"http://127.0.0.1:{port}/healthz"
        while time.perf_counter() - start < timeout:
            if answered(url):
                return returned, time.perf_counter() - start
            time.sleep(0.01)
        return returned, None
    finally:  # -v: the anonymous volume of /var/lib/paramedic goes too
        subprocess.run(["docker", "rm", "-f", "-v", cid], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image", default="paramedic:latest")
    args = parser.parse_args()

    size = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", args.image], capture_output=True,
                          text=True, check=True).stdout.strip()
    print(f"image {args.image}: {int(size) / 1e6:.0f} MB")
    with tempfile.TemporaryDirectory(prefix="paramedic-image-start-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(CONFIG)
        config.chmod(0o644)
        returns, firsts = [], []
        for n in range(1, args.runs + 1):
            returned, first = one_run(args.image, config)
            returns.append(returned)
            shown = "no 200 within 60 s" if first is None else f"first 200 after {first * 1000:.0f} ms"
            print(f"run {n}: docker run -d returned after {returned * 1000:.0f} ms, {shown}")
            if first is not None:
                firsts.append(first)
    print(f"median: docker run -d {statistics.median(returns) * 1000:.0f} ms; "
          + (f"first 200 from /healthz {statistics.median(firsts) * 1000:.0f} ms "
             f"(min {min(firsts) * 1000:.0f}, max {max(firsts) * 1000:.0f}; {len(firsts)} of {args.runs} runs)"
             if firsts else "no run answered"))


if __name__ == "__main__":
    main()
