"""Create a container "like the existing one": a pure function from ``docker inspect`` data.

``recreate``, ``rollback`` and ``scale`` all need a new container configured like an
existing one. :func:`clone_spec` turns the existing container's inspect attrs (what
``container.attrs`` / ``client.api.inspect_container`` return) into the exact Engine API
request that creates it again, as JSON (it goes into the plan, hence the journal)::

    {"name": "shop_web_2",
     "body": {<Config fields>, "HostConfig": {...}, "NetworkingConfig": {"EndpointsConfig": {primary: {...}}}},
     "connect": [{"network": "shop_back", "aliases": [...], "links": {...}, ...}],   # the other networks
     "notes": ["..."]}                                                               # what was adjusted, and why

``apply`` sends ``body`` with ``client.api.create_container_from_config(body, name)``
(the SDK's public call that posts a create body unchanged), then
``client.api.connect_container_to_network(id, network, **entry)`` for each ``connect``
entry, then starts the container (:func:`create_container` does the first two).

Why the raw Engine API body rather than ``create_container`` + ``create_host_config``
keyword arguments: inspect's ``HostConfig`` *is* the create body's ``HostConfig`` (same
names, same shapes), so copying it keeps every setting Docker has (ulimits, devices,
sysctls, shm size, security options, log config, init, tmpfs...), including ones this
module has never heard of, whereas a translation to keyword arguments drops whatever it
does not list and has its own quirks (``ports=["80/tcp"]`` becomes ``80/tcp/tcp``;
``use_config_proxy`` injects proxy variables into ``Env``). Only what must change is
changed, field by field:

========================  ================================================================
inspect field             in the new container
========================  ================================================================
``Config.Image``          ``image`` when given (rollback), else the same reference
``Config.Hostname``       omitted when it is Docker's default (the old id's first 12 chars):
                          the new container gets its own; kept when someone set it;
                          omitted for ``host``/``container:`` network modes (Docker refuses it)
``Config.MacAddress``     kept (recreate) / dropped (a replica would collide)
``Config.Labels``         kept; ``labels`` overrides/adds (container-number, rollback-from)
``Config.*`` the rest     Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Volumes,
                          Healthcheck, StopSignal, StopTimeout, Shell, Tty, OpenStdin... kept
``HostConfig``            copied whole except: ``ContainerIDFile`` dropped; ``Links``
                          (``/a:/me/alias`` in inspect) rewritten as ``a:alias``; anonymous
                          volumes re-attached (recreate, below)
``NetworkSettings``       ``Networks``: the ``NetworkMode`` network goes in
                          ``NetworkingConfig`` (API < 1.44 takes one), the others in
                          ``connect``; each keeps ``Aliases`` (compose's service name and
                          extra aliases) minus the old short id (Docker adds the new one),
                          ``Links``, ``DriverOpts`` and ``IPAMConfig`` (static addresses;
                          recreate only)
========================  ================================================================

Two modes:

* ``replica=False`` (recreate, rollback): the new container *replaces* the old one. The
  old one's anonymous volumes (``-v /data``, an image's ``VOLUME``) are re-attached by
  name, as ``docker-compose up`` does on recreate, so no data is lost; a static IP or
  MAC address is kept (the old container, stopped, has released it).
* ``replica=True`` (scale): the new container runs *beside* the old one: anonymous
  volumes are fresh, an explicit MAC address is dropped. What cannot be duplicated at
  all (a fixed host port, a static IP) is listed by :func:`replica_conflicts`, and the
  caller refuses rather than creating a container that cannot start.

Image defaults (``image_config``, the ``Config`` of the image the old container was
created from): inspect's ``Config`` merges the image's defaults with the container's own
settings. When the image changes (rollback), copying the merged values would pin the old
image's ``CMD``, ``ENV``, labels... onto the new image. So a value equal to the old
image's default is treated as inherited and left out, and the new image supplies its
own. (A container that set a value *equal* to its image's default cannot be told apart;
for the same image the result is identical either way.) One Docker rule is kept: a
container created with its own ``Entrypoint`` gets no ``CMD`` from the image, so when
the entrypoint is sent, ``Cmd`` is always sent too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from agent.kernel.redact import MASK

COMPOSE_NUMBER = "com.docker.compose.container-number"
#: Label a rollback puts on the container it creates: the image id it rolled back *from*.
LABEL_ROLLBACK_FROM = "paramedic.rollback-from"

#: ``Config`` fields copied as they are (subject to the image-default rule).
_CONFIG_FIELDS = (
    "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin",
    "StdinOnce", "Env", "Cmd", "Healthcheck", "Volumes", "WorkingDir", "Entrypoint",
    "NetworkDisabled", "Labels", "StopSignal", "StopTimeout", "Shell", "ExposedPorts",
)
#: ``Config`` fields that an image's default may supply as a whole value.
_WHOLE_DEFAULTS = ("WorkingDir", "User", "StopSignal", "Shell", "Healthcheck", "StopTimeout")
_SPECIAL_MODES = ("host", "none")


# --------------------------------------------------------------------------- small readers


def container_name(attrs: Mapping[str, Any]) -> str:
    """The container's name without Docker's leading ``/``."""
    return str(attrs.get("Name") or "").lstrip("/")


def short_id(attrs: Mapping[str, Any]) -> str:
    """The first 12 characters of the container id (Docker's default hostname and alias)."""
    return str(attrs.get("Id") or "")[:12]


def labels_of(attrs: Mapping[str, Any]) -> dict[str, str]:
    """``Config.Labels`` (never None)."""
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def network_mode(attrs: Mapping[str, Any]) -> str:
    """``HostConfig.NetworkMode`` (``default`` when unset)."""
    return str((attrs.get("HostConfig") or {}).get("NetworkMode") or "default")


def fixed_host_ports(attrs: Mapping[str, Any]) -> list[str]:
    """Published ports bound to a fixed host port, as ``127.0.0.1:8080->80/tcp``.

    ``HostPort: ""`` (or ``"0"``) is an ephemeral port Docker picks at start: two
    containers never collide on those.
    """
    bindings: Mapping[str, Any] = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    found = []
    for port, entries in sorted(bindings.items()):
        for entry in entries or []:
            host_port = str((entry or {}).get("HostPort") or "")
            if host_port and host_port != "0":
                ip = str((entry or {}).get("HostIp") or "") or "0.0.0.0"
                found.append(f"{ip}:{host_port}->{port}")
    return found


def static_addresses(attrs: Mapping[str, Any]) -> list[str]:
    """Static IPs set on the container's networks, as ``net=10.0.0.5``."""
    found = []
    networks: Mapping[str, Any] = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    for net, endpoint in sorted(networks.items()):
        ipam = (endpoint or {}).get("IPAMConfig") or {}
        for key in ("IPv4Address", "IPv6Address"):
            if ipam.get(key):
                found.append(f"{net}={ipam[key]}")
    return found


def replica_conflicts(attrs: Mapping[str, Any]) -> list[str]:
    """Why a second container like this one could not run beside it (empty: it can).

    A fixed published host port is taken by the first container, and a static IP
    address cannot be given twice; starting a copy would fail (or steal the address).
    """
    problems = [f"host port {p} is fixed (only one container can publish it)" for p in fixed_host_ports(attrs)]
    problems += [f"static address {a} cannot be given twice" for a in static_addresses(attrs)]
    return problems


def anonymous_volumes(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The container's anonymous volumes: volume mounts that no bind or mount names.

    These come from ``Config.Volumes`` (``-v /data``, an image's ``VOLUME``) and get a
    random name at create; ``[{"name", "destination", "rw"}]``.
    """
    host: Mapping[str, Any] = attrs.get("HostConfig") or {}
    named = {str(b).split(":", 1)[0] for b in host.get("Binds") or [] if not str(b).startswith("/")}
    named |= {str(m.get("Source")) for m in host.get("Mounts") or [] if m.get("Type") == "volume" and m.get("Source")}
    out = []
    for mount in attrs.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Name") and mount["Name"] not in named:
            out.append({"name": str(mount["Name"]), "destination": str(mount.get("Destination") or ""),
                        "rw": bool(mount.get("RW", True))})
    return out


# --------------------------------------------------------------------------- the clone


def clone_spec(
    attrs: Mapping[str, Any],
    *,
    name: str,
    image: str | None = None,
    image_config: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    replica: bool = False,
) -> dict[str, Any]:
    """The create request for a container like ``attrs`` (see the module docstring).

    ``name``: the new container's name. ``image``: another image reference (rollback),
    else ``Config.Image``. ``image_config``: the ``Config`` of the image ``attrs`` was
    created from (its defaults are left for the new image to supply). ``labels``: set or
    override these labels. ``replica``: a sibling (scale) rather than a replacement.

    Pure: no I/O; the result is JSON-safe and never shares objects with ``attrs``.
    """
    notes: list[str] = []
    config = _config(attrs, image, image_config, labels, replica, notes)
    host_config = _host_config(attrs, replica, notes)
    endpoints, connect = _networks(attrs, replica)
    body = dict(config)
    body["HostConfig"] = host_config
    body["NetworkingConfig"] = {"EndpointsConfig": endpoints}
    return {"name": name, "body": body, "connect": connect, "notes": notes}


def _config(
    attrs: Mapping[str, Any],
    image: str | None,
    image_config: Mapping[str, Any] | None,
    labels: Mapping[str, str] | None,
    replica: bool,
    notes: list[str],
) -> dict[str, Any]:
    source: Mapping[str, Any] = attrs.get("Config") or {}
    out: dict[str, Any] = {key: copy.deepcopy(source[key]) for key in _CONFIG_FIELDS if key in source}
    out["Image"] = image or str(source.get("Image") or attrs.get("Image") or "")
    mode = network_mode(attrs)
    hostname = str(source.get("Hostname") or "")
    shared_ns = mode == "host" or mode.startswith("container:")
    if hostname and hostname != short_id(attrs) and not shared_ns:
        out["Hostname"] = hostname
    if shared_ns:
        out.pop("Domainname", None)
    mac = str(source.get("MacAddress") or "")
    if mac and not replica:
        out["MacAddress"] = mac
    elif mac:
        notes.append(f"MAC address {mac} not copied: a second container cannot have it")
    if image_config is not None:
        _drop_image_defaults(out, image_config, attrs)
    merged = dict(out.get("Labels") or {})
    merged.update(labels or {})
    out["Labels"] = merged
    return out


def _drop_image_defaults(out: dict[str, Any], image_config: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    """Leave out what the old image supplied, so that a new image supplies its own."""
    entrypoint_sent = out.get("Entrypoint") != image_config.get("Entrypoint")
    if not entrypoint_sent:
        out.pop("Entrypoint", None)
        if out.get("Cmd") == image_config.get("Cmd"):
            out.pop("Cmd", None)
    for key in _WHOLE_DEFAULTS:
        if key in out and out[key] == image_config.get(key):
            out.pop(key)
    image_env = set(image_config.get("Env") or [])
    if "Env" in out:
        out["Env"] = [e for e in out["Env"] or [] if e not in image_env]
    image_labels = image_config.get("Labels") or {}
    if "Labels" in out:
        out["Labels"] = {k: v for k, v in (out["Labels"] or {}).items() if image_labels.get(k) != v}
    bound = set(((attrs.get("HostConfig") or {}).get("PortBindings") or {}).keys())
    for key, keep in (("ExposedPorts", bound), ("Volumes", set())):
        if key in out:
            inherited = set((image_config.get(key) or {}).keys()) - keep
            out[key] = {k: v for k, v in (out[key] or {}).items() if k not in inherited}
    for key in ("Env", "ExposedPorts", "Volumes"):
        if key in out and not out[key]:
            out.pop(key)


def _host_config(attrs: Mapping[str, Any], replica: bool, notes: list[str]) -> dict[str, Any]:
    host: dict[str, Any] = copy.deepcopy(dict(attrs.get("HostConfig") or {}))
    host.pop("ContainerIDFile", None)
    if host.get("Links"):
        host["Links"] = [_link(entry) for entry in host["Links"]]
    if replica:
        return host
    binds = list(host.get("Binds") or [])
    mounts = list(host.get("Mounts") or [])
    for volume in anonymous_volumes(attrs):
        target = next((m for m in mounts if m.get("Type") == "volume" and m.get("Target") == volume["destination"]),
                      None)
        if target is not None:
            target["Source"] = volume["name"]
        else:
            binds.append(f"{volume['name']}:{volume['destination']}" + ("" if volume["rw"] else ":ro"))
        notes.append(f"anonymous volume {volume['name'][:12]} at {volume['destination']} kept")
    if binds:
        host["Binds"] = binds
    if mounts:
        host["Mounts"] = mounts
    return host


def _link(entry: str) -> str:
    """Inspect's ``/db:/web/database`` as the create form ``db:database``."""
    target, _, alias = str(entry).partition(":")
    return f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}" if alias else target.lstrip("/")


def _networks(attrs: Mapping[str, Any], replica: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(EndpointsConfig for create, connect entries)``; nothing for host/none/container: modes."""
    mode = network_mode(attrs)
    if mode in _SPECIAL_MODES or mode.startswith("container:"):
        return {}, []
    primary = "bridge" if mode == "default" else mode
    networks: Mapping[str, Any] = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    old_id = short_id(attrs)
    endpoints: dict[str, Any] = {}
    connect: list[dict[str, Any]] = []
    for net in sorted(networks):
        endpoint = networks[net] or {}
        aliases = [a for a in endpoint.get("Aliases") or [] if a != old_id]
        links = [str(x) for x in endpoint.get("Links") or []]
        ipam = {} if replica else {k: v for k, v in (endpoint.get("IPAMConfig") or {}).items() if v}
        driver_opts = dict(endpoint.get("DriverOpts") or {})
        if net == primary:
            settings: dict[str, Any] = {}
            if aliases:
                settings["Aliases"] = aliases
            if links:
                settings["Links"] = links
            if ipam:
                settings["IPAMConfig"] = ipam
            if driver_opts:
                settings["DriverOpts"] = driver_opts
            endpoints[net] = settings
            continue
        entry: dict[str, Any] = {"network": net}
        if aliases:
            entry["aliases"] = aliases
        if links:
            entry["links"] = dict(_split_link(x) for x in links)
        if ipam.get("IPv4Address"):
            entry["ipv4_address"] = ipam["IPv4Address"]
        if ipam.get("IPv6Address"):
            entry["ipv6_address"] = ipam["IPv6Address"]
        if ipam.get("LinkLocalIPs"):
            entry["link_local_ips"] = list(ipam["LinkLocalIPs"])
        if driver_opts:
            entry["driver_opt"] = driver_opts
        connect.append(entry)
    if primary not in endpoints:
        endpoints[primary] = {}
    return endpoints, connect


def _split_link(link: str) -> tuple[str, str]:
    target, _, alias = link.partition(":")
    return target, alias or target


def public_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with every environment value masked (``DB_PASSWORD=***``): what a plan shows.

    Containers keep secrets in their environment, and plans go to the journal, the audit
    output and incidents. So plans hold this form, and ``apply`` rebuilds the real spec
    from a fresh inspect, checking that its public form is still the planned one
    (:func:`same_as_planned`): the container has not changed since the plan was made.
    """
    out = copy.deepcopy(dict(spec))
    body = out.get("body") or {}
    if body.get("Env"):
        body["Env"] = [f"{str(e).partition('=')[0]}={MASK}" for e in body["Env"]]
    return out


def same_as_planned(spec: Mapping[str, Any], planned: Mapping[str, Any]) -> bool:
    """Whether a freshly rebuilt ``spec`` is the one a plan showed (in its public form)."""
    return public_spec(spec) == dict(planned)


def same_image(attrs: Mapping[str, Any], refs: Mapping[str, Any]) -> str:
    """The image to create a copy from: the container's own reference (``app:latest``) while
    it still names the container's image id (``refs``: reference -> id, from the snapshot),
    else that id, so a tag re-pointed since (a deploy that has not happened yet) is not
    deployed by the copy."""
    ref = str((attrs.get("Config") or {}).get("Image") or "")
    image_id = str(attrs.get("Image") or "")
    return ref if ref and refs.get(ref) == image_id else image_id or ref


# --------------------------------------------------------------------------- compose naming


def compose_name(project: str, service: str, number: int, style: str) -> str:
    """A compose container name: ``v1`` ``<project>_<service>_<n>``, ``v2`` ``<project>-<service>-<n>``.

    Compose v1 (Debian's ``docker-compose`` 1.29, ``build_container_name``) strips leading
    ``-``/``_`` from the project name and joins with ``_``; compose v2 joins with ``-``.
    """
    if style == "v2":
        return f"{project}-{service}-{number}"
    return f"{project.lstrip('-_')}_{service}_{number}"


def naming_style(project: str, service: str, containers: Iterable[Mapping[str, Any]]) -> str | None:
    """``"v1"``/``"v2"``: the naming the service's existing containers follow; None if neither.

    None means the names were chosen by hand (compose's ``container_name:``), and
    compose itself refuses to scale such a service.
    """
    styles = set()
    for attrs in containers:
        number = labels_of(attrs).get(COMPOSE_NUMBER, "")
        if not number.isdigit():
            return None
        name = container_name(attrs)
        if name == compose_name(project, service, int(number), "v1"):
            styles.add("v1")
        elif name == compose_name(project, service, int(number), "v2"):
            styles.add("v2")
        else:
            return None
    return styles.pop() if len(styles) == 1 else None


def compose_number(attrs: Mapping[str, Any]) -> int:
    """``com.docker.compose.container-number`` (0 when missing or not a number)."""
    value = labels_of(attrs).get(COMPOSE_NUMBER, "")
    return int(value) if value.isdigit() else 0
