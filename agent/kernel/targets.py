"""What an action acts on: a :class:`Target`, the vocabulary probes, actions and the engine share.

A check spec names its Docker selection through the ``CheckSpec.docker_target()`` hook,
a step's params name an explicit one through ``Params.named_target()``; which one a
decision acts on, its de-duplication key and its blast-radius groups are computed once, in
``agent.core.targets``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """What an action acts on. Exactly one of the selectors is set for Docker targets."""

    check: str | None = None
    container: str | None = None
    container_id: str | None = None
    compose_project: str | None = None
    compose_service: str | None = None
    labels: Mapping[str, str] | None = None
    swarm_service: str | None = None
    docker_host: str | None = None

    def describe(self) -> str:
        """``container app-1`` / ``compose service shop/web`` / ``swarm service web``."""
        if self.container:
            return f"container {self.container}"
        if self.container_id:
            return f"container {self.container_id[:12]}"
        if self.compose_project and self.compose_service:
            return f"compose service {self.compose_project}/{self.compose_service}"
        if self.swarm_service:
            return f"swarm service {self.swarm_service}"
        if self.labels:
            return "containers labelled " + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"check {self.check}" if self.check else "nothing"

    @property
    def key(self) -> str:
        """A stable identifier for guardrail counters and the journal."""
        return self.describe()

    @property
    def is_docker(self) -> bool:
        """True when some Docker selector is set."""
        return any((self.container, self.container_id, self.compose_service, self.swarm_service, self.labels))


__all__ = ["Target"]
