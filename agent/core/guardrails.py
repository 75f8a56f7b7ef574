"""Guardrails: may this step run on this target now? Pure policies over a frozen :class:`Situation`.

The executor gathers everything a decision needs (the check's state, the action journal,
silences, maintenance windows, the pause flag, approvals...) into one :class:`Situation`
and calls :func:`admit`. Every policy is evaluated, always, in the fixed order of
:data:`POLICIES`, so ``paramedic audit`` and the journal can show each one's verdict
with a sentence a person can read::

    pause            allowed  not paused
    dry_run          allowed  live: the action will be applied
    ...
    cooldown         blocked  cooldown: last restart of container web 45s ago; next allowed in 1m15s

The step runs only if every policy allows it. ``dry_run`` never blocks: it marks the
admission as a dry-run, and the executor then records the plan instead of applying it.

Counting. Budgets, cooldown and backoff count the actions in ``Situation.history``
(``PastAction``). A live decision counts only live actions, so pretend actions never
spend a real budget; a dry-run decision counts both, so a dry-run agent shows what a live
one would have done. Per-target counters restart after a healthy period
(``Situation.reset_at``): backoff's attempt number and the "given up" state count only
actions after it; the sliding budget window does not (a budget is never exceeded, reset
or not). :func:`history_need` tells the executor which journal rows to load.

Given up. When the target's budget was spent since the last reset (``budget`` actions
within one ``window``), ``target_budget`` blocks with "given up ...; escalated" and
:attr:`Admission.give_up` is true until the target has been healthy for
``reset_after``: the agent escalates instead of retrying forever.

Jitter is deterministic (a hash of target and attempt number), so the same situation
always gets the same answer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from agent.config.sections import GuardrailSettings
from agent.core.state import CheckState, Health
from agent.core.targets import blast_groups
from agent.core.windows import ActiveWindow
from agent.kernel.durations import format_duration
from agent.kernel.results import Status

if TYPE_CHECKING:
    from agent.kernel.targets import Target
    from checks.base import CheckSpec

ApprovalStatus = Literal["none", "pending", "approved", "rejected", "expired"]

#: Health states that count as unhealthy for the blast radius (RECOVERING is passing again).
UNHEALTHY = frozenset({Health.DOWN, Health.FAILING, Health.FLAPPING})

NO_TARGETS = frozenset({"", "nothing"})


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class PastAction:
    """One action from the journal: applied (or at least intended) at ``at`` on ``target``.

    Every live action the executor journaled an intent for counts, whatever its
    ``outcome`` (``ok``, ``failed``, ``error``, or empty while unknown): an action whose
    outcome was lost in a crash still spent budget.
    """

    at: float
    target: str
    action: str
    outcome: str = ""
    dry_run: bool = False


@dataclass(frozen=True)
class RunningAction:
    """An action in flight right now."""

    target: str
    action: str
    started_at: float


@dataclass(frozen=True)
class Member:
    """One check as the blast radius sees it: its health and the groups it belongs to.

    ``target`` (a target key) makes several checks of the same thing count once; without
    it each check counts on its own.
    """

    check: str
    health: Health
    groups: frozenset[str]
    target: str = ""

    @property
    def key(self) -> str:
        """What counts once in a group: the target if known, else the check."""
        return self.target or f"check {self.check}"


@dataclass(frozen=True)
class Dependency:
    """A check the triggering check ``depends_on``, with its visible health."""

    check: str
    health: Health


@dataclass(frozen=True)
class Silence:
    """``paramedic silence add --check NAME --for 2h --reason ...``: no actions for NAME until ``until``."""

    check: str
    until: float
    reason: str = ""
    created_by: str = ""


@dataclass(frozen=True)
class Situation:
    """Everything the policies look at, frozen at one instant ``now`` (epoch seconds).

    Built by the executor; every field except the first six has a harmless default, so
    tests state only what they are about.
    """

    now: float
    check: str
    status: Status
    health: Health
    action: str
    target: str
    runbook: str = ""
    runbook_dry_run: bool = False
    step: int = 0  # 0-based index into the runbook's steps
    needs_approval: bool = False
    check_tags: tuple[str, ...] = ()
    groups: frozenset[str] = frozenset()  # the target's group keys, see :func:`check_groups`
    selected: int | None = None  # how many containers the target selects, when known
    history: tuple[PastAction, ...] = ()
    reset_at: float | None = None  # when the target's counters last reset (a healthy period)
    running: tuple[RunningAction, ...] = ()
    members: tuple[Member, ...] = ()
    operator_stopped: bool = False
    depends_on: tuple[Dependency, ...] = ()
    silences: tuple[Silence, ...] = ()
    maintenance: tuple[ActiveWindow, ...] = ()  # windows active now (:func:`active_windows`)
    paused: bool = False
    pause_reason: str = ""
    approval: ApprovalStatus = "none"
    approval_requested_at: float | None = None
    approval_by: str = ""


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Decision:
    """One policy's verdict. ``retry_at``: when a block lifts by itself (None: it does not).

    ``escalate``: the block needs a person (blast radius, given up, rejected...).
    """

    policy: str
    allowed: bool
    reason: str
    retry_at: float | None = None
    escalate: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for the journal and ``paramedic audit --output json``."""
        return {"policy": self.policy, "allowed": self.allowed, "reason": self.reason,
                "retry_at": self.retry_at, "escalate": self.escalate}


@dataclass(frozen=True)
class Admission:
    """The verdict of every policy, in :data:`POLICIES` order, and what follows from them.

    ``allowed``: every policy allowed. ``dry_run``: record the plan, do not apply it.
    ``give_up``: the target's budget is spent; escalate, do not retry until it recovers.
    ``request_approval``: the step needs approval, there is no live request, and nothing
    before the approval policy blocks: the executor should create a pending request.
    """

    allowed: bool
    decisions: tuple[Decision, ...]
    give_up: bool = False
    dry_run: bool = False
    request_approval: bool = False

    @property
    def blocked(self) -> tuple[Decision, ...]:
        """The decisions that blocked, in order."""
        return tuple(d for d in self.decisions if not d.allowed)

    @property
    def escalate(self) -> bool:
        """Whether a person should hear about this (given up, or a block that needs one)."""
        return self.give_up or any(d.escalate for d in self.blocked)

    @property
    def retry_at(self) -> float | None:
        """When every block will have lifted by itself; None if allowed or some block needs a change."""
        blocked = self.blocked
        if not blocked or any(d.retry_at is None for d in blocked):
            return None
        return max(d.retry_at for d in blocked if d.retry_at is not None)

    @property
    def reason(self) -> str:
        """One line: the blocking reasons, or that the step may run."""
        if self.blocked:
            return "; ".join(d.reason if d.reason.startswith(f"{d.policy}:") else f"{d.policy}: {d.reason}"
                             for d in self.blocked)
        return "allowed (dry-run: recorded, not applied)" if self.dry_run else "allowed"

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for the journal and ``paramedic audit --output json``."""
        return {"allowed": self.allowed, "dry_run": self.dry_run, "give_up": self.give_up,
                "request_approval": self.request_approval, "escalate": self.escalate,
                "retry_at": self.retry_at, "decisions": [d.as_dict() for d in self.decisions]}


# --------------------------------------------------------------------------- helpers


def _span(seconds: float) -> str:
    """A readable duration in whole seconds (``45s``, ``1m15s``); sub-second is ``0s``."""
    return format_duration(seconds) if seconds >= 1 else "0s"


def _ago(seconds: float) -> str:
    return _span(math.floor(max(0.0, seconds)))


def _until(seconds: float) -> str:
    return _span(math.ceil(max(0.0, seconds)))


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class _Ctx:
    """What several policies derive from the situation, computed once."""

    s: Situation
    settings: GuardrailSettings
    dry_run: bool
    counted: tuple[PastAction, ...]  # actions that count for this decision, oldest first
    on_target: tuple[PastAction, ...]
    since_reset: tuple[PastAction, ...]


def _context(settings: GuardrailSettings, s: Situation) -> _Ctx:
    dry_run = settings.dry_run or s.runbook_dry_run
    counted = tuple(sorted((a for a in s.history if dry_run or not a.dry_run), key=lambda a: a.at))
    on_target = tuple(a for a in counted if a.target == s.target)
    since_reset = on_target if s.reset_at is None else tuple(a for a in on_target if a.at > s.reset_at)
    return _Ctx(s, settings, dry_run, counted, on_target, since_reset)


def gave_up(actions: Sequence[PastAction], budget: int, window: float) -> PastAction | None:
    """The action that spent the budget (the ``budget``-th within one ``window``), or None.

    ``actions`` are one target's, oldest first.
    """
    for i in range(len(actions) - budget + 1):
        last = actions[i + budget - 1]
        if last.at - actions[i].at < window:
            return last
    return None


def backoff_delay(settings: GuardrailSettings, target: str, attempts: int) -> float:
    """Seconds to wait after ``attempts`` attempts on ``target`` (0 for none).

    ``base * factor**(attempts-1)``, capped at ``max``, then scaled by a jitter in
    ``[1 - jitter, 1 + jitter]`` drawn from a hash of target and attempt (deterministic).
    """
    if attempts <= 0:
        return 0.0
    b = settings.per_target.backoff
    delay = min(b.max, b.base * b.factor ** min(attempts - 1, 64))
    digest = hashlib.sha256(f"{target}\0{attempts}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # [0, 1)
    return delay * (1 + b.jitter * (2 * unit - 1))


# --------------------------------------------------------------------------- policies


def _pause(c: _Ctx) -> Decision:
    if c.s.paused:
        why = c.s.pause_reason or "no reason given"
        return Decision("pause", False, f"paused: {why}; `paramedic resume` lets actions run again")
    return Decision("pause", True, "not paused")


def _dry_run(c: _Ctx) -> Decision:
    if c.settings.dry_run:
        return Decision("dry_run", True, "dry-run (guardrails.dry_run): the plan is recorded, not applied")
    if c.s.runbook_dry_run:
        return Decision("dry_run", True, f"dry-run (runbook {c.s.runbook}): the plan is recorded, not applied")
    return Decision("dry_run", True, "live: the action will be applied")


def _allowed_actions(c: _Ctx) -> Decision:
    allowed = c.settings.allowed_actions
    if allowed is None:
        return Decision("allowed_actions", True, f"{c.s.action} is allowed (guardrails.allowed_actions is not set)")
    if c.s.action in allowed:
        return Decision("allowed_actions", True, f"{c.s.action} is in guardrails.allowed_actions")
    listed = ", ".join(allowed) or "none"
    return Decision("allowed_actions", False,
                    f"{c.s.action} is not in guardrails.allowed_actions ({listed}); a person must act", escalate=True)


def _unknown_status(c: _Ctx) -> Decision:
    s = c.s
    if s.status is Status.UNKNOWN:
        return Decision("unknown_status", False,
                        f"the last result of {s.check} is UNKNOWN: paramedic could not tell whether it is broken, "
                        "so it does not act")
    if s.status is Status.OK:
        return Decision("unknown_status", False, f"the last result of {s.check} is OK: nothing to fix")
    return Decision("unknown_status", True, f"the last result of {s.check} is {s.status.name}")


def _flapping(c: _Ctx) -> Decision:
    if c.s.health is Health.FLAPPING:
        return Decision("flapping", False,
                        f"{c.s.check} is flapping (its verdict keeps flipping): "
                        "paramedic does not act until it settles")
    return Decision("flapping", True, f"{c.s.check} is not flapping ({c.s.health.value})")


def _operator_stopped(c: _Ctx) -> Decision:
    if c.s.operator_stopped:
        return Decision("operator_stopped", False,
                        f"{c.s.target} was stopped by an operator; it stays stopped until someone starts it")
    return Decision("operator_stopped", True, f"{c.s.target} was not stopped by an operator")


def _silence(c: _Ctx) -> Decision:
    s = c.s
    active = [x for x in s.silences if x.check == s.check and s.now < x.until]
    if not active:
        return Decision("silence", True, f"no active silence for {s.check}")
    last = max(active, key=lambda x: x.until)
    by = f" by {last.created_by}" if last.created_by else ""
    why = f": {last.reason}" if last.reason else ""
    return Decision("silence", False,
                    f"{s.check} is silenced{by} until {_when(last.until)} (in {_until(last.until - s.now)}){why}",
                    retry_at=last.until)


def _maintenance(c: _Ctx) -> Decision:
    s = c.s
    covering = [w for w in s.maintenance if w.started_at <= s.now < w.ends_at and w.applies_to(s.check, s.check_tags)]
    if not covering:
        return Decision("maintenance", True, f"no maintenance window covers {s.check} now")
    last = max(covering, key=lambda w: w.ends_at)
    why = f": {last.window.reason}" if last.window.reason else ""
    return Decision("maintenance", False,
                    f"in maintenance window {last.describe()} until {_when(last.ends_at)} "
                    f"(in {_until(last.ends_at - s.now)}){why}", retry_at=last.ends_at)


def _dependency(c: _Ctx) -> Decision:
    deps = c.s.depends_on
    if not deps:
        return Decision("dependency", True, f"{c.s.check} has no dependencies")
    down = [d.check for d in deps if d.health is Health.DOWN]
    if down:
        names = ", ".join(down)
        verb = "is" if len(down) == 1 else "are"
        return Decision("dependency", False,
                        f"waiting: {c.s.check} depends on {names}, which {verb} DOWN; its own runbook goes first")
    states = ", ".join(f"{d.check} ({d.health.value})" for d in deps)
    return Decision("dependency", True, f"no dependency is DOWN: {states}")


def _blast_radius(c: _Ctx) -> Decision:
    s = c.s
    if s.target.strip() in NO_TARGETS or s.selected == 0:
        return Decision("blast_radius", False,
                        "no target: the step selects nothing, and paramedic never acts on everything", escalate=True)
    limit = c.settings.blast_radius.max_unhealthy
    running = {r.target for r in s.running}
    worst: tuple[float, str, int, int] | None = None
    for group in sorted(s.groups):
        health: dict[str, bool] = {}
        for m in s.members:
            if group in m.groups:
                bad = m.health in UNHEALTHY or m.key in running
                health[m.key] = health.get(m.key, False) or bad
        if len(health) < 2:
            continue  # a group of one: acting on it touches only itself
        unhealthy = sum(health.values())
        fraction = unhealthy / len(health)
        if worst is None or fraction > worst[0]:
            worst = (fraction, group, unhealthy, len(health))
    if worst is None:
        return Decision("blast_radius", True, f"{s.target} shares no group with other checks")
    fraction, group, unhealthy, total = worst
    text = f"{unhealthy} of {total} in {group} unhealthy or being acted on ({fraction:.0%}"
    if fraction > limit:
        return Decision("blast_radius", False,
                        f"{text} > {limit:.0%}): acting on none of them; escalated", escalate=True)
    return Decision("blast_radius", True, f"{text} <= {limit:.0%})")


def approval_status(settings: GuardrailSettings, s: Situation) -> ApprovalStatus:
    """The situation's approval status, with a pending request past ``approval.expiry`` as expired."""
    requested = s.approval_requested_at
    if s.approval == "pending" and requested is not None and s.now >= requested + settings.approval.expiry:
        return "expired"
    return s.approval


def _approval(c: _Ctx) -> Decision:
    s = c.s
    step = f"step {s.step + 1} ({s.action} of {s.target})"
    if not s.needs_approval:
        return Decision("approval", True, f"{step} needs no approval")
    expiry = c.settings.approval.expiry
    status = approval_status(c.settings, s)
    by = f" by {s.approval_by}" if s.approval_by else ""
    if status == "approved":
        return Decision("approval", True, f"{step} was approved{by}")
    if status == "rejected":
        return Decision("approval", False, f"{step} was rejected{by}; escalated", escalate=True)
    if status == "expired":
        return Decision("approval", False,
                        f"the approval request for {step} expired after {_span(expiry)} without a decision; escalated",
                        escalate=True)
    if status == "pending":
        since = s.approval_requested_at
        left = "" if since is None else f" since {_when(since)}; it expires in {_until(since + expiry - s.now)}"
        return Decision("approval", False,
                        f"{step} waits for a person: `paramedic approve` or `paramedic reject`{left}")
    return Decision("approval", False,
                    f"{step} needs approval: a request is made for `paramedic approve`; "
                    f"it expires after {_span(expiry)}")


def _one_per_target(c: _Ctx) -> Decision:
    s = c.s
    mine = [r for r in s.running if r.target == s.target]
    if mine:
        r = mine[0]
        return Decision("one_per_target", False,
                        f"a {r.action} of {s.target} is already running (started {_ago(s.now - r.started_at)} ago)")
    return Decision("one_per_target", True, f"nothing else is running on {s.target}")


def _max_concurrent(c: _Ctx) -> Decision:
    limit = c.settings.global_.max_concurrent
    n = len(c.s.running)
    if n >= limit:
        return Decision("max_concurrent", False, f"{n} actions are already running (limit {limit})")
    return Decision("max_concurrent", True, f"{n} of {limit} concurrent actions running")


def _global_budget(c: _Ctx) -> Decision:
    now, limit = c.s.now, c.settings.global_.max_per_hour
    recent = [a for a in c.counted if now - a.at < 3600.0]
    if len(recent) >= limit:
        frees = recent[len(recent) - limit].at + 3600.0
        return Decision("global_budget", False,
                        f"global budget: {len(recent)} actions in the last hour (limit {limit}); "
                        f"next allowed in {_until(frees - now)}", retry_at=frees)
    return Decision("global_budget", True, f"{len(recent)} of {limit} actions in the last hour")


def _target_budget(c: _Ctx) -> Decision:
    s, per = c.s, c.settings.per_target
    window = _span(per.window)
    spent = gave_up(c.since_reset, per.budget, per.window)
    if spent is not None:
        return Decision("target_budget", False,
                        f"given up: {per.budget} actions on {s.target} in {window} (the last at {_when(spent.at)}); "
                        f"escalated; it is retried after {_span(per.reset_after)} healthy", escalate=True)
    recent = [a for a in c.on_target if s.now - a.at < per.window]
    if len(recent) >= per.budget:
        frees = recent[len(recent) - per.budget].at + per.window
        return Decision("target_budget", False,
                        f"budget: {len(recent)} actions on {s.target} in the last {window} (limit {per.budget}); "
                        f"next allowed in {_until(frees - s.now)}", retry_at=frees)
    return Decision("target_budget", True,
                    f"{len(recent)} of {per.budget} actions on {s.target} in the last {window}")


def _cooldown(c: _Ctx) -> Decision:
    s, cooldown = c.s, c.settings.per_target.cooldown
    if not c.on_target:
        return Decision("cooldown", True, f"no earlier action on {s.target}")
    last = c.on_target[-1]
    elapsed = s.now - last.at
    if elapsed < cooldown:
        return Decision("cooldown", False,
                        f"cooldown: last {last.action} of {s.target} {_ago(elapsed)} ago; "
                        f"next allowed in {_until(cooldown - elapsed)}", retry_at=last.at + cooldown)
    return Decision("cooldown", True,
                    f"last {last.action} of {s.target} {_ago(elapsed)} ago (cooldown {_span(cooldown)})")


def _backoff(c: _Ctx) -> Decision:
    s = c.s
    attempts = len(c.since_reset)
    if attempts == 0:
        return Decision("backoff", True, f"attempt 1 on {s.target}: no backoff")
    delay = backoff_delay(c.settings, s.target, attempts)
    elapsed = s.now - c.since_reset[-1].at
    b = c.settings.per_target.backoff
    formula = f"{_span(b.base)} x {b.factor:g}^{attempts - 1}, capped at {_span(b.max)}, jitter {b.jitter:.0%}"
    if elapsed < delay:
        return Decision("backoff", False,
                        f"backoff: attempt {attempts + 1} on {s.target} waits {_until(delay)} after the last "
                        f"({formula}); next allowed in {_until(delay - elapsed)}",
                        retry_at=c.since_reset[-1].at + delay)
    return Decision("backoff", True, f"attempt {attempts + 1} on {s.target}: waited {_ago(elapsed)} of {_until(delay)}")


_Policy = Callable[[_Ctx], Decision]

#: The decision order (documented in docs/guardrails.md).
POLICIES: tuple[tuple[str, _Policy], ...] = (
    ("pause", _pause),
    ("dry_run", _dry_run),
    ("allowed_actions", _allowed_actions),
    ("unknown_status", _unknown_status),
    ("flapping", _flapping),
    ("operator_stopped", _operator_stopped),
    ("silence", _silence),
    ("maintenance", _maintenance),
    ("dependency", _dependency),
    ("blast_radius", _blast_radius),
    ("approval", _approval),
    ("one_per_target", _one_per_target),
    ("max_concurrent", _max_concurrent),
    ("global_budget", _global_budget),
    ("target_budget", _target_budget),
    ("cooldown", _cooldown),
    ("backoff", _backoff),
)


_APPROVAL_AT = [name for name, _ in POLICIES].index("approval")
_BUDGET_AT = [name for name, _ in POLICIES].index("target_budget")


def admit(settings: GuardrailSettings, situation: Situation) -> Admission:
    """Evaluate every policy in :data:`POLICIES` order; the step may run only if all allow."""
    ctx = _context(settings, situation)
    decisions = tuple(policy(ctx) for _name, policy in POLICIES)
    budget = decisions[_BUDGET_AT]
    give_up = not budget.allowed and budget.escalate  # spent since the last reset: given up
    request = (
        situation.needs_approval
        and approval_status(settings, situation) == "none"
        and not give_up
        and all(d.allowed for d in decisions[:_APPROVAL_AT])
    )
    return Admission(all(d.allowed for d in decisions), decisions, give_up, ctx.dry_run, request)


# --------------------------------------------------------------------------- for the executor


@dataclass(frozen=True)
class HistoryNeed:
    """Which journal rows :func:`admit` needs: every target's after ``since_all``, and the
    target's own after ``since_target`` (None: all of them, back to the first)."""

    since_all: float
    since_target: float | None


def history_need(settings: GuardrailSettings, now: float, reset_at: float | None) -> HistoryNeed:
    """The journal rows to load into :attr:`Situation.history` for a decision at ``now``."""
    per = settings.per_target
    horizon = max(3600.0, per.window, per.cooldown)
    return HistoryNeed(now - horizon, reset_at)


def select_history(actions: Iterable[PastAction], need: HistoryNeed, target: str) -> tuple[PastAction, ...]:
    """The subset of ``actions`` that :func:`history_need` asks for (what a journal query returns)."""
    return tuple(
        a for a in actions
        if a.at > need.since_all or (a.target == target and (need.since_target is None or a.at > need.since_target))
    )


def counters_reset(state: CheckState, now: float, settings: GuardrailSettings) -> bool:
    """Whether a target's counters reset now: its check has been OK for ``per_target.reset_after``."""
    return state.visible is Health.OK and now - state.since >= settings.per_target.reset_after


def check_groups(spec: CheckSpec, target: Target | None = None) -> frozenset[str]:
    """The blast-radius groups of a check (and of a resolved target, when given): see
    :func:`agent.core.targets.blast_groups`, where they are computed."""
    return blast_groups(spec, target)


def members_of(checks: Iterable[CheckSpec], states: Mapping[str, CheckState],
               targets: Mapping[str, str] | None = None) -> tuple[Member, ...]:
    """Blast-radius members for every configured check (a check without state counts as OK).

    ``targets`` maps a check name to the target key its runbook acts on, so that several
    checks of one container count once.
    """
    targets = targets or {}
    out = []
    for spec in checks:
        state = states.get(spec.name)
        health = state.visible if state is not None else Health.OK
        out.append(Member(spec.name, health, check_groups(spec), targets.get(spec.name, "")))
    return tuple(out)


__all__ = [
    "POLICIES",
    "UNHEALTHY",
    "Admission",
    "ApprovalStatus",
    "Decision",
    "Dependency",
    "GuardrailSettings",
    "HistoryNeed",
    "Member",
    "PastAction",
    "RunningAction",
    "Silence",
    "Situation",
    "admit",
    "approval_status",
    "backoff_delay",
    "check_groups",
    "counters_reset",
    "gave_up",
    "history_need",
    "members_of",
    "select_history",
]
