"""Load, expand and validate ``config.yaml`` into one frozen, typed :class:`Config`.

Everything is checked once, at start: unknown keys, bad durations, conditions that do
not parse, unknown probe types, duplicate names, runbooks naming missing checks. Every
problem is reported with its path (``checks[2].timeout: input should be a valid
duration``) in one :class:`~agent.errors.ConfigError`, which the CLI turns into exit 2.

``${VAR}`` and ``${VAR:-default}`` in string values expand from the environment after
YAML parsing (so a value can never inject YAML structure); ``$$`` is a literal ``$``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import yaml
from pydantic import Field, JsonValue, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator

from agent.durations import Duration
from agent.errors import ConfigError
from agent.redact import Redactor, collect_secrets
from agent.registry import ACTION_TYPES, UnknownTypeError, action_class, spec_model
from checks.base import CheckSpec, ConditionSpec, Frozen, RetrySpec

if TYPE_CHECKING:
    from agent.state import Thresholds
    from remediations.base import Params

DEFAULT_CONFIG = "config.yaml"
ENV_CONFIG = "PARAMEDIC_CONFIG"
SevLevel = Literal["SEV-1", "SEV-2", "SEV-3", "SEV-4"]


class Defaults(Frozen):
    """Values every check inherits unless it sets its own."""

    interval: Duration = 30.0
    retry_interval: Duration | None = None  # None: 1 s, at most the check's interval (CheckSpec.retry_delay)
    timeout: Duration = 5.0
    failure_threshold: int = Field(default=3, ge=1)
    success_threshold: int = Field(default=2, ge=1)
    severity: Literal["critical", "warning"] = "critical"
    retries: RetrySpec = Field(default_factory=RetrySpec)


class RunbookMatch(Frozen):
    """Which failures a runbook handles. Empty lists mean "any"; all given fields must match."""

    checks: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    statuses: tuple[Literal["CRITICAL", "WARNING"], ...] = ("CRITICAL",)
    alert_labels: dict[str, str] = Field(default_factory=dict)


class RunbookStep(Frozen):
    """One rung of a runbook's ladder: an action, how long to verify it, what if it fails.

    ``params`` are validated against the action's own params model when the config loads
    (errors read ``runbooks[0].steps[1].params.stop_timeout: ...``); the typed result is
    :attr:`typed_params`. ``approval`` defaults to the action's own default (``required``
    for ``rollback``).
    """

    action: str = Field(min_length=1)
    params: dict[str, JsonValue] = Field(default_factory=dict)
    verify_for: Duration = 60.0
    on_failure: Literal["next", "escalate"] = "next"
    approval: Literal["none", "required"] | None = None
    _typed: Params | None = PrivateAttr(default=None)
    _needs_approval: bool = PrivateAttr(default=False)

    @property
    def typed_params(self) -> Params:
        """The params as the action's validated model (set at config load)."""
        if self._typed is None:
            raise RuntimeError("runbook step was not validated through load_config")
        return self._typed

    @property
    def needs_approval(self) -> bool:
        """Whether a person must approve this step before it runs."""
        return self._needs_approval


class Runbook(Frozen):
    """A runbook, shaped like the seed's template (summary, severity, steps, escalation)."""

    name: str = Field(min_length=1)
    summary: str = ""
    severity: SevLevel = "SEV-3"
    match: RunbookMatch
    steps: tuple[RunbookStep, ...] = ()
    escalation: str = ""
    dry_run: bool = False  # record this runbook's plans instead of applying them (docs/guardrails.md)


class StoreSettings(Frozen):
    """Where state lives. A relative ``path`` is relative to the config file's directory."""

    path: str = "paramedic.db"
    retention: Duration = 7 * 86400.0
    max_results_per_check: int = Field(default=1000, ge=10)


class ServerSettings(Frozen):
    """The daemon's HTTP endpoint (``/healthz``, ``/metrics``, ``/api/v1/checks``). Empty = off."""

    listen: str = "127.0.0.1:9321"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value == "":
            return value
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT (e.g. 127.0.0.1:9321) or empty to disable")
        return value


class SchedulerSettings(Frozen):
    """How the daemon paces probes."""

    max_in_flight: int = Field(default=256, ge=1, le=10000)
    jitter: Duration = 10.0
    flush_interval: Duration = 0.1


class StateSettings(Frozen):
    """Flapping detection: more than ``flap_threshold`` pass/fail flips within ``flap_window``."""

    flap_window: Duration = 600.0
    flap_threshold: int = Field(default=6, ge=2)


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

    @field_validator("window")
    @classmethod
    def _positive_window(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("window must be greater than 0")
        return value


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


def _validate_timezone(cls: type, value: str) -> str:
    """An IANA time zone name (shared by maintenance windows and incidents)."""
    from agent.schedule_windows import validate_timezone

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
        from agent.schedule_windows import validate_cron
        return validate_cron(value)

    _known_timezone = field_validator("timezone")(_validate_timezone)

    @field_validator("duration")
    @classmethod
    def _positive_duration(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("duration must be greater than 0")
        return value


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

    @field_validator("reminder_interval")
    @classmethod
    def _positive_interval(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("reminder_interval must be greater than 0")
        return value

    def response_time(self, severity: str) -> ResponseTime:
        """The configured response time of ``severity`` (the seed's matrix for one not set)."""
        for times in (self.response_times, DEFAULT_RESPONSE_TIMES):
            for level, value in times.items():
                if level == severity:
                    return value
        return 3600.0


# --------------------------------------------------------------------------- notifications

NoticeKind = Literal["initial", "update", "resolution", "reminder", "escalation", "ack"]
NOTICE_KINDS: tuple[NoticeKind, ...] = ("initial", "update", "resolution", "reminder", "escalation", "ack")
SEV_LEVELS: tuple[SevLevel, ...] = ("SEV-1", "SEV-2", "SEV-3", "SEV-4")
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_CHANNEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"


def _http_url(value: str) -> str:
    """Raise if ``value`` is not an http(s) URL with a host; never echo it (it may hold a token)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise ValueError("must be an http:// or https:// URL with a host") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


class NotifyRetry(Frozen):
    """How a failed delivery is retried: exponential backoff with jitter, persisted in the outbox."""

    attempts: int = Field(default=8, ge=1, le=100)
    initial: Duration = 5.0
    max_delay: Duration = 600.0
    jitter: Duration = 2.0


class ChannelBase(Frozen):
    """What every notification channel has: a name, a route (severities x kinds), templates."""

    name: str = Field(min_length=1, pattern=_CHANNEL_NAME)
    severities: tuple[SevLevel, ...] = Field(default=SEV_LEVELS, min_length=1)
    kinds: tuple[NoticeKind, ...] = Field(default=NOTICE_KINDS, min_length=1)
    templates: dict[NoticeKind, str] = Field(default_factory=dict)
    timeout: Duration = 10.0

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("timeout must be greater than 0")
        return value

    def accepts(self, severity: str, kind: str) -> bool:
        """Whether a notice of this severity and kind goes to this channel."""
        return severity in self.severities and kind in self.kinds


class LogChannel(ChannelBase):
    """Write the message to the ``paramedic`` logger."""

    type: Literal["log"]
    level: Literal["debug", "info", "warning", "error", "critical"] = "warning"


class WebhookChannel(ChannelBase):
    """POST the notice and its text as JSON; signed with HMAC-SHA256 when ``secret`` is set."""

    type: Literal["webhook"]
    url: SecretStr
    secret: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        _http_url(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _one_authorization(self) -> WebhookChannel:
        has_userinfo = "@" in self.url.get_secret_value().partition("://")[2].partition("/")[0]
        if has_userinfo and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("give credentials either in the URL or in an Authorization header, not both")
        return self


class SlackChannel(ChannelBase):
    """A Slack incoming webhook (the whole URL is the credential)."""

    type: Literal["slack"]
    url: SecretStr
    blocks: bool = False
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        _http_url(value.get_secret_value())
        return value


class EmailChannel(ChannelBase):
    """SMTP: STARTTLS by default (``tls: tls`` for implicit TLS on 465); AUTH only over TLS."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(alias="from", min_length=3)
    recipients: tuple[str, ...] = Field(alias="to", min_length=1)
    subject: str | None = None
    ca_file: str | None = None

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        return _address(value)

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_address(v) for v in value)

    @model_validator(mode="after")
    def _auth_needs_tls(self) -> EmailChannel:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.username is not None and self.tls == "none":
            raise ValueError("username/password are only sent over TLS: set tls to starttls or tls")
        return self


def _address(value: str) -> str:
    if "\r" in value or "\n" in value or "@" not in value:
        raise ValueError("must be an e-mail address (name@domain)")
    return value


class PagerDutyChannel(ChannelBase):
    """PagerDuty Events API v2: trigger, acknowledge and resolve one alert per incident."""

    type: Literal["pagerduty"]
    routing_key: SecretStr
    url: str = PAGERDUTY_EVENTS_URL
    source: str = ""
    ca_file: str | None = None

    @field_validator("routing_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


ChannelSpec = Annotated[
    LogChannel | WebhookChannel | SlackChannel | EmailChannel | PagerDutyChannel, Field(discriminator="type")
]
CHANNEL_TYPES = ("log", "webhook", "slack", "email", "pagerduty")


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


class _Top(Frozen):
    """The top-level keys other than ``checks`` (validated per item by their type)."""

    defaults: Defaults = Field(default_factory=Defaults)
    runbooks: tuple[Runbook, ...] = ()
    store: StoreSettings = Field(default_factory=StoreSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    state: StateSettings = Field(default_factory=StateSettings)


#: Sections validated only when present (their models are built on first use: defer_build),
#: so a cron ``paramedic check`` of a small config does not pay for them.
_OPTIONAL_SECTIONS = ("guardrails", "maintenance", "incidents")
_ABSENT = object()
M = TypeVar("M", bound=Frozen)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration, plus what was derived from it at load time."""

    checks: tuple[CheckSpec, ...]
    runbooks: tuple[Runbook, ...] = ()
    defaults: Defaults = field(default_factory=Defaults)
    source: str = "<memory>"
    redactor: Redactor = field(default_factory=Redactor, compare=False, repr=False)
    store: StoreSettings = field(default_factory=StoreSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    state: StateSettings = field(default_factory=StateSettings)
    maintenance: tuple[MaintenanceWindow, ...] = ()
    _notifications: NotificationSettings | None = None
    _guardrails: GuardrailSettings | None = None
    _incidents: IncidentSettings | None = None

    @property
    def notifications(self) -> NotificationSettings:
        """The ``notifications:`` section (defaults when absent, built on first use)."""
        return self._notifications if self._notifications is not None else _default(NotificationSettings)

    @property
    def guardrails(self) -> GuardrailSettings:
        """The ``guardrails:`` section (defaults when absent, built on first use)."""
        return self._guardrails if self._guardrails is not None else _default(GuardrailSettings)

    @property
    def incidents(self) -> IncidentSettings:
        """The ``incidents:`` section (defaults when absent, built on first use)."""
        return self._incidents if self._incidents is not None else _default(IncidentSettings)

    def store_path(self) -> Path:
        """The store file, resolved against the config file's directory."""
        path = Path(self.store.path).expanduser()
        if path.is_absolute() or self.source.startswith("<"):
            return path
        return Path(self.source).resolve().parent / path

    def thresholds(self) -> dict[str, Thresholds]:
        """Per-check state-machine thresholds (failure/success counts and flapping)."""
        from agent.state import Thresholds
        return {
            c.name: Thresholds(c.failure_threshold, c.success_threshold,
                               self.state.flap_window, self.state.flap_threshold)
            for c in self.checks
        }

    def check(self, name: str) -> CheckSpec:
        """The check called ``name``; ``KeyError`` if there is none."""
        for spec in self.checks:
            if spec.name == name:
                return spec
        raise KeyError(name)


# --------------------------------------------------------------------------- paths & errors


def format_path(loc: Sequence[str | int]) -> str:
    """``("checks", 2, "timeout")`` -> ``checks[2].timeout``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _pydantic_problems(exc: ValidationError, prefix: Sequence[str | int]) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = [*prefix, *err["loc"]]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            message = message[:1].lower() + message[1:]
        problems.append(f"{format_path(loc)}: {message}")
    return problems


# --------------------------------------------------------------------------- env expansion

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: Mapping[str, str], loc: tuple[str | int, ...], problems: list[str]) -> Any:
    """Expand ``${VAR}``/``${VAR:-default}``/``$$`` in every string of ``value``."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env and (env[name] != "" or default is None):
                return env[name]
            if default is not None:
                return default
            problems.append(f"{format_path(loc)}: environment variable {name} is not set")
            return ""

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, (*loc, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, (*loc, i), problems) for i, v in enumerate(value)]
    return value


# --------------------------------------------------------------------------- loading


def resolve_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """``--config`` if given, else ``$PARAMEDIC_CONFIG``, else ``./config.yaml``."""
    env = os.environ if env is None else env
    return Path(explicit or env.get(ENV_CONFIG) or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML file at ``path``; raise :class:`ConfigError` listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"<file>: {source} does not exist"], source) from None
    except OSError as exc:
        raise ConfigError([f"<file>: cannot read {source}: {exc.strerror}"], source) from None
    return parse_config(text, source, env)


def parse_config(text: str, source: str = "<memory>", env: Mapping[str, str] | None = None) -> Config:
    """Validate config ``text`` (YAML); see :func:`load_config`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"<yaml>: {problem} at {where}"], source) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["<root>: the config must be a mapping with a 'checks' list"], source)
    problems: list[str] = []
    raw = expand_env(raw, os.environ if env is None else env, (), problems)
    config = _validate(raw, source, problems)
    if problems or config is None:
        raise ConfigError(problems, source)
    return config


_DEFAULTS: dict[type[Frozen], Frozen] = {}


def _default(model: type[M]) -> M:
    """One shared default instance of a section model, built the first time it is needed."""
    if model not in _DEFAULTS:
        _DEFAULTS[model] = model()
    value = _DEFAULTS[model]
    assert isinstance(value, model)
    return value


def _sections(raw: dict[str, Any], problems: list[str]) -> dict[str, Any] | None:
    """Validate the optional sections that are present; absent ones stay None (defaults)."""
    out: dict[str, Any] = {}
    models: dict[str, Any] = {"guardrails": GuardrailSettings, "incidents": IncidentSettings}
    ok = True
    for key in _OPTIONAL_SECTIONS:
        if key not in raw:
            continue
        value = raw.pop(key)
        try:
            if key == "maintenance":
                from pydantic import TypeAdapter

                out[key] = TypeAdapter(tuple[MaintenanceWindow, ...]).validate_python(value or ())
            else:
                out[key] = models[key].model_validate({} if value is None else value)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, (key,)))
            ok = False
    return out if ok else None


def _validate(raw: dict[str, Any], source: str, problems: list[str]) -> Config | None:
    raw_checks = raw.pop("checks", [])
    raw_notifications = raw.pop("notifications", None) if "notifications" in raw else _ABSENT
    notifications = None if raw_notifications is _ABSENT else _validate_notifications(raw_notifications, problems)
    sections = _sections(raw, problems)
    top: _Top | None = None
    bad_defaults: set[str | int] = set()
    try:
        top = _Top.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, ()))
        # a bad default is reported once, at defaults.*, not again under every check
        bad_defaults = {e["loc"][1] for e in exc.errors() if len(e["loc"]) > 1 and e["loc"][0] == "defaults"}
    defaults_raw = raw.get("defaults") or {}
    if not isinstance(defaults_raw, dict):
        defaults_raw = {}
    defaults = {k: v for k, v in defaults_raw.items() if k not in bad_defaults}
    checks = _validate_checks(raw_checks, defaults, problems)
    if top is None or checks is None or sections is None or (raw_notifications is not _ABSENT and
                                                              notifications is None):
        return None
    guardrails = sections.get("guardrails")
    maintenance: tuple[MaintenanceWindow, ...] = sections.get("maintenance", ())
    problems.extend(_cross_check(checks, top.runbooks))
    problems.extend(_check_dependencies(checks))
    problems.extend(_check_guardrail_names(checks, guardrails, maintenance))
    problems.extend(_type_steps(top.runbooks))
    if problems:
        return None
    step_params = [step.typed_params for book in top.runbooks for step in book.steps]
    secrets = collect_secrets((checks, step_params, notifications))  # a DSN, a webhook token, a routing key...
    return Config(checks, top.runbooks, top.defaults, source, Redactor(secrets),
                  top.store, top.server, top.scheduler, top.state, maintenance=maintenance,
                  _notifications=notifications, _guardrails=guardrails, _incidents=sections.get("incidents"))


def _validate_checks(raw: Any, defaults: dict[str, Any], problems: list[str]) -> tuple[CheckSpec, ...] | None:
    if not isinstance(raw, list):
        problems.append("checks: must be a list of checks")
        return None
    specs: list[CheckSpec] = []
    before = len(problems)
    for index, item in enumerate(raw):
        spec = _validate_check(index, item, defaults, problems)
        if spec is not None:
            specs.append(spec)
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in seen:
                problems.append(f"checks[{index}].name: duplicate name {name!r} (also checks[{seen[name]}])")
            seen.setdefault(name, index)
    return tuple(specs) if len(problems) == before else None


def _validate_check(index: int, item: Any, defaults: dict[str, Any], problems: list[str]) -> CheckSpec | None:
    loc: tuple[str | int, ...] = ("checks", index)
    if not isinstance(item, dict):
        problems.append(f"{format_path(loc)}: must be a mapping")
        return None
    type_name = item.get("type")
    if not isinstance(type_name, str):
        problems.append(f"{format_path((*loc, 'type'))}: missing (every check needs a type)")
        return None
    try:
        model = spec_model(type_name)
    except UnknownTypeError as exc:
        problems.append(f"{format_path((*loc, 'type'))}: {exc.args[0]}")
        return None
    merged = {k: v for k, v in defaults.items() if k in model.model_fields} | item
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, loc))
        return None


_CHANNEL_TAG = re.compile(r"^(notifications\.channels\[\d+\])\.(?:" + "|".join(CHANNEL_TYPES) + r")\b")


def _validate_notifications(raw: Any, problems: list[str]) -> NotificationSettings | None:
    """The ``notifications:`` section, its channel names, and every custom template compiled and tried."""
    try:
        settings = NotificationSettings.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        # a channel's errors read notifications.channels[1].url, not ...channels[1].webhook.url
        problems.extend(_CHANNEL_TAG.sub(r"\1", p) for p in _pydantic_problems(exc, ("notifications",)))
        return None
    before = len(problems)
    seen: dict[str, int] = {}
    for index, spec in enumerate(settings.channels):
        if spec.name in seen:
            problems.append(f"notifications.channels[{index}].name: duplicate channel name {spec.name!r}"
                            f" (also notifications.channels[{seen[spec.name]}])")
        seen.setdefault(spec.name, index)
        subject = spec.subject if isinstance(spec, EmailChannel) else None
        if spec.templates or subject is not None:
            from agent.notify.templates import template_problems  # Jinja2 only when a template is set

            problems.extend(template_problems(spec.templates, subject, f"notifications.channels[{index}]"))
    return settings if len(problems) == before else None


def _type_steps(runbooks: tuple[Runbook, ...]) -> list[str]:
    """Validate each step's params against its action's model; attach the typed params."""
    problems: list[str] = []
    for i, book in enumerate(runbooks):
        for j, step in enumerate(book.steps):
            loc: tuple[str | int, ...] = ("runbooks", i, "steps", j)
            try:
                action = action_class(step.action)
            except UnknownTypeError as exc:
                problems.append(f"{format_path((*loc, 'action'))}: {exc.args[0]}")
                continue
            try:
                step._typed = action.params_model.model_validate(step.params)
            except ValidationError as exc:
                problems.extend(_pydantic_problems(exc, (*loc, "params")))
                continue
            step._needs_approval = (
                action.requires_approval if step.approval is None else step.approval == "required"
            )
    return problems


def _cross_check(checks: tuple[CheckSpec, ...], runbooks: tuple[Runbook, ...]) -> list[str]:
    """Rules that span sections: runbooks must name checks that exist, names are unique."""
    names = {c.name for c in checks}
    problems = []
    seen: set[str] = set()
    for i, book in enumerate(runbooks):
        if book.name in seen:
            problems.append(f"runbooks[{i}].name: duplicate runbook name {book.name!r}")
        seen.add(book.name)
        for j, check in enumerate(book.match.checks):
            if check not in names:
                problems.append(f"runbooks[{i}].match.checks[{j}]: no check named {check!r}")
    return problems


def _check_dependencies(checks: tuple[CheckSpec, ...]) -> list[str]:
    """``depends_on`` names existing checks, never the check itself, and forms no cycle."""
    index = {c.name: i for i, c in enumerate(checks)}
    problems = []
    for i, spec in enumerate(checks):
        for j, name in enumerate(spec.depends_on):
            if name == spec.name:
                problems.append(f"checks[{i}].depends_on[{j}]: a check cannot depend on itself")
            elif name not in index:
                problems.append(f"checks[{i}].depends_on[{j}]: no check named {name!r}")
    if problems:
        return problems
    graph = {c.name: c.depends_on for c in checks}
    reported: set[frozenset[str]] = set()
    for spec in checks:
        cycle = _find_cycle(spec.name, graph)
        if cycle and frozenset(cycle) not in reported and cycle[0] == spec.name:
            reported.add(frozenset(cycle))
            path = " -> ".join((*cycle, cycle[0]))
            problems.append(f"checks[{index[spec.name]}].depends_on: dependency cycle {path}")
    return problems


def _find_cycle(start: str, graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle through ``start`` (as the list of names from ``start``), or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return path
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _check_guardrail_names(checks: tuple[CheckSpec, ...], guardrails: GuardrailSettings | None,
                           maintenance: tuple[MaintenanceWindow, ...]) -> list[str]:
    """``guardrails.allowed_actions`` names registered actions; maintenance scopes name real checks."""
    problems = []
    for j, action in enumerate(guardrails.allowed_actions or () if guardrails is not None else ()):
        if action not in ACTION_TYPES:
            known = ", ".join(sorted(ACTION_TYPES))
            problems.append(f"guardrails.allowed_actions[{j}]: unknown action {action!r} (known: {known})")
    names = {c.name for c in checks}
    for i, window in enumerate(maintenance):
        for j, name in enumerate(window.checks):
            if name not in names:
                problems.append(f"maintenance[{i}].checks[{j}]: no check named {name!r}")
    return problems


__all__ = [
    "ConditionSpec",
    "Config",
    "Defaults",
    "GuardrailSettings",
    "MaintenanceWindow",
    "Runbook",
    "load_config",
    "parse_config",
]
