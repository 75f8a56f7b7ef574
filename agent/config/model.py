"""Load, expand and validate ``config.yaml`` into one frozen, typed :class:`Config`.

Everything is checked once, at start: unknown keys, bad durations, conditions that do
not parse, unknown probe types, duplicate names, runbooks naming missing checks. Every
problem is reported with its path (``checks[2].timeout: input should be a valid
duration``) in one :class:`~agent.kernel.errors.ConfigError`, which the CLI turns into exit 2
(3, UNKNOWN, from ``check`` and ``audit``: :mod:`agent.cli.exits`).

``${VAR}`` and ``${VAR:-default}`` in string values expand from the environment after
YAML parsing (so a value can never inject YAML structure); ``$$`` is a literal ``$``.

Cold start: a cron ``paramedic check`` loads the config in a fresh interpreter every
time, so what a config does not use should cost nothing. The optional sections
(``guardrails``, ``maintenance``, ``incidents``, ``notifications``) have their models in
:mod:`agent.config.sections`, imported only when a config has one of them or when a
:class:`Config` property for one is first read; ``runbooks`` is validated on its own, only
when present. Every model defers building its schema to first use (``Frozen``). The
result and every error message are the same as validating the whole file with one model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from pydantic import Field, JsonValue, PrivateAttr, ValidationError, field_validator

from agent.config import yamlsafe
from agent.kernel.durations import Duration
from agent.kernel.errors import ConfigError
from agent.kernel.literals import SevLevel
from agent.kernel.models import Frozen, Thresholds
from agent.kernel.redact import Redactor, collect_secrets
from agent.registry import ACTION_TYPES, UnknownTypeError, action_class, spec_model
from checks.base import CheckSpec, ConditionSpec, RetrySpec

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

    from agent.config.sections import GuardrailSettings, IncidentSettings, MaintenanceWindow, NotificationSettings
    from remediations.base import Params

DEFAULT_CONFIG = "config.yaml"
ENV_CONFIG = "PARAMEDIC_CONFIG"


class Defaults(Frozen):
    """Values every check inherits unless it sets its own."""

    interval: Duration = 30.0
    retry_interval: Duration | None = None  # None: interval/20, at most 1 s (CheckSpec.retry_delay)
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


class _Top(Frozen):
    """The top-level keys other than ``checks`` (validated per item by their type), ``runbooks``
    and the optional sections (validated on their own, only when present)."""

    defaults: Defaults = Field(default_factory=Defaults)
    store: StoreSettings = Field(default_factory=StoreSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    state: StateSettings = Field(default_factory=StateSettings)


class _Runbooks(Frozen):
    """``runbooks:`` on its own, so that a config without runbooks never builds the Runbook schemas.

    Validated as ``{"runbooks": value}``: errors keep their paths (``runbooks[0].match``).
    """

    runbooks: tuple[Runbook, ...] = ()


#: Sections validated only when present, with models from agent.config.sections (imported
#: then), so a cron ``paramedic check`` of a small config does not pay for them.
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
        if self._notifications is not None:
            return self._notifications
        from agent.config import sections as config_sections

        return _default(config_sections.NotificationSettings)

    @property
    def guardrails(self) -> GuardrailSettings:
        """The ``guardrails:`` section (defaults when absent, built on first use)."""
        if self._guardrails is not None:
            return self._guardrails
        from agent.config import sections as config_sections

        return _default(config_sections.GuardrailSettings)

    @property
    def incidents(self) -> IncidentSettings:
        """The ``incidents:`` section (defaults when absent, built on first use)."""
        if self._incidents is not None:
            return self._incidents
        from agent.config import sections as config_sections

        return _default(config_sections.IncidentSettings)

    def store_path(self) -> Path:
        """The store file, resolved against the config file's directory."""
        path = Path(self.store.path).expanduser()
        if path.is_absolute() or self.source.startswith("<"):
            return path
        return Path(self.source).resolve().parent / path

    def thresholds(self) -> dict[str, Thresholds]:
        """Per-check state-machine thresholds (failure/success counts and flapping)."""
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
    return [_problem(err, prefix) for err in exc.errors(include_url=False)]


def _problem(err: ErrorDetails, prefix: Sequence[str | int]) -> str:
    loc = [*prefix, *err["loc"]]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    else:
        message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        message = message[:1].lower() + message[1:]
    return f"{format_path(loc)}: {message}"


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
        text = yamlsafe.read_text(path)
    except FileNotFoundError:
        raise ConfigError([f"<file>: {source} does not exist"], source) from None
    except OSError as exc:
        raise ConfigError([f"<file>: cannot read {source}: {exc.strerror}"], source) from None
    except yamlsafe.ConfigReadError as exc:
        raise ConfigError([f"<file>: {exc}"], source) from None
    return parse_config(text, source, env)


def parse_config(text: str, source: str = "<memory>", env: Mapping[str, str] | None = None) -> Config:
    """Validate config ``text`` (YAML); see :func:`load_config`."""
    try:
        raw = yamlsafe.safe_load(text)
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
    """Validate the optional sections that are present; absent ones stay None (defaults).

    Their models (agent.config.sections) are imported only when one of them is present.
    """
    out: dict[str, Any] = {}
    present = [key for key in _OPTIONAL_SECTIONS if key in raw]
    if not present:
        return out
    from agent.config import sections as config_sections

    models: dict[str, Any] = {"guardrails": config_sections.GuardrailSettings,
                              "incidents": config_sections.IncidentSettings}
    ok = True
    for key in present:
        value = raw.pop(key)
        try:
            if key == "maintenance":
                from pydantic import TypeAdapter

                out[key] = TypeAdapter(tuple[config_sections.MaintenanceWindow, ...]).validate_python(value or ())
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
    runbook_problems: list[str] = []
    runbooks = _validate_runbooks(raw.pop("runbooks"), runbook_problems) if "runbooks" in raw else ()
    top: _Top | None = None
    top_problems: list[str] = []
    n_defaults = 0
    bad_defaults: set[str | int] = set()
    try:
        top = _Top.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        top_problems = [_problem(e, ()) for e in errors]
        n_defaults = sum(1 for e in errors if e["loc"][:1] == ("defaults",))  # first: pydantic keeps field order
        # a bad default is reported once, at defaults.*, not again under every check
        bad_defaults = {e["loc"][1] for e in errors if len(e["loc"]) > 1 and e["loc"][0] == "defaults"}
    # runbooks' problems go where they were when runbooks was _Top's field after defaults
    problems.extend([*top_problems[:n_defaults], *runbook_problems, *top_problems[n_defaults:]])
    defaults_raw = raw.get("defaults") or {}
    if not isinstance(defaults_raw, dict):
        defaults_raw = {}
    defaults = {k: v for k, v in defaults_raw.items() if k not in bad_defaults}
    checks = _validate_checks(raw_checks, defaults, problems)
    if top is None or checks is None or sections is None or runbooks is None or (
            raw_notifications is not _ABSENT and notifications is None):
        return None
    guardrails = sections.get("guardrails")
    maintenance: tuple[MaintenanceWindow, ...] = sections.get("maintenance", ())
    problems.extend(_cross_check(checks, runbooks))
    problems.extend(_check_dependencies(checks))
    problems.extend(_check_guardrail_names(checks, guardrails, maintenance))
    problems.extend(_type_steps(runbooks))
    if problems:
        return None
    step_params = [step.typed_params for book in runbooks for step in book.steps]
    secrets = collect_secrets((checks, step_params, notifications))  # a DSN, a webhook token, a routing key...
    return Config(checks, runbooks, top.defaults, source, Redactor(secrets),
                  top.store, top.server, top.scheduler, top.state, maintenance=maintenance,
                  _notifications=notifications, _guardrails=guardrails, _incidents=sections.get("incidents"))


def _validate_runbooks(raw: Any, problems: list[str]) -> tuple[Runbook, ...] | None:
    """The ``runbooks:`` list (each step's params are typed later, by :func:`_type_steps`)."""
    try:
        return _Runbooks.model_validate({"runbooks": raw}).runbooks
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, ()))
        return None


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


def _validate_notifications(raw: Any, problems: list[str]) -> NotificationSettings | None:
    """The ``notifications:`` section, its channel names, and every custom template compiled and tried."""
    from agent.config import sections as config_sections
    from agent.notify.specs import CHANNEL_TAG, EmailChannel

    try:
        settings = config_sections.NotificationSettings.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        # a channel's errors read notifications.channels[1].url, not ...channels[1].webhook.url
        problems.extend(CHANNEL_TAG.sub(r"\1", p) for p in _pydantic_problems(exc, ("notifications",)))
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
    "Runbook",
    "load_config",
    "parse_config",
]
