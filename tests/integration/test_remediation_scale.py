"""``scale`` on a real docker-compose project (Debian's ``docker-compose`` v1).

The project is written to a temporary directory and brought up with ``docker-compose -p
<unique> up -d``; the action then adds and removes containers through the Docker API,
and ``docker-compose ps`` must list them as the service's own. Each replica serves its
own hostname, so the test can tell that every one answers on its own published port
(``127.0.0.1::80``: an ephemeral host port each). ``docker-compose down -v`` always runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from agent.core.targets import resolve_target
from remediations.base import ActionContext, ComposeRef, Plan
from remediations.scale import Scale, ScaleParams
from tests.support.servers import free_port
from tests.support.waiting import http_get, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SERVE_HOSTNAME = "trap 'exit 0' INT TERM; hostname > /www/index.html; httpd -p 80 -h /www; while true; do sleep 1; done"
COMPOSE_FILE = """\
version: "2.4"
services:
  web:
    image: {image}
    command: ["sh", "-c", "{serve_hostname}"]
    ports: ["127.0.0.1::80"]
    labels: {{paramedic-test: "1", paramedic-test.pid: "{pid}"}}
    environment: {{MODE: prod}}
    restart: unless-stopped
    mem_limit: 64m
    networks:
      default:
        aliases: [www]
  fixed:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' INT TERM; httpd -p 80 -h /www; while true; do sleep 1; done"]
    ports: ["127.0.0.1:{fixed_port}:80"]
    labels: {{paramedic-test: "1", paramedic-test.pid: "{pid}"}}
"""


@dataclass
class Project:
    name: str
    directory: Path
    client: docker.DockerClient
    fixed_port: int

    def compose(self, *args: str) -> str:
        result = subprocess.run(
            ["docker-compose", "-p", self.name, *args], cwd=self.directory, capture_output=True, text=True,
            timeout=120, check=False, env={**os.environ, "COLUMNS": "999"},  # one line per row
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def ps_names(self, service: str) -> list[str]:
        """Container names ``docker-compose ps <service>`` lists (the first column of its table),
        cross-checked with ``docker-compose ps -q``; every one must be ``Up``."""
        rows = [line for line in self.compose("ps", service).splitlines()[2:] if line.strip()]
        names = sorted(row.split()[0] for row in rows)
        ids = self.compose("ps", "-q", service).split()
        assert sorted(self.client.api.inspect_container(i)["Name"].lstrip("/") for i in ids) == names
        assert all(" Up " in row for row in rows), rows
        return names


@pytest.fixture
def project(docker_client: docker.DockerClient, busybox_image: str, tmp_path: Path) -> Iterator[Project]:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: run scripts/setup-test-env")
    name = f"pmscale{uuid.uuid4().hex[:8]}"
    fixed_port = free_port()
    (tmp_path / "docker-compose.yml").write_text(
        COMPOSE_FILE.format(image=busybox_image, pid=os.getpid(), fixed_port=fixed_port,
                            serve_hostname=SERVE_HOSTNAME))
    proj = Project(name, tmp_path, docker_client, fixed_port)
    try:
        proj.compose("up", "-d")
        yield proj
    finally:
        subprocess.run(["docker-compose", "-p", name, "down", "-v", "--remove-orphans", "-t", "2"],
                       cwd=tmp_path, capture_output=True, timeout=120, check=False)


def run(params: ScaleParams, context: ActionContext | None = None) -> tuple[Plan, Any]:
    action = Scale(params, context or ActionContext())
    target = resolve_target(params, None)

    async def go() -> tuple[Plan, Any]:
        plan = action.plan(target, await action.inspect(target))
        return plan, (await action.apply(plan) if plan.changes else None)

    return asyncio.run(go())


def serves_own_hostname(client: docker.DockerClient, name: str) -> None:
    attrs = client.api.inspect_container(name)
    [binding] = attrs["NetworkSettings"]["Ports"]["80/tcp"]
    assert binding["HostIp"] == "127.0.0.1"

    def attempt() -> bytes | None:
        reply = http_get(f"http://127.0.0.1:{binding['HostPort']}/", timeout=2)
        return reply.body if reply.status == 200 else None

    body = wait_until(attempt, timeout=10, what=f"{name} over HTTP")
    assert body.decode().strip() == attrs["Config"]["Hostname"]


def test_scale_up_to_three_then_down_to_one(project: Project) -> None:
    p = project
    assert p.ps_names("web") == [f"{p.name}_web_1"]
    ref = ComposeRef(project=p.name, service="web")

    plan, outcome = run(ScaleParams(compose=ref, replicas=3, stop_timeout=3))
    assert plan.summary == f"scale {p.name}/web from 1 to 3"
    assert outcome.ok, outcome.message
    names = [f"{p.name}_web_{n}" for n in (1, 2, 3)]
    assert p.ps_names("web") == names
    for name in names:
        serves_own_hostname(p.client, name)
    first = p.client.api.inspect_container(names[0])
    third = p.client.api.inspect_container(names[2])
    assert third["Config"]["Labels"]["com.docker.compose.container-number"] == "3"
    assert {k: v for k, v in third["Config"]["Labels"].items() if k != "com.docker.compose.container-number"} == \
        {k: v for k, v in first["Config"]["Labels"].items() if k != "com.docker.compose.container-number"}
    for key in ("Image", "Cmd", "Env"):
        assert third["Config"][key] == first["Config"][key], key
    for key in ("RestartPolicy", "Memory", "NetworkMode"):
        assert third["HostConfig"][key] == first["HostConfig"][key], key
    network = f"{p.name}_default"
    assert {"web", "www"} <= set(third["NetworkSettings"]["Networks"][network]["Aliases"])

    announced: list[str] = []
    context = ActionContext(expect_events=lambda container, seconds: announced.append(container))
    plan, outcome = run(ScaleParams(compose=ref, step=-2, stop_timeout=3), context)
    assert [r["name"] for r in plan.data["remove"]] == [names[2], names[1]]  # highest numbers first
    assert outcome.ok, outcome.message
    assert announced == [r["id"] for r in plan.data["remove"]]  # each stop told to the event listener
    assert [r["name"] for r in outcome.data["removed"]] == [names[2], names[1]]
    assert p.ps_names("web") == [names[0]]
    serves_own_hostname(p.client, names[0])


def test_clamped_to_max_and_nothing_to_do_at_the_bound(project: Project) -> None:
    ref = ComposeRef(project=project.name, service="web")
    plan, outcome = run(ScaleParams(compose=ref, step=5, max=2, stop_timeout=3))
    assert plan.summary == f"scale {project.name}/web from 1 to 2; 6 clamped to 2 (min 1, max 2)"
    assert outcome.ok, outcome.message
    plan, outcome = run(ScaleParams(compose=ref, step=1, max=2))
    assert not plan.changes
    assert plan.refused is None
    assert outcome is None
    assert len(project.ps_names("web")) == 2


def test_fixed_host_port_refuses_to_scale_up(project: Project) -> None:
    plan, outcome = run(ScaleParams(compose=ComposeRef(project=project.name, service="fixed"), replicas=2))
    assert outcome is None
    assert plan.refused == (f"cannot add containers to {project.name}/fixed: host port "
                            f"127.0.0.1:{project.fixed_port}->80/tcp is fixed (only one container can publish it)")
    assert project.ps_names("fixed") == [f"{project.name}_fixed_1"]
