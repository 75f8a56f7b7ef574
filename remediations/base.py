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
step may name its target in its params (``container``, ``compose``, ``service``: the
:meth:`Params.named_target` hook); when it does not, the target is the Docker selection the
triggering check names, if any (``CheckSpec.docker_target()``). ``agent.core.targets``
resolves it, once, for the whole engine. No target means the plan refuses — never
"everything".
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
from agent.kernel.targets import Target as Target  # re-exported: what every action acts on


class Params(Frozen):
    """Base of every action's params model (the ``params:`` of a runbook step)."""

    def named_target(self) -> Target | None:
        """The Docker target this step names in its own params (None: the triggering check's).

        A hook, read by ``agent.core.targets.resolve_target``; :class:`TargetParams` names one.
        """
        return None

    def named_docker_host(self) -> str | None:
        """The Docker host this step names for the check's own target (None: the check's)."""
        return None


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

    def named_target(self) -> Target | None:
        """``container``, ``compose`` or ``service`` when one is set (with ``docker_host``)."""
        if not (self.container or self.compose or self.service):
            return None
        return Target(
            container=self.container,
            compose_project=self.compose.project if self.compose else None,
            compose_service=self.compose.service if self.compose else None,
            swarm_service=self.service, docker_host=self.docker_host,
        )

    def named_docker_host(self) -> str | None:
        return self.docker_host or None


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
