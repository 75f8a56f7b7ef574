"""``remediations.clone``: the pure "create a container like this one" function.

Fixtures (tests/unit/fixtures/remediations, recorded by ``python -m
tests.support.rich_container``): ``rich_before.json`` is a busybox container with every
setting the clone must keep; ``rich_after.json`` is the inspect of the container Docker
created from ``clone_spec(rich_before)``; ``rich_image.json`` is the image's inspect.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from remediations.clone import (
    anonymous_volumes,
    clone_spec,
    compose_name,
    compose_number,
    fixed_host_ports,
    naming_style,
    public_spec,
    replica_conflicts,
    same_as_planned,
    same_image,
)
from tests.support.rich_container import FIXTURES, preserved


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


BEFORE = load("rich_before.json")
AFTER = load("rich_after.json")
IMAGE = load("rich_image.json")


def test_recorded_clone_preserves_every_setting() -> None:
    """The recorded proof: Docker's inspect of the clone equals the original's on every
    preserved field (image, command, entrypoint, env, labels, workdir, user, ports,
    mounts, restart policy, healthcheck, limits, networks + aliases, stop signal/timeout,
    log config, capabilities, init, ulimits, tmpfs, extra hosts...)."""
    assert preserved(AFTER) == preserved(BEFORE)
    assert AFTER["Id"] != BEFORE["Id"]
    assert AFTER["Config"]["Hostname"] == AFTER["Id"][:12]  # its own default hostname


def test_spec_copies_config_and_host_config() -> None:
    spec = clone_spec(BEFORE, name="copy", image_config=IMAGE["Config"])
    body = spec["body"]
    config = BEFORE["Config"]
    for key in ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "ExposedPorts", "Healthcheck",
                "StopSignal", "StopTimeout", "Domainname", "Labels", "Image"):
        assert body[key] == config[key], key
    assert "Hostname" not in body  # Docker's default (the old short id): the new one gets its own
    host = {k: v for k, v in BEFORE["HostConfig"].items() if k not in ("Binds", "ContainerIDFile")}
    assert {k: v for k, v in body["HostConfig"].items() if k != "Binds"} == host
    anon = anonymous_volumes(BEFORE)
    assert [v["destination"] for v in anon] == ["/scratch"]
    assert body["HostConfig"]["Binds"] == [*BEFORE["HostConfig"]["Binds"], f"{anon[0]['name']}:/scratch"]
    assert spec["name"] == "copy"
    json.dumps(spec)  # JSON-safe: it goes to the journal


def test_spec_networks_primary_at_create_the_rest_connected_without_the_old_short_id() -> None:
    spec = clone_spec(BEFORE, name="copy")
    front = BEFORE["HostConfig"]["NetworkMode"]
    back = front.replace("-front", "-back")
    assert spec["body"]["NetworkingConfig"] == {"EndpointsConfig": {front: {"Aliases": ["rich-front"]}}}
    assert spec["connect"] == [{"network": back, "aliases": ["rich-back"]}]


def test_spec_does_not_touch_its_input() -> None:
    original = copy.deepcopy(BEFORE)
    spec = clone_spec(BEFORE, name="copy", labels={"x": "y"})
    spec["body"]["HostConfig"]["Binds"].append("mutated:/m")
    spec["body"]["Labels"]["z"] = "1"
    assert original == BEFORE


def test_labels_override_and_add() -> None:
    spec = clone_spec(BEFORE, name="c", labels={"tier": "api", "paramedic.rollback-from": "sha256:abc"})
    assert spec["body"]["Labels"]["tier"] == "api"
    assert spec["body"]["Labels"]["app"] == "rich"
    assert spec["body"]["Labels"]["paramedic.rollback-from"] == "sha256:abc"


# --------------------------------------------------------------------------- image defaults


def plain(**config: Any) -> dict[str, Any]:
    """A container of image ``app:1`` whose merged Config holds the image's defaults."""
    base: dict[str, Any] = {"Image": "app:1", "Cmd": ["serve"], "Entrypoint": None, "Env": ["PATH=/bin", "MODE=prod"],
            "Labels": {"org.image": "1", "team": "shop"}, "WorkingDir": "/app", "User": "",
            "ExposedPorts": {"80/tcp": {}, "9090/tcp": {}}, "Volumes": {"/cache": {}}, "Hostname": "0123456789ab"}
    base.update(config)
    return {"Id": "0123456789ab" + "0" * 52, "Name": "/app-1", "Image": "sha256:old", "Config": base,
            "HostConfig": {"NetworkMode": "default", "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]}},
            "NetworkSettings": {"Networks": {"bridge": {"Aliases": None, "IPAMConfig": None, "Links": None}}},
            "Mounts": []}


IMAGE_V1: dict[str, Any] = {"Cmd": ["serve"], "Entrypoint": None, "Env": ["PATH=/bin"], "Labels": {"org.image": "1"},
            "WorkingDir": "/app", "User": "", "ExposedPorts": {"80/tcp": {}, "9090/tcp": {}}, "Volumes": {"/cache": {}}}


def test_values_inherited_from_the_old_image_are_left_to_the_new_one() -> None:
    body = clone_spec(plain(), name="app-1", image="app:2", image_config=IMAGE_V1)["body"]
    assert body["Image"] == "app:2"
    assert "Cmd" not in body
    assert "WorkingDir" not in body
    assert body["Env"] == ["MODE=prod"]  # PATH was the image's
    assert body["Labels"] == {"team": "shop"}
    assert body["ExposedPorts"] == {"80/tcp": {}}  # 80 is published: kept exposed
    assert "Volumes" not in body


def test_own_settings_survive_a_new_image() -> None:
    body = clone_spec(plain(Cmd=["serve", "--fast"], WorkingDir="/srv"), name="a", image="app:2",
                      image_config=IMAGE_V1)["body"]
    assert body["Cmd"] == ["serve", "--fast"]
    assert body["WorkingDir"] == "/srv"


def test_own_entrypoint_always_carries_cmd() -> None:
    """Docker drops the image's CMD when a container sets its own entrypoint."""
    body = clone_spec(plain(Entrypoint=["/bin/sh"]), name="a", image_config=IMAGE_V1)["body"]
    assert body["Entrypoint"] == ["/bin/sh"]
    assert body["Cmd"] == ["serve"]


def test_without_image_config_everything_is_sent() -> None:
    body = clone_spec(plain(), name="a")["body"]
    assert body["Cmd"] == ["serve"]
    assert body["Env"] == ["PATH=/bin", "MODE=prod"]


# --------------------------------------------------------------------------- hostname, identity, modes


def test_hostname_set_by_someone_is_kept() -> None:
    assert clone_spec(plain(Hostname="web"), name="a")["body"]["Hostname"] == "web"
    assert "Hostname" not in clone_spec(plain(), name="a")["body"]


def test_host_network_mode_sends_no_hostname_and_no_endpoints() -> None:
    attrs = plain(Hostname="myhost", Domainname="x")
    attrs["HostConfig"]["NetworkMode"] = "host"
    attrs["NetworkSettings"]["Networks"] = {"host": {}}
    spec = clone_spec(attrs, name="a")
    assert "Hostname" not in spec["body"]
    assert "Domainname" not in spec["body"]
    assert spec["body"]["NetworkingConfig"] == {"EndpointsConfig": {}}
    assert spec["connect"] == []


def test_default_bridge_is_the_primary_network() -> None:
    assert clone_spec(plain(), name="a")["body"]["NetworkingConfig"] == {"EndpointsConfig": {"bridge": {}}}


def identity(attrs: dict[str, Any]) -> dict[str, Any]:
    attrs["Config"]["MacAddress"] = "02:42:ac:11:00:99"
    attrs["HostConfig"]["NetworkMode"] = "net"
    attrs["NetworkSettings"]["Networks"] = {
        "net": {"Aliases": ["web", "0123456789ab"], "IPAMConfig": {"IPv4Address": "10.5.0.9"}, "Links": None},
        "other": {"Aliases": None, "IPAMConfig": {"IPv4Address": "10.6.0.9", "LinkLocalIPs": ["169.254.1.1"]},
                  "Links": ["db:database"], "DriverOpts": {"o": "v"}},
    }
    attrs["Mounts"] = [{"Type": "volume", "Name": "f" * 64, "Destination": "/cache", "RW": True}]
    return attrs


def test_replacement_keeps_mac_static_ips_and_anonymous_volumes() -> None:
    spec = clone_spec(identity(plain()), name="a")
    body = spec["body"]
    assert body["MacAddress"] == "02:42:ac:11:00:99"
    assert body["NetworkingConfig"]["EndpointsConfig"]["net"] == {"Aliases": ["web"],
                                                                 "IPAMConfig": {"IPv4Address": "10.5.0.9"}}
    assert spec["connect"] == [{"network": "other", "links": {"db": "database"}, "ipv4_address": "10.6.0.9",
                                "link_local_ips": ["169.254.1.1"], "driver_opt": {"o": "v"}}]
    assert body["HostConfig"]["Binds"] == ["f" * 64 + ":/cache"]


def test_replica_gets_fresh_volumes_and_no_mac_or_static_ip() -> None:
    spec = clone_spec(identity(plain()), name="a", replica=True)
    body = spec["body"]
    assert "MacAddress" not in body
    assert body["NetworkingConfig"]["EndpointsConfig"]["net"] == {"Aliases": ["web"]}
    assert "Binds" not in body["HostConfig"] or not body["HostConfig"]["Binds"]
    assert any("MAC address" in n for n in spec["notes"])


def test_anonymous_volume_declared_with_mount_api_keeps_its_volume() -> None:
    attrs = plain()
    attrs["HostConfig"]["Mounts"] = [{"Type": "volume", "Target": "/cache"}]
    attrs["Mounts"] = [{"Type": "volume", "Name": "a" * 64, "Destination": "/cache", "RW": True}]
    host = clone_spec(attrs, name="x")["body"]["HostConfig"]
    assert host["Mounts"] == [{"Type": "volume", "Target": "/cache", "Source": "a" * 64}]
    assert "Binds" not in host or not host["Binds"]


def test_legacy_links_use_the_create_form() -> None:
    attrs = plain()
    attrs["HostConfig"]["Links"] = ["/db:/app-1/database", "/cache:/app-1/cache"]
    assert clone_spec(attrs, name="a")["body"]["HostConfig"]["Links"] == ["db:database", "cache:cache"]


def test_container_id_file_is_not_copied() -> None:
    attrs = plain()
    attrs["HostConfig"]["ContainerIDFile"] = "/tmp/cid"
    assert "ContainerIDFile" not in clone_spec(attrs, name="a")["body"]["HostConfig"]


# --------------------------------------------------------------------------- replicas


@pytest.mark.parametrize(
    ("bindings", "fixed"),
    [
        ({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}, []),
        ({"80/tcp": [{"HostIp": "", "HostPort": "0"}]}, []),
        ({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}, ["127.0.0.1:8080->80/tcp"]),
        ({"53/udp": [{"HostIp": "", "HostPort": "5353"}], "80/tcp": None}, ["0.0.0.0:5353->53/udp"]),
    ],
)
def test_fixed_host_ports(bindings: dict[str, Any], fixed: list[str]) -> None:
    attrs = plain()
    attrs["HostConfig"]["PortBindings"] = bindings
    assert fixed_host_ports(attrs) == fixed


def test_replica_conflicts_name_the_port_and_the_address() -> None:
    attrs = identity(plain())
    attrs["HostConfig"]["PortBindings"] = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    problems = replica_conflicts(attrs)
    assert problems == [
        "host port 127.0.0.1:8080->80/tcp is fixed (only one container can publish it)",
        "static address net=10.5.0.9 cannot be given twice",
        "static address other=10.6.0.9 cannot be given twice",
    ]
    assert replica_conflicts(BEFORE) == []


# --------------------------------------------------------------------------- compose naming


def named(name: str, number: str) -> dict[str, Any]:
    return {"Name": f"/{name}", "Config": {"Labels": {"com.docker.compose.container-number": number}}}


def test_compose_names() -> None:
    assert compose_name("shop", "web", 3, "v1") == "shop_web_3"
    assert compose_name("_shop", "web", 3, "v1") == "shop_web_3"
    assert compose_name("shop", "web", 3, "v2") == "shop-web-3"


def test_naming_style_follows_existing_containers() -> None:
    assert naming_style("shop", "web", [named("shop_web_1", "1"), named("shop_web_2", "2")]) == "v1"
    assert naming_style("shop", "web", [named("shop-web-1", "1")]) == "v2"
    assert naming_style("shop", "web", [named("my-web", "1")]) is None  # container_name:
    assert naming_style("shop", "web", [named("shop_web_1", "1"), named("shop-web-2", "2")]) is None
    assert naming_style("shop", "web", [named("shop_web_1", "")]) is None


def test_compose_number() -> None:
    assert compose_number(named("x", "7")) == 7
    assert compose_number(named("x", "")) == 0


# --------------------------------------------------------------------------- plans' public form


def test_public_spec_masks_environment_values_only() -> None:
    spec = clone_spec(BEFORE, name="c")
    public = public_spec(spec)
    assert public["body"]["Env"] == ["GREETING=***", "EMPTY=***"]
    assert spec["body"]["Env"] == ["GREETING=hello world", "EMPTY="]  # untouched
    assert {k: v for k, v in public["body"].items() if k != "Env"} == \
        {k: v for k, v in spec["body"].items() if k != "Env"}
    assert same_as_planned(spec, public)
    changed = copy.deepcopy(spec)
    changed["body"]["HostConfig"]["Memory"] = 1
    assert not same_as_planned(changed, public)


def test_same_image_keeps_the_tag_while_it_names_the_same_image() -> None:
    assert same_image(BEFORE, {"paramedic-test/busybox:latest": BEFORE["Image"]}) == "paramedic-test/busybox:latest"
    assert same_image(BEFORE, {"paramedic-test/busybox:latest": "sha256:other"}) == BEFORE["Image"]
    assert same_image(BEFORE, {}) == BEFORE["Image"]
