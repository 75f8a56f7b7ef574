"""The small base types every remediation module builds on.

A remediation is an *action* (``restart``, ``scale``, ``rollback``...) with four calls:

* :meth:`Remediation.inspect` — read only: gathers a JSON-safe snapshot of the target
  (Docker inspect data, operator stops, image history...).
* :meth:`Remediation.plan` — pure: from the target and the snapshot, says whether
  anything would change (``changes``), what exactly (``steps``), or why it must not act
  (``refused``). Plans are unit-tested over recorded snapshots, without Docker.
* :meth:`Remediation.apply` — the only call that changes anything. It receives the plan
  and does what the plan says, nothing else.
* :func:`verify` — re-runs the triggering check until it passes ``success_threshold``
  times in a row or a deadline passes.

Dry-run is decided once, by the executor (which records the plan instead of applying
it); a remediation never looks at a dry-run flag. Remediations call the Docker Engine
API through the docker SDK or run argument lists; never a shell string.

Targets: Docker actions act on a container, a compose service or a Swarm service. A
step may name its target in its params (``container``, ``compose``, ``service``); when
it does not, the target is inherited from the triggering check if that is a
``container`` check. No target means the plan refuses — never "everything".
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field

from agent.kernel.models import Frozen, Resources
from agent.kernel.results import Result, Status
from checks.base import CheckSpec


class Params(Frozen):
    """Base of every action's params model (the ``params:`` of a runbook step)."""


class ComposeRef(Frozen):
    """A compose service: containers labelled ``com.docker.compose.project``/``.service``."""

    project: str = Field(min_length=1)
    service: str = Field(min_length=1)


class TargetParams(Params):
    """Optional explicit target of a Docker action; otherwise the triggering check's."""

    container: str | None = None
    compose: ComposeRef | None = None
    service: str | None = Field(default=None, description="a Swarm service name")
    docker_host: str | None = None


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


def resolve_target(params: Params, check: CheckSpec | None) -> Target:
    """The step's explicit target if it names one, else the triggering container check's."""
    name = check.name if check is not None else None
    if isinstance(params, TargetParams) and (params.container or params.compose or params.service):
        return Target(
            check=name, container=params.container,
            compose_project=params.compose.project if params.compose else None,
            compose_service=params.compose.service if params.compose else None,
            swarm_service=params.service, docker_host=params.docker_host,
        )
    if check is not None and check.type == "container":
        spec: Any = check
        compose = getattr(spec, "compose", None)
        host = params.docker_host if isinstance(params, TargetParams) and params.docker_host else None
        return Target(
            check=name, container=getattr(spec, "container", None), container_id=getattr(spec, "id", None),
            compose_project=compose.project if compose else None,
            compose_service=compose.service if compose else None,
            labels=getattr(spec, "labels", None), docker_host=host or getattr(spec, "docker_host", None),
        )
    return Target(check=name)


@dataclass(frozen=True)
class Plan:
    """What an action would do. ``refused`` set means: do not act, and this is why."""

    action: str
    target: str
    changes: bool
    summary: str
    steps: tuple[str, ...] = ()
    refused: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def refuse(cls, action: str, target: Target, reason: str) -> Plan:
        """A plan that must not be applied, with the reason a person will read."""
        return cls(action, target.describe(), False, f"will not {action} {target.describe()}: {reason}",
                   refused=reason)

    @classmethod
    def nothing(cls, action: str, target: Target, reason: str) -> Plan:
        """A plan with nothing to do (``changes: false``)."""
        return cls(action, target.describe(), False, f"nothing to do for {target.describe()}: {reason}")

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for the journal, ``audit`` and incidents."""
        return {"action": self.action, "target": self.target, "changes": self.changes, "summary": self.summary,
                "steps": list(self.steps), "refused": self.refused, "data": dict(self.data)}


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Remediation.apply` did."""

    ok: bool
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for the journal."""
        return {"ok": self.ok, "message": self.message, "data": dict(self.data)}


def _no_stops() -> Mapping[str, Mapping[str, Any]]:
    return {}


def _no_expect(container: str, seconds: float) -> None:
    return None


def _no_history(target: str) -> Sequence[Mapping[str, Any]]:
    return ()


@dataclass
class ActionContext:
    """What a remediation may use besides its params, injected so tests control it.

    ``operator_stops`` lists containers an operator stopped on purpose (from the store);
    ``expect_events`` tells the Docker event listener that the agent is about to stop or
    restart a container, so those events are not mistaken for an operator's;
    ``image_history`` gives the images a target ran, newest first (for rollback).
    """

    resources: Resources = field(default_factory=Resources)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    operator_stops: Callable[[], Mapping[str, Mapping[str, Any]]] = _no_stops
    expect_events: Callable[[str, float], None] = _no_expect
    image_history: Callable[[str], Sequence[Mapping[str, Any]]] = _no_history


P = TypeVar("P", bound=Params)


class Remediation(ABC, Generic[P]):
    """One action family. Constructed per use with its validated params."""

    action: ClassVar[str]
    params_model: ClassVar[type[Params]]
    #: Steps using this action need ``approval: required`` unless the step says otherwise.
    requires_approval: ClassVar[bool] = False

    def __init__(self, params: P, context: ActionContext | None = None) -> None:
        self.params = params
        self.context = context if context is not None else ActionContext()

    async def inspect(self, target: Target) -> dict[str, Any]:
        """Read-only snapshot of the target; JSON-safe. Default: nothing to read."""
        return {}

    @abstractmethod
    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        """Pure: decide from ``snapshot`` what :meth:`apply` would do, or refuse."""

    @abstractmethod
    async def apply(self, plan: Plan) -> Outcome:
        """Carry out ``plan`` (never called for a refused or no-change plan)."""


@dataclass(frozen=True)
class Verification:
    """Did the triggering check pass ``success_threshold`` times in a row before the deadline."""

    ok: bool
    passes: int
    runs: int
    elapsed_s: float
    last_status: str
    last_message: str

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for the journal."""
        return {"ok": self.ok, "passes": self.passes, "runs": self.runs, "elapsed_s": round(self.elapsed_s, 3),
                "last_status": self.last_status, "last_message": self.last_message}


async def verify(
    run_check: Callable[[], Awaitable[Result]],
    success_threshold: int,
    deadline_s: float,
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Verification:
    """Re-run the check until ``success_threshold`` consecutive passes, or ``deadline_s`` passes.

    A pass is OK or WARNING (the service answers). Runs are spaced by ``interval_s``; the
    first run is immediate.
    """
    start = clock()
    passes = runs = 0
    last: Result | None = None
    while True:
        last = await run_check()
        runs += 1
        passes = passes + 1 if last.status in (Status.OK, Status.WARNING) else 0
        if passes >= success_threshold:
            return Verification(True, passes, runs, clock() - start, last.status.name, last.message)
        if clock() - start + interval_s > deadline_s:
            return Verification(False, passes, runs, clock() - start, last.status.name, last.message)
        await sleep(interval_s)
