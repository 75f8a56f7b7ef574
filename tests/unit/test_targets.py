"""Targets, computed once (agent.core.targets) through hooks on the check spec and the step params.

No Docker: the hooks are pure, and so is every function that turns a check (and a step) into
the target a decision acts on, its de-duplication key and its blast-radius groups.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent.config.model import Config, parse_config
from agent.core.targets import (
    blast_groups,
    check_target,
    dedup_key,
    resolve_target,
    runbook_target,
    target_groups,
    target_key,
    target_keys,
)
from agent.kernel.results import Result, Status
from agent.kernel.targets import Target
from agent.registry import spec_model
from checks.base import CheckSpec
from remediations.base import ComposeRef, Params, TargetParams


def check(**fields: Any) -> CheckSpec:
    fields.setdefault("name", "c")
    return spec_model(str(fields["type"])).model_validate(fields)


def container(**fields: Any) -> CheckSpec:
    return check(type="container", **fields)


HTTP = {"type": "http", "url": "http://127.0.0.1:1/"}

CONFIG = """
checks:
  - {name: web, type: container, container: web-1, tags: [shop]}
  - {name: api, type: http, url: "http://127.0.0.1:1/"}
  - {name: shop, type: container, compose: {project: shop, service: web}, docker_host: "tcp://10.0.0.1:2375"}
  - {name: bare, type: tcp, host: 127.0.0.1, port: 1}
runbooks:
  - name: web-down
    match: {checks: [web]}
    steps:
      - action: restart
  - name: api-down
    match: {checks: [api]}
    steps:
      - action: restart
        params: {container: api-1}
  - name: api-hook
    match: {checks: [api]}
    steps:
      - action: webhook
        params: {url: "http://127.0.0.1:1/hook"}
  - name: shop-down
    match: {checks: [shop]}
    steps:
      - action: restart
        params: {docker_host: "tcp://10.0.0.2:2375"}
  - name: bare-down
    match: {checks: [bare]}
"""


@pytest.fixture(scope="module")
def config() -> Config:
    return parse_config(CONFIG, "targets.yaml", env={})


def book(config: Config, name: str) -> Any:
    return next(b for b in config.runbooks if b.name == name)


# --------------------------------------------------------------------------- the spec's hooks


@pytest.mark.parametrize("fields", [HTTP, {"type": "tcp", "host": "h", "port": 1},
                                    {"type": "disk", "path": "/"}])
def test_a_check_that_is_not_of_containers_names_no_docker_target_and_watches_no_events(
        fields: dict[str, Any]) -> None:
    spec = check(**fields)
    assert spec.docker_target() is None
    assert spec.watches_docker_events is False
    assert spec.deployed_images({"containers": [{"state": "running", "image_id": "sha256:a"}]}) == ()


def test_a_container_check_names_its_selection() -> None:
    assert container(container="web-1").docker_target() == Target(container="web-1")
    assert container(id="abc123").docker_target() == Target(container_id="abc123")
    assert container(compose={"project": "shop", "service": "web"}, docker_host="tcp://h:2375").docker_target() \
        == Target(compose_project="shop", compose_service="web", docker_host="tcp://h:2375")
    assert container(labels={"role": "w"}).docker_target() == Target(labels={"role": "w"})
    assert container(container="web-1").watches_docker_events is True


def test_a_container_check_reports_the_images_of_its_running_containers() -> None:
    observations = {"containers": [
        {"name": "a", "state": "running", "image": "app:2", "image_id": "sha256:b"},
        {"name": "b", "state": "exited", "image": "app:1", "image_id": "sha256:a"},
        {"name": "c", "state": "running", "image": "", "image_id": "sha256:c"},
        {"name": "d", "state": "running", "image": "app:3", "image_id": ""},
        "not a container",
    ]}
    assert container(labels={"role": "w"}).deployed_images(observations) == (
        ("app:2", "sha256:b"), ("sha256:c", "sha256:c"))
    assert container(container="web-1").deployed_images({}) == ()


def test_step_params_name_a_target_only_when_they_set_one() -> None:
    assert Params().named_target() is None
    assert Params().named_docker_host() is None
    assert TargetParams().named_target() is None
    assert TargetParams(docker_host="tcp://h:2375").named_docker_host() == "tcp://h:2375"
    assert TargetParams(container="x", docker_host="tcp://h:2375").named_target() == Target(
        container="x", docker_host="tcp://h:2375")
    assert TargetParams(compose=ComposeRef(project="p", service="s")).named_target() == Target(
        compose_project="p", compose_service="s")
    assert TargetParams(service="pgs").named_target() == Target(swarm_service="pgs")


# --------------------------------------------------------------------------- resolution


def test_a_non_container_check_has_no_docker_target() -> None:
    http = check(name="api", **HTTP)
    assert resolve_target(Params(), http) == Target(check="api")
    assert resolve_target(TargetParams(docker_host="tcp://h:2375"), http) == Target(check="api")
    assert check_target(http).key == "check api"
    assert not check_target(http).is_docker


def test_a_container_check_gives_its_own_target_and_key() -> None:
    assert check_target(container(name="web", container="web-1")).key == "container web-1"
    assert check_target(container(name="x", id="0123456789abcdef")).key == "container 0123456789ab"
    by_compose = check_target(container(name="shop", compose={"project": "shop", "service": "web"}))
    assert (by_compose.check, by_compose.key) == ("shop", "compose service shop/web")
    assert check_target(container(name="w", labels={"role": "w", "app": "a"})).key \
        == "containers labelled app=a,role=w"


def test_a_step_that_names_a_target_wins_over_the_check() -> None:
    http = check(name="api", **HTTP)
    assert resolve_target(TargetParams(container="api-1"), http) == Target(check="api", container="api-1")
    web = container(name="web", container="web-1", docker_host="tcp://a:2375")
    assert resolve_target(TargetParams(service="websvc"), web) == Target(check="web", swarm_service="websvc")


def test_a_step_host_moves_the_checks_own_target() -> None:
    web = container(name="web", container="web-1", docker_host="tcp://a:2375")
    assert resolve_target(Params(), web).docker_host == "tcp://a:2375"
    assert resolve_target(TargetParams(docker_host="tcp://b:2375"), web) == Target(
        check="web", container="web-1", docker_host="tcp://b:2375")


def test_no_check_and_no_named_target_is_nothing() -> None:
    assert resolve_target(Params(), None) == Target()
    assert resolve_target(Params(), None).key == "nothing"
    assert resolve_target(TargetParams(container="x"), None) == Target(container="x")


def test_runbook_targets_and_dedup_keys(config: Config) -> None:
    web, api, shop, bare = (config.check(n) for n in ("web", "api", "shop", "bare"))
    assert target_key(book(config, "web-down"), web) == "container web-1"
    assert target_key(book(config, "api-down"), api) == "container api-1"  # http check, container-naming step
    assert target_key(book(config, "api-hook"), api) == "check api"  # a webhook step names no target
    assert runbook_target(book(config, "shop-down"), shop) == Target(
        check="shop", compose_project="shop", compose_service="web", docker_host="tcp://10.0.0.2:2375")
    assert runbook_target(book(config, "bare-down"), bare) == Target(check="bare")  # no step
    assert target_key(book(config, "bare-down"), bare) == "bare"  # as the remedy always keyed it
    assert dedup_key("web-down", "container web-1") == "runbook:web-down/target:container web-1"


def test_target_keys_list_the_checks_that_select_containers(config: Config) -> None:
    assert target_keys(config.checks) == {"web": "container web-1", "shop": "compose service shop/web"}


# --------------------------------------------------------------------------- blast-radius groups


def test_blast_groups_come_from_tags_the_checks_selection_and_the_target() -> None:
    assert blast_groups(check(name="api", tags=["shop"], **HTTP)) == {"tag:shop"}
    assert blast_groups(container(container="web-1")) == frozenset()
    assert blast_groups(container(compose={"project": "shop", "service": "web"})) == {
        "compose:shop", "service:shop/web"}
    assert blast_groups(container(labels={"role": "w"})) == {"labels:role=w"}
    http = check(name="api", **HTTP)
    assert blast_groups(http, resolve_target(TargetParams(service="pgs"), http)) == {"swarm:pgs"}
    assert target_groups(None) == frozenset()
    assert target_groups(Target(compose_project="p")) == {"compose:p"}


# --------------------------------------------------------------------------- what uses them


def test_image_records_follow_the_hook_and_the_target_key() -> None:
    from agent.core.deploys import image_records

    web = container(name="web", compose={"project": "shop", "service": "web"})
    http = check(name="api", **HTTP)
    running = {"containers": [{"state": "running", "image": "app:2", "image_id": "sha256:b"}]}
    results = [Result("web", "container", Status.OK, "", 1.0, running),
               Result("api", "http", Status.OK, "", 1.0, running)]  # an http result carries no image
    assert image_records({"web": web, "api": http}, results) == [("compose service shop/web", "app:2", "sha256:b")]
