"""A "rich" busybox container (every setting ``remediations.clone`` must preserve) and the
comparison of two containers' inspect data on those settings.

Used by the clone/recreate/rollback tests: integration tests make the container on the
real engine; unit tests read the recorded inspect JSON under
``tests/unit/fixtures/remediations/``. Re-record with::

    .venv/bin/python -m tests.support.rich_container

(Docker running, the test image present): it writes ``rich_before.json`` (the rich
container), ``rich_image.json`` (its image's inspect) and ``rich_after.json`` (a
container created from ``clone_spec`` of it), and ``compose_web_1.json``, container 1 of
a docker-compose v1 service (:data:`COMPOSE_FILE`, project ``shop``), then removes
everything it made.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "remediations"
RICH_PORT = "8080/tcp"
#: PID 1 is a shell that survives its server: ``pkill httpd`` wedges the container
#: (running, port published, nothing answering). It exits promptly on SIGINT/SIGTERM.
RICH_SCRIPT = 'trap "exit 0" INT TERM; httpd -p 8080 -h /www; while true; do sleep 1; done'


def run_rich(
    client: Any, image: str, name: str, host_dir: str, host_port: int | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> Any:
    """Create and start the rich container ``name`` on two fresh networks; returns it.

    Port 8080 (httpd) is published on ``127.0.0.1:host_port`` (None: a port Docker picks).

    Networks ``<name>-front`` (primary, alias ``rich-front``) and ``<name>-back`` (alias
    ``rich-back``) and volumes ``<name>-data``/``<name>-m`` are created here; remove them
    with :func:`remove_rich`.
    """
    from docker.types import LogConfig, Mount, Ulimit

    front = client.networks.create(f"{name}-front", labels={"paramedic-test": "1"})
    back = client.networks.create(f"{name}-back", labels={"paramedic-test": "1"})
    labels = {"paramedic-test": "1", "paramedic-test.pid": str(os.getpid()), "app": "rich", "tier": "web"}
    labels.update(extra_labels or {})
    api = client.api
    host_config = api.create_host_config(
        binds={f"{name}-data": {"bind": "/data", "mode": "rw"}, host_dir: {"bind": "/host", "mode": "ro"}},
        mounts=[Mount("/mnt/m", f"{name}-m", type="volume")],
        tmpfs={"/run/cache": "size=1m"},
        port_bindings={8080: ("127.0.0.1", host_port)},
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
        mem_limit="64m", nano_cpus=500_000_000, pids_limit=64, shm_size="32m", oom_score_adj=100,
        cap_add=["NET_ADMIN"], cap_drop=["MKNOD"], init=True, security_opt=["no-new-privileges"],
        log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "2"}),
        ulimits=[Ulimit(name="nofile", soft=1024, hard=2048)], extra_hosts={"db.internal": "127.0.0.2"},
        network_mode=front.name,
    )
    networking = api.create_networking_config({front.name: api.create_endpoint_config(aliases=["rich-front"])})
    created = api.create_container(
        image, ["-c", RICH_SCRIPT], entrypoint=["/bin/sh"], name=name, detach=True,
        environment={"GREETING": "hello world", "EMPTY": ""}, labels=labels, working_dir="/www",
        user="nobody", ports=[8080, (9000, "udp")], volumes=["/data", "/host", "/scratch"],
        domainname="example.test", stop_signal="SIGINT", stop_timeout=7,
        healthcheck={"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Timeout": 2_000_000_000,
                     "Retries": 3, "StartPeriod": 1_000_000_000},
        host_config=host_config, networking_config=networking, use_config_proxy=False,
    )
    api.connect_container_to_network(created["Id"], back.name, aliases=["rich-back"])
    container = client.containers.get(created["Id"])
    container.start()
    container.reload()
    return container


def remove_rich(client: Any, name: str) -> None:
    """Remove every container named like ``name`` (the clone, a renamed old one...) with its
    volumes, then the networks and named volumes :func:`run_rich` made.

    Volumes are collected from each container's mounts first: after a recreate, the
    original anonymous volume is mounted *by name*, which ``docker rm -v`` leaves behind.
    """
    from docker.errors import APIError, NotFound

    volumes = {f"{name}-data", f"{name}-m"}
    for ctr in client.containers.list(all=True, filters={"name": name}):
        if not ctr.name.startswith(name):
            continue
        volumes |= {m["Name"] for m in ctr.attrs.get("Mounts") or [] if m.get("Type") == "volume" and m.get("Name")}
        with contextlib.suppress(NotFound, APIError):
            ctr.remove(force=True, v=True)
    for net_name in (f"{name}-front", f"{name}-back"):
        with contextlib.suppress(NotFound, APIError):
            client.networks.get(net_name).remove()
    for volume in sorted(volumes):
        with contextlib.suppress(NotFound, APIError):
            client.volumes.get(volume).remove(force=True)


def preserved(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a clone must keep, normalised where Docker differs per container.

    Volatile per-container values are left out or normalised: the id-derived default
    hostname becomes ``"<default>"``, the short id drops out of network aliases, mounts
    are compared as ``(type, volume name or host path, destination, rw)``.
    """
    config = attrs.get("Config") or {}
    host = dict(attrs.get("HostConfig") or {})
    host.pop("Binds", None)  # compared through Mounts (a recreate adds anonymous volumes by name)
    host.pop("Mounts", None)
    hostname = config.get("Hostname")
    short = str(attrs.get("Id") or "")[:12]
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return {
        "Image": config.get("Image"),
        "Cmd": config.get("Cmd"), "Entrypoint": config.get("Entrypoint"),
        "Env": sorted(config.get("Env") or []), "Labels": config.get("Labels"),
        "WorkingDir": config.get("WorkingDir"), "User": config.get("User"),
        "ExposedPorts": config.get("ExposedPorts"), "Volumes": config.get("Volumes"),
        "Healthcheck": config.get("Healthcheck"), "StopSignal": config.get("StopSignal"),
        "StopTimeout": config.get("StopTimeout"), "Domainname": config.get("Domainname"),
        "Hostname": "<default>" if hostname == short else hostname,
        "HostConfig": host,
        "Mounts": sorted(
            (m.get("Type"), m.get("Name") or m.get("Source"), m.get("Destination"), m.get("RW"))
            for m in attrs.get("Mounts") or []
        ),
        "Networks": {
            net: {"Aliases": sorted(a for a in ep.get("Aliases") or [] if a != short),
                  "IPAMConfig": ep.get("IPAMConfig"), "Links": ep.get("Links")}
            for net, ep in networks.items()
        },
    }


COMPOSE_FILE = """\
version: "2.4"
services:
  web:
    image: paramedic-test/busybox:latest
    command: ["sh", "-c", "trap 'exit 0' INT TERM; httpd -p 80 -h /www; while true; do sleep 1; done"]
    ports: ["127.0.0.1::80"]
    labels: {paramedic-test: "1"}
    environment: {MODE: prod}
    restart: unless-stopped
    mem_limit: 64m
    networks:
      default:
        aliases: [www]
"""


def record_compose() -> None:
    """Write ``compose_web_1.json`` (``docker-compose -p shop up -d``, inspect, ``down``)."""
    import subprocess

    import docker

    client = docker.from_env()
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "docker-compose.yml").write_text(COMPOSE_FILE)
        base = ["docker-compose", "-p", "shop"]
        try:
            subprocess.run([*base, "up", "-d"], cwd=directory, check=True, capture_output=True)
            attrs = client.api.inspect_container("shop_web_1")
        finally:
            subprocess.run([*base, "down", "-v", "-t", "2"], cwd=directory, check=False, capture_output=True)
    (FIXTURES / "compose_web_1.json").write_text(json.dumps(attrs, indent=1, sort_keys=True) + "\n")


def record() -> None:
    """Write the fixtures (see the module docstring)."""
    import docker

    from remediations.clone import clone_spec
    from remediations.recreate import create_container
    from tests.support.images import TEST_IMAGE

    client = docker.from_env()
    name = f"paramedic-test-rich-{uuid.uuid4().hex[:6]}"
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as host_dir:
        try:
            before = run_rich(client, TEST_IMAGE, name, host_dir).attrs
            image = client.api.inspect_image(before["Image"])
            spec = clone_spec(before, name=f"{name}-clone", image_config=image["Config"])
            after = client.api.inspect_container(create_container(client, spec))
        finally:
            remove_rich(client, name)
    for file, data in (("rich_before.json", before), ("rich_image.json", image), ("rich_after.json", after)):
        (FIXTURES / file).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"recorded {name} into {FIXTURES}\n")


if __name__ == "__main__":
    record()
    record_compose()
