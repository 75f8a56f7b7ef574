"""The one explicit registry of probe types and remediation actions: ``name -> "module:Class"``.

Modules are imported only when a config uses their type, so ``paramedic check`` of two
HTTP probes never imports the Docker SDK or psycopg. Probe modules keep heavy libraries
inside functions for the same reason: importing a module for its spec model (to
validate a config) must stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # the check path must not pay for importing the remediation layer
    from checks.base import CheckSpec, Probe
    from remediations.base import Remediation

CHECK_TYPES: dict[str, str] = {
    "http": "checks.http:HttpProbe",
    "tcp": "checks.tcp:TcpProbe",
    "postgres": "checks.postgres:PostgresProbe",
    "redis": "checks.redis:RedisProbe",
    "container": "checks.container:ContainerProbe",
    "prometheus": "checks.prometheus:PrometheusProbe",
    "tls": "checks.tls:TlsProbe",
    "disk": "checks.disk:DiskProbe",
}


ACTION_TYPES: dict[str, str] = {
    "restart": "remediations.restart:Restart",
    "start": "remediations.restart:Start",
    "recreate": "remediations.recreate:Recreate",
    "scale": "remediations.scale:Scale",
    "rollback": "remediations.rollback:Rollback",
    "postgres.terminate": "remediations.postgres:Terminate",
    "docker.prune": "remediations.prune:Prune",
    "webhook": "remediations.webhook:Webhook",
    "exec": "remediations.exec:Exec",
}


class UnknownTypeError(KeyError):
    """A config names a probe type that is not registered."""


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def probe_class(type_name: str) -> type[Probe[Any]]:
    """The probe class for ``type_name``; raises :class:`UnknownTypeError` if unregistered."""
    try:
        target = CHECK_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(CHECK_TYPES))
        raise UnknownTypeError(f"unknown check type {type_name!r} (known: {known})") from None
    return cast("type[Probe[Any]]", _load(target))


def spec_model(type_name: str) -> type[CheckSpec]:
    """The frozen pydantic model that validates a check of ``type_name``."""
    return probe_class(type_name).spec_model


def action_class(action: str) -> type[Remediation[Any]]:
    """The remediation class for ``action``; raises :class:`UnknownTypeError` if unregistered."""
    try:
        target = ACTION_TYPES[action]
    except KeyError:
        known = ", ".join(sorted(ACTION_TYPES))
        raise UnknownTypeError(f"unknown action {action!r} (known: {known})") from None
    return cast("type[Remediation[Any]]", _load(target))
