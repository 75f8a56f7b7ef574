"""The models of the config's optional sections: ``guardrails``, ``maintenance``, ``incidents``, ``notifications``.

Why a module of their own: cold start. A cron ``paramedic check`` starts a fresh
interpreter every time, and defining these ~20 pydantic models costs it about as much as
the rest of :mod:`agent.config.model` together, for sections a plain check never reads.
:mod:`agent.config.model` imports this module only when a config has one of these sections, or
when ``Config.guardrails`` / ``Config.incidents`` / ``Config.notifications`` is first read
without one (the defaults below); code that works with these sections (guardrails,
incidents, notifiers, the daemon) imports its types from here.

The contract is :mod:`agent.config.model`'s: unknown keys are errors, every problem is reported
with its path (``guardrails.per_target.window: window must be greater than 0``), and an
absent section means every default below.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.kernel.durations import Duration, positive
from agent.kernel.literals import SevLevel
from agent.kernel.models import Frozen
from agent.notify.specs import (
    ChannelBase,
    ChannelSpec,
    NotifyRetry,
)

# --------------------------------------------------------------------------- guardrails


class BackoffSettings(Frozen):
    """Delay between attempts on one target: ``base * factor**(n-1)``, capped at ``max``, ±``jitter``."""

    base: Duration = 30.0
    factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max: Duration = 600.0
    jitter: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _max_not_below_base(self) -> BackoffSettings:
        if self.max < self.base:
            raise ValueError("max must not be smaller than base")
        return self


class PerTargetLimits(Frozen):
    """At most ``budget`` actions per target in ``window``; spent means given up until healthy again."""

    budget: int = Field(default=3, ge=1)
    window: Duration = 1800.0
    cooldown: Duration = 120.0
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)
    reset_after: Duration = 1800.0

    _positive_window = positive("window")


class GlobalLimits(Frozen):
    """Limits across every target of this agent."""

    max_per_hour: int = Field(default=20, ge=1)
    max_concurrent: int = Field(default=2, ge=1)


class BlastRadiusSettings(Frozen):
    """Act on nothing in a group when more than ``max_unhealthy`` of it is unhealthy (1.0 = off)."""

    max_unhealthy: float = Field(default=0.5, gt=0.0, le=1.0)


class ApprovalSettings(Frozen):
    """How long a pending approval request stays open."""

    expiry: Duration = 3600.0


class GuardrailSettings(Frozen):
    """The ``guardrails:`` section; every key and default is documented in docs/guardrails.md."""

    dry_run: bool = False
    allowed_actions: tuple[str, ...] | None = None  # None: every registered action
    per_target: PerTargetLimits = Field(default_factory=PerTargetLimits)
    global_: GlobalLimits = Field(default_factory=GlobalLimits, alias="global")
    blast_radius: BlastRadiusSettings = Field(default_factory=BlastRadiusSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)


# --------------------------------------------------------------------------- maintenance


def _validate_timezone(cls: type, value: str) -> str:
    """An IANA time zone name (shared by maintenance windows and incidents)."""
    from agent.config.windows import validate_timezone

    return validate_timezone(value)


class MaintenanceWindow(Frozen):
    """A recurring window in which no action runs: starts at each ``cron`` firing, lasts ``duration``.

    ``cron`` is a 5-field expression (or ``@daily``...) read in ``timezone``. Without
    ``checks`` and ``tags`` the window covers every check; otherwise the checks named or
    carrying one of the tags.
    """

    cron: str
    duration: Duration
    timezone: str = "UTC"
    checks: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    reason: str = ""

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        from agent.config.windows import validate_cron
        return validate_cron(value)

    _known_timezone = field_validator("timezone")(_validate_timezone)

    _positive_duration = positive("duration")


# --------------------------------------------------------------------------- incidents

#: ``incidents.response_times`` value meaning the seed's "Next business day".
NEXT_BUSINESS_DAY: Literal["next-business-day"] = "next-business-day"
ResponseTime = float | Literal["next-business-day"]
#: The seed's escalation matrix: SEV-1 5 minutes, SEV-2 15 minutes, SEV-3 1 hour, SEV-4 next business day.
DEFAULT_RESPONSE_TIMES: dict[SevLevel, ResponseTime] = {
    "SEV-1": 300.0, "SEV-2": 900.0, "SEV-3": 3600.0, "SEV-4": NEXT_BUSINESS_DAY}


class EvidenceSettings(Frozen):
    """What the read-only collectors gather when an incident opens (docs/incidents.md)."""

    enabled: bool = True
    log_lines: int = Field(default=100, ge=0, le=5000)
    max_chars: int = Field(default=8000, ge=200, le=200_000)  # per collector, after scrubbing
    timeout: Duration = 5.0  # per collector
    prometheus_queries: int = Field(default=10, ge=0, le=100)  # at most this many prometheus checks' queries


class IncidentSettings(Frozen):
    """The ``incidents:`` section: response times per severity, reminders, evidence, message fields.

    A response time is a duration or ``next-business-day`` (the seed's SEV-4: 09:00 on the
    next Monday-to-Friday day in ``timezone``, from ``business_day_start``).
    """

    response_times: dict[SevLevel, Duration | Literal["next-business-day"]] = Field(
        default_factory=lambda: dict(DEFAULT_RESPONSE_TIMES))
    reminder_interval: Duration = 4 * 3600.0
    business_day_start: str = Field(default="09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "UTC"
    service: str = ""  # the notices' Service: line; empty: the runbook's target
    owner: str = "paramedic"
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)

    _known_timezone = field_validator("timezone")(_validate_timezone)

    _positive_interval = positive("reminder_interval")

    def response_time(self, severity: str) -> ResponseTime:
        """The configured response time of ``severity`` (the seed's matrix for one not set)."""
        for times in (self.response_times, DEFAULT_RESPONSE_TIMES):
            for level, value in times.items():
                if level == severity:
                    return value
        return 3600.0


# --------------------------------------------------------------------------- notifications

class NotificationSettings(Frozen):
    """The ``notifications:`` section: channels, how failed deliveries are retried, how long rows are kept."""

    channels: tuple[ChannelSpec, ...] = ()
    retry: NotifyRetry = Field(default_factory=NotifyRetry)
    retention: Duration = 7 * 86400.0

    def channel(self, name: str) -> ChannelBase:
        """The channel called ``name``; ``KeyError`` if there is none."""
        for spec in self.channels:
            if spec.name == name:
                return spec
        raise KeyError(name)
