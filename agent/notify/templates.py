"""What a notification says: the :class:`Notice` the incident layer fills, and its text.

The default texts are the seed runbook's three communication templates (Initial Response,
Update, Resolution), field for field and in the same order, plus three the agent needs:
a reminder for an incident that stays open, an escalation to a person, and an
acknowledgement. Optional lines (runbook, target, evidence) follow the seed's fields and
only appear when the notice has them.

Every template, default or custom, is Jinja2 rendered in an
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with ``StrictUndefined``:

* the context is plain strings only (``severity``, ``issue``, ``started`` ...; see
  :func:`context`), never Python objects, so there is little to reach for;
* attribute or item names starting with ``_`` are refused when the template is parsed
  (so a ``{{ ''.__class__ }}`` hidden behind an ``{% if %}`` that the sample never takes
  is still refused at config load), and the sandbox refuses them again at render time;
* a misspelt variable is an error at config load (the template is rendered against a
  sample notice of every kind), not an empty field at 3 a.m.

Rendering is pure: the same notice gives the same text (durations come from the
notice's own timestamps, never from the clock). Jinja2 is imported on first use, so
importing :class:`Notice` costs nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.kernel.durations import format_duration
from agent.kernel.literals import NOTICE_KINDS, SEV_LEVELS, NoticeKind, SevLevel

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Longest text a channel is given (Slack cuts at 40,000 characters; mail readers give up sooner).
MAX_TEXT = 16_000

TITLES: Mapping[NoticeKind, str] = {
    "initial": "🚨 INCIDENT ALERT 🚨",
    "update": "📊 INCIDENT UPDATE 📊",
    "resolution": "✅ INCIDENT RESOLVED ✅",
    "reminder": "⏰ INCIDENT REMINDER ⏰",
    "escalation": "🆘 INCIDENT ESCALATED 🆘",
    "ack": "👀 INCIDENT ACKNOWLEDGED 👀",
}

#: The seed's escalation matrix: label, response time, escalation path.
SEVERITY_MATRIX: Mapping[SevLevel, tuple[str, str, str]] = {
    "SEV-1": ("Critical", "5 minutes", "Primary → Secondary → Manager"),
    "SEV-2": ("High", "15 minutes", "Primary → Secondary"),
    "SEV-3": ("Medium", "1 hour", "Primary on-call"),
    "SEV-4": ("Low", "Next business day", "Assign to team"),
}

_EXTRAS = """\
{% if runbook or target %}

{% endif %}
{% if runbook %}
Runbook: {{ runbook }}
{% endif %}
{% if target %}
Target: {{ target }}{% if check %} (check {{ check }}){% endif %}

{% endif %}
{% if evidence %}

Evidence:
{{ evidence }}
{% endif %}
"""

DEFAULT_TEMPLATES: Mapping[NoticeKind, str] = {
    "initial": """\
{{ title }}

Severity: {{ severity }}
Service: {{ service }}
Issue: {{ issue }}
Impact: {{ impact or "Unknown" }}
Status: {{ status or "Investigating" }}
Owner: {{ owner or "paramedic" }}
Started: {{ started or "Unknown" }}
""" + _EXTRAS,
    "update": """\
{{ title }}

Severity: {{ severity }}
Issue: {{ issue }}
Update: {{ update or status or "No change" }}
Next Step: {{ next_step or "Monitoring" }}
ETA: {{ eta or "Unknown" }}
Owner: {{ owner or "paramedic" }}
""" + _EXTRAS,
    "resolution": """\
{{ title }}

Severity: {{ severity }}
Issue: {{ issue }}
Resolution: {{ resolution or "Recovered" }}
Duration: {{ duration or "Unknown" }}
Root Cause: {{ root_cause or "Unknown (see the post-incident report)" }}
Follow-up: {{ follow_up or "Post-incident report within 24 hours" }}
""",
    "reminder": """\
{{ title }}

Severity: {{ severity }}
Service: {{ service }}
Issue: {{ issue }}
Status: {{ status or "Open" }}
Owner: {{ owner or "paramedic" }}
Started: {{ started or "Unknown" }}
Open For: {{ duration or "Unknown" }}
Next Step: {{ next_step or "Waiting for a person" }}
""" + _EXTRAS,
    "escalation": """\
{{ title }}

Severity: {{ severity }}
Service: {{ service }}
Issue: {{ issue }}
Impact: {{ impact or "Unknown" }}
Status: {{ status or "Escalated" }}
Reason: {{ update or "Automatic remediation did not fix it" }}
Response Time: {{ response_time }}
Escalation Path: {{ escalation_path }}
Owner: {{ owner or "paramedic" }}
Started: {{ started or "Unknown" }}
""" + _EXTRAS,
    "ack": """\
{{ title }}

Severity: {{ severity }}
Issue: {{ issue }}
Status: {{ status or "Acknowledged" }}
Owner: {{ owner or "paramedic" }}
{% if update %}
Update: {{ update }}
{% endif %}
""",
}

#: Default e-mail subject (single line).
DEFAULT_SUBJECT = "[{{ severity }}] {{ headline }}: {{ issue }} ({{ service }})"


@dataclass(frozen=True)
class Notice:
    """One thing to tell people about one incident. Times are Unix seconds; text is plain.

    ``dedup_key`` names the incident across its whole life (PagerDuty's alert key, the
    outbox's ordering key); ``duration`` is seconds and, when left out, is derived from
    ``started_at`` and ``resolved_at`` (or ``updated_at`` for an open incident).
    """

    kind: NoticeKind
    incident_id: int
    dedup_key: str
    severity: SevLevel
    service: str
    issue: str
    impact: str = ""
    status: str = ""
    owner: str = ""
    started_at: float | None = None
    updated_at: float | None = None
    resolved_at: float | None = None
    update: str = ""
    next_step: str = ""
    eta: str = ""
    resolution: str = ""
    duration: float | None = None
    root_cause: str = ""
    follow_up: str = ""
    runbook: str = ""
    check: str = ""
    target: str = ""
    evidence: str = ""

    def __post_init__(self) -> None:
        if self.kind not in NOTICE_KINDS:
            raise ValueError(f"unknown notice kind {self.kind!r} (one of {', '.join(NOTICE_KINDS)})")
        if self.severity not in SEV_LEVELS:
            raise ValueError(f"unknown severity {self.severity!r} (one of {', '.join(SEV_LEVELS)})")
        if not self.dedup_key:
            raise ValueError("a notice needs a dedup_key")

    def elapsed(self) -> float | None:
        """``duration``, else end (resolved, or last update) minus start; None if unknown."""
        if self.duration is not None:
            return self.duration
        end = self.resolved_at if self.resolved_at is not None else self.updated_at
        if self.started_at is None or end is None:
            return None
        return max(0.0, end - self.started_at)

    def to_record(self) -> dict[str, Any]:
        """Every field as stored in the outbox (JSON-able, round-trips through :meth:`from_record`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Notice:
        """The notice :meth:`to_record` wrote (unknown keys from a newer paramedic are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def payload(self) -> dict[str, Any]:
        """The notice as receivers get it: every field, times also in ISO 8601, the duration too."""
        doc = self.to_record()
        for name in ("started_at", "updated_at", "resolved_at"):
            doc[name.removesuffix("_at")] = iso_time(doc[name])
        elapsed = self.elapsed()
        doc["duration"] = elapsed
        doc["duration_text"] = format_duration(elapsed) if elapsed is not None else None
        return doc


def iso_time(at: float | None) -> str | None:
    """``2026-05-01T12:00:00Z`` (UTC, whole seconds), or None."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def headline(kind: NoticeKind) -> str:
    """The title without its emoji: ``INCIDENT ALERT``."""
    return TITLES[kind].strip("🚨📊✅⏰🆘👀 ")


def context(notice: Notice) -> dict[str, str]:
    """What a template sees: strings only, every key always present (empty when unknown)."""
    label, response, path = SEVERITY_MATRIX[notice.severity]
    elapsed = notice.elapsed()
    values: dict[str, str] = {
        "kind": notice.kind, "title": TITLES[notice.kind], "headline": headline(notice.kind),
        "incident_id": str(notice.incident_id), "dedup_key": notice.dedup_key, "severity": notice.severity,
        "severity_label": label, "response_time": response, "escalation_path": path,
        "started": iso_time(notice.started_at) or "", "updated": iso_time(notice.updated_at) or "",
        "resolved": iso_time(notice.resolved_at) or "",
        "duration": format_duration(elapsed) if elapsed is not None else "",
    }
    for name in ("service", "issue", "impact", "status", "owner", "update", "next_step", "eta", "resolution",
                 "root_cause", "follow_up", "runbook", "check", "target", "evidence"):
        values[name] = str(getattr(notice, name))
    return values


#: Every name a template may use (documented in docs/notifications.md).
CONTEXT_KEYS: tuple[str, ...] = tuple(sorted(context(Notice("initial", 0, "k", "SEV-1", "", ""))))


def sample_notice(kind: NoticeKind) -> Notice:
    """A notice with every field set, to try templates on at config load."""
    return Notice(
        kind=kind, incident_id=42, dedup_key="runbook:web-down/target:web", severity="SEV-1",
        service="Counterfactual Lab", issue="web-health is DOWN: status_code == 503",
        impact="Users cannot reach the service", status="Investigating", owner="paramedic",
        started_at=1_780_000_000.0, updated_at=1_780_000_300.0, resolved_at=1_780_000_900.0,
        update="Restarted container web", next_step="Verify for 60s", eta="5 minutes",
        resolution="Restarted container web", duration=900.0, root_cause="Memory leak",
        follow_up="Post-incident report", runbook="web-down", check="web-health", target="web",
        evidence="docker logs web --tail 5: ...",
    )


# --------------------------------------------------------------------------- Jinja2


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed environment (plain text: no autoescape; blocks leave no blank lines)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    for name in ("lipsum", "cycler", "joiner"):  # nothing a message needs; less to reason about
        env.globals.pop(name, None)
    return env


def _private_names(source: str) -> Iterator[str]:
    """Attribute and item names starting with ``_`` anywhere in the template (taken or not)."""
    from jinja2 import nodes

    tree = environment().parse(source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            yield node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and str(node.arg.value).startswith("_"):
            yield str(node.arg.value)
    for call in tree.find_all(nodes.Filter):
        if call.name == "attr":  # ''|attr('__class__')
            yield from (a.value for a in call.args if isinstance(a, nodes.Const) and str(a.value).startswith("_"))


@functools.cache
def compile_template(source: str) -> Template:
    """Parse and compile ``source``; raises Jinja's ``TemplateSyntaxError`` or ``SecurityError``."""
    from jinja2.exceptions import SecurityError

    private = sorted(set(_private_names(source)))
    if private:
        raise SecurityError(f"access to private attribute(s) {', '.join(map(repr, private))} is not allowed")
    return environment().from_string(source)


def _render(template: Template, notice: Notice) -> str:
    text = template.render(context(notice)).strip("\n")
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 14] + "\n… (truncated)"
    return text


def render(notice: Notice, source: str | None = None) -> str:
    """``notice`` in template ``source`` (default: the built-in template of its kind)."""
    return _render(compile_template(source or DEFAULT_TEMPLATES[notice.kind]), notice)


def render_subject(notice: Notice, source: str | None = None) -> str:
    """A one-line subject (newlines folded, at most 200 characters)."""
    text = " ".join(_render(compile_template(source or DEFAULT_SUBJECT), notice).split())
    return text[:200]


def template_problem(source: str, kind: NoticeKind | None) -> str | None:
    """Why ``source`` cannot be used (syntax, sandbox, unknown variable), or None if it renders.

    ``kind`` None means "any kind" (the e-mail subject): it is tried with a notice of each.
    """
    from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError

    try:
        template = compile_template(source)
        for each in (kind,) if kind is not None else NOTICE_KINDS:
            _render(template, sample_notice(each))
    except TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    except SecurityError as exc:
        return f"unsafe template refused by the sandbox: {exc}"
    except TemplateError as exc:
        return f"template error: {exc}"
    except Exception as exc:  # an OverflowError from range(), a TypeError from a filter, ...
        return f"template error: {type(exc).__name__}: {exc}"
    return None


def template_problems(templates: Mapping[NoticeKind, str], subject: str | None, loc: str) -> list[str]:
    """Config-load check of one channel's templates: ``<loc>.templates.<kind>: <problem>`` each."""
    problems = []
    for kind, source in templates.items():
        problem = template_problem(source, kind)
        if problem:
            problems.append(f"{loc}.templates.{kind}: {problem}")
    if subject is not None:
        problem = template_problem(subject, None)
        if problem:
            problems.append(f"{loc}.subject: {problem}")
    return problems


class Renderer:
    """One channel's texts: its own templates for the kinds it customises, the defaults otherwise.

    A custom template that fails at send time (it passed the config-load sample, but not
    this notice) falls back to the default text: a notification is never lost to a template.
    ``on_error`` hears about it (the channel logs it).
    """

    def __init__(self, templates: Mapping[NoticeKind, str] | None = None, subject: str | None = None) -> None:
        self.templates = dict(templates or {})
        self.subject_source = subject
        self.last_error: str | None = None

    def text(self, notice: Notice) -> str:
        """The message body for ``notice``."""
        source = self.templates.get(notice.kind)
        if source is None:
            return render(notice)
        try:
            return render(notice, source)
        except Exception as exc:
            self.last_error = f"custom {notice.kind} template failed ({type(exc).__name__}: {exc}); default used"
            return render(notice)

    def subject(self, notice: Notice) -> str:
        """The one-line subject for ``notice``."""
        if self.subject_source is None:
            return render_subject(notice)
        try:
            return render_subject(notice, self.subject_source)
        except Exception as exc:
            self.last_error = f"custom subject template failed ({type(exc).__name__}: {exc}); default used"
            return render_subject(notice)
