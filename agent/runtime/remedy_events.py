"""What the runbook engine tells the layers after it (the incident layer) as it decides and acts.

:class:`~agent.runtime.remedy.Remedy` calls these at four points; the default does nothing, so the
engine runs the same with or without incidents (``paramedic audit`` uses the default; the
daemon and ``paramedic check --remediate`` the incident layer). A listener must not raise
and must not block: it runs on the event loop in the middle of a decision.
:class:`SafeEvents` wraps a listener so a bug in it is logged, never a failed remediation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.kernel.logs import LOGGER

if TYPE_CHECKING:
    from agent.core import guardrails
    from agent.runtime.executor import Execution, Prepared


class RemedyEvents:
    """The hook interface; every method is a no-op here."""

    def action(self, prepared: Prepared, execution: Execution) -> None:
        """A step was executed (or dry-run, refused, found nothing to do): its journal outcome is in ``execution``."""

    def blocked(self, prepared: Prepared, admission: guardrails.Admission) -> None:
        """A guardrail blocked the step (called when the block's reasons change, like the journal)."""

    def approval_needed(self, prepared: Prepared, request_id: int) -> None:
        """The step waits for `paramedic approve REQUEST_ID`."""

    def escalated(self, runbook: str, target: str, reason: str) -> None:
        """The ladder is exhausted, or a guardrail gave up: a person must act."""


NO_EVENTS = RemedyEvents()


class SafeEvents(RemedyEvents):
    """Forwards to ``inner``, logging (never raising) whatever it raises."""

    def __init__(self, inner: RemedyEvents) -> None:
        self.inner = inner

    def _call(self, name: str, *args: Any) -> None:
        try:
            getattr(self.inner, name)(*args)
        except Exception:
            LOGGER.exception("remediation event listener failed in %s", name)

    def action(self, prepared: Prepared, execution: Execution) -> None:
        self._call("action", prepared, execution)

    def blocked(self, prepared: Prepared, admission: guardrails.Admission) -> None:
        self._call("blocked", prepared, admission)

    def approval_needed(self, prepared: Prepared, request_id: int) -> None:
        self._call("approval_needed", prepared, request_id)

    def escalated(self, runbook: str, target: str, reason: str) -> None:
        self._call("escalated", runbook, target, reason)
