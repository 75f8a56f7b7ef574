"""Targets: what a decision acts on, its de-duplication key and its blast-radius groups.

Computed here, once, for the whole engine: the remedy driver (one decision at a time per
target, the ladder of each runbook and target), the executor (what a step acts on), the
guardrails (blast-radius groups; several checks of one container count once), the
incident layer (the dedup key, the evidence's target) and deploy tracking (the key an
image is recorded under) all ask these functions.

What differs between probe types arrives through hooks, never a test of ``type``:

* ``CheckSpec.docker_target()``: the Docker selection a check names, or None;
* ``Params.named_target()`` / ``Params.named_docker_host()``: what a runbook step names in
  its own params.

A step's explicit target wins; else the check's own Docker selection (on the step's
``docker_host`` if it names one); else the target is the check itself (``check NAME``),
which a Docker action refuses to act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from agent.kernel.targets import Target

if TYPE_CHECKING:
    from agent.config.model import Runbook
    from checks.base import CheckSpec


class StepParams(Protocol):
    """What target resolution needs of a step's params (``remediations.base.Params``)."""

    def named_target(self) -> Target | None: ...

    def named_docker_host(self) -> str | None: ...


def resolve_target(params: StepParams | None, check: CheckSpec | None) -> Target:
    """The step's explicit target if it names one, else the check's Docker selection, else the check."""
    name = check.name if check is not None else None
    named = params.named_target() if params is not None else None
    if named is not None:
        return replace(named, check=name)
    own = check.docker_target() if check is not None else None
    if own is not None:
        host = params.named_docker_host() if params is not None else None
        return replace(own, check=name, docker_host=host or own.docker_host)
    return Target(check=name)


def check_target(check: CheckSpec) -> Target:
    """What the check itself names (no step): its Docker selection, or the check."""
    return resolve_target(None, check)


def runbook_target(book: Runbook, check: CheckSpec) -> Target:
    """What ``book`` acts on for ``check``: its first step's target (the check when it has no step)."""
    return resolve_target(book.steps[0].typed_params, check) if book.steps else Target(check=check.name)


def target_key(book: Runbook, check: CheckSpec) -> str:
    """The key of one decision about ``check`` under ``book``: busy set, ladder, dedup key."""
    return runbook_target(book, check).key if book.steps else check.name


def dedup_key(runbook: str, target: str) -> str:
    """The incident's name for its whole life: one per runbook and target."""
    return f"runbook:{runbook}/target:{target}"


def target_keys(checks: Iterable[CheckSpec]) -> dict[str, str]:
    """Each check that names a Docker selection, by name: its target key (for the blast radius,
    where several checks of one container count once, and for held checks)."""
    return {c.name: check_target(c).key for c in checks if c.docker_target() is not None}


def target_groups(target: Target | None) -> frozenset[str]:
    """The blast-radius groups a target belongs to: ``compose:<project>`` and
    ``service:<project>/<service>``, ``labels:<k=v,...>``, ``swarm:<name>``."""
    if target is None:
        return frozenset()
    groups: set[str] = set()
    if target.compose_project:
        groups.add(f"compose:{target.compose_project}")
        if target.compose_service:
            groups.add(f"service:{target.compose_project}/{target.compose_service}")
    if target.labels:
        groups.add("labels:" + ",".join(f"{k}={v}" for k, v in sorted(target.labels.items())))
    if target.swarm_service:
        groups.add(f"swarm:{target.swarm_service}")
    return frozenset(groups)


def blast_groups(check: CheckSpec, target: Target | None = None) -> frozenset[str]:
    """The blast-radius groups of a check (and of a resolved target, when given).

    ``tag:<tag>`` for each tag, and the groups of the check's own Docker selection and of
    ``target`` (:func:`target_groups`).
    """
    return frozenset({f"tag:{tag}" for tag in check.tags}) | target_groups(check.docker_target()) \
        | target_groups(target)


__all__ = [
    "StepParams",
    "Target",
    "blast_groups",
    "check_target",
    "dedup_key",
    "resolve_target",
    "runbook_target",
    "target_groups",
    "target_key",
    "target_keys",
]
