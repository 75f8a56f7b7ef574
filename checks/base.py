"""The small base types every probe module builds on.

A probe type is a pair: a frozen pydantic *spec* (subclass of :class:`CheckSpec`, with a
``type: Literal["<name>"]`` field and its own settings) and a *probe* class (subclass of
:class:`Probe`) whose only I/O is :meth:`Probe.observe`. The engine applies the hard
timeout, evaluates conditions, and turns exceptions into results; a probe only gathers
observations, or raises an ``agent.kernel.errors.ProbeError`` that says whether the target is
failing (CRITICAL) or the agent cannot tell (UNKNOWN).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field, PrivateAttr, field_validator, model_validator

from agent.kernel.conditions import CompiledCondition, Severity, compile_condition
from agent.kernel.durations import Duration, positive
from agent.kernel.models import Frozen, Resources
from agent.kernel.targets import Target

if TYPE_CHECKING:
    from pydantic import GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema


class ConditionSpec(Frozen):
    """One condition: ``"latency_ms < 500"`` or ``{expr: "...", severity: warning}``."""

    expr: str
    severity: Severity | None = None  # None: the check's own ``severity``
    _compiled: CompiledCondition = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"expr": value} if isinstance(value, str) else value

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """A string is a condition too (``paramedic schema``): ``"latency_ms < 500"``."""
        return {"anyOf": [{"type": "string", "description": "an expression, e.g. latency_ms < 500"},
                          handler(core_schema)]}

    @field_validator("expr")
    @classmethod
    def _parses(cls, value: str) -> str:
        compile_condition(value)
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._compiled = compile_condition(self.expr, self.severity or "critical")

    @property
    def compiled(self) -> CompiledCondition:
        """The parsed expression, ready to evaluate."""
        return self._compiled


class RetrySpec(Frozen):
    """Retries inside one probe run (distinct from ``failure_threshold``, which counts runs)."""

    attempts: int = Field(default=1, ge=1, le=10)
    backoff: Duration = 0.2
    max_backoff: Duration = 2.0


#: ``retry_interval`` when a check does not set it: this fraction of the interval, at most
#: :data:`MAX_DEFAULT_RETRY_INTERVAL` (see :attr:`CheckSpec.retry_delay`).
DEFAULT_RETRY_FRACTION = 0.05
MAX_DEFAULT_RETRY_INTERVAL = 1.0


class CheckSpec(Frozen):
    """Settings every check has. Probe modules subclass it and add ``type`` and their own."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
    type: str
    interval: Duration = 30.0
    #: How soon paramedic looks again when the check seems to be failing, while it is not yet
    #: DOWN: the next run starts this long after a failed run instead of at the next
    #: ``interval`` (Nagios' retry_interval), and a run still unanswered this long (and longer
    #: than the check usually takes) gets another run alongside it (agent.core.pacing). None: a
    #: twentieth of the interval, at most 1 s. Never later than the interval.
    retry_interval: Duration | None = None
    timeout: Duration = 5.0
    failure_threshold: int = Field(default=3, ge=1)
    success_threshold: int = Field(default=2, ge=1)
    severity: Severity = "critical"
    tags: tuple[str, ...] = ()
    conditions: tuple[ConditionSpec, ...] = ()
    retries: RetrySpec = Field(default_factory=RetrySpec)
    description: str = ""
    depends_on: tuple[str, ...] = ()  # checks whose DOWN makes this one's remediation wait

    #: Conditions applied when the config lists none (e.g. ``status_code < 400`` for http).
    default_conditions: ClassVar[tuple[str, ...]] = ()

    _positive_timeout = positive("timeout")

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: float) -> float:
        if value < 0.1:
            raise ValueError("interval must be at least 100ms")
        return value

    @property
    def retry_delay(self) -> float:
        """Seconds from a failed run (not yet DOWN) to the next: ``retry_interval``, capped at ``interval``.

        The default scales with the interval: a check run every second is confirmed within
        50 ms (the operator asked for fast detection), one run every 30 s within 1 s.
        """
        if self.retry_interval is None:
            return min(self.interval * DEFAULT_RETRY_FRACTION, MAX_DEFAULT_RETRY_INTERVAL)
        return min(self.retry_interval, self.interval)

    def effective_conditions(self) -> tuple[CompiledCondition, ...]:
        """The configured conditions, or the probe type's defaults when none are set."""
        if self.conditions:
            return tuple(self._with_severity(c) for c in self.conditions)
        return tuple(compile_condition(text, self.severity) for text in self.default_conditions)

    def _with_severity(self, condition: ConditionSpec) -> CompiledCondition:
        """A condition without its own severity takes the check's (``severity: warning`` checks)."""
        if condition.severity is None and self.severity != condition.compiled.severity:
            return replace(condition.compiled, severity=self.severity)
        return condition.compiled

    def target(self) -> str:
        """A short, secret-free description of what this check probes (for tables and logs)."""
        return self.type

    # ------------------------------------------------------------------ hooks for the engine
    # What differs between probe types, asked of the spec (``agent.core.targets``, the Docker
    # event listener, deploy tracking) instead of the engine testing ``type``.

    #: Whether the Docker event listener serves this check: its spec then also has
    #: ``docker_host`` and ``selects(name, container_id, labels)``, and ``single`` when one
    #: container's event is itself a result (``agent.runtime.events``).
    watches_docker_events: ClassVar[bool] = False

    def docker_target(self) -> Target | None:
        """The Docker selection this check names (``check`` unset), or None.

        What a Docker action acts on when its step names no target, what the check's
        blast-radius groups and image history are keyed by.
        """
        return None

    def deployed_images(self, observations: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """``(image, image_id)`` of each running container in one result's observations
        (deploy tracking, for rollback); empty for probes that see no images."""
        return ()


SpecT = TypeVar("SpecT", bound=CheckSpec)
Observations = Mapping[str, Any]
T = TypeVar("T")


class Probe(ABC, Generic[SpecT]):
    """One configured check's I/O. Constructed once per check; ``observe`` runs per probe.

    Shared, expensive resources (an HTTP connector, a Docker client) are passed in through
    the constructor so tests and the daemon can inject them; a probe never creates a
    client per run.
    """

    spec_model: ClassVar[type[CheckSpec]]
    #: The modules :meth:`observe` imports inside the function (so that validating a config,
    #: or a check of other types, never pays for them). The runner imports them before any
    #: probe starts its clock: an import on the shared loop would otherwise be billed to the
    #: latency of every probe in flight (an HTTP ``latency_ms`` of 150 ms instead of 3).
    lazy_imports: ClassVar[tuple[str, ...]] = ()
    #: What :meth:`evidence` collects, as the incident's timeline names it
    #: (``"pg_stat_activity"``); None: this probe type has no evidence hook.
    evidence_label: ClassVar[str | None] = None
    #: ``"failing"``: collected for the failing check only; ``"every"``: for every check of
    #: this type (a query's current value says something whatever failed), at most
    #: ``incidents.evidence.prometheus_queries`` of them.
    evidence_scope: ClassVar[Literal["failing", "every"]] = "failing"

    def __init__(self, spec: SpecT, resources: Resources | None = None) -> None:
        self.spec = spec
        self.resources = resources if resources is not None else Resources()

    @abstractmethod
    async def observe(self) -> dict[str, Any]:
        """Gather observations, or raise an ``agent.kernel.errors.ProbeError``.

        Must honour cancellation: the engine cancels it when the check's timeout passes,
        and it must release sockets and threads when that happens.
        """

    async def evidence(self, timeout: float) -> str:
        """Read-only facts from the server this probe knows, for an incident opening.

        A hook: probe types that set :attr:`evidence_label` implement it. The engine runs
        it under ``timeout`` (also given here for the probe's own budget), passes the
        output through the config's redactor and cuts it to size; an exception becomes
        one line of evidence saying what could not be collected.
        """
        raise NotImplementedError(f"{type(self).__name__} has no evidence hook")

    async def close(self) -> None:
        """Release resources held across runs. Called once when the check is dropped."""


def literal_type(spec: type[CheckSpec]) -> str:
    """The ``type`` literal a spec model declares (``"http"`` for ``HttpSpec``)."""
    annotation = spec.model_fields["type"].annotation
    args: tuple[object, ...] = getattr(annotation, "__args__", ())
    first = args[0] if len(args) == 1 else None
    if not isinstance(first, str):
        raise TypeError(f"{spec.__name__}.type must be a single Literal string")
    return first


__all__ = [
    "CheckSpec",
    "ConditionSpec",
    "Frozen",
    "Literal",
    "Observations",
    "Probe",
    "Resources",
    "RetrySpec",
    "literal_type",
]
