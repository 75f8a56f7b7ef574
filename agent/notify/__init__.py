"""Notifications: what the agent tells people about an incident, and how it gets there.

* :mod:`agent.notify.templates` — the :class:`Notice` the incident layer fills, and its
  text: the seed runbook's templates (alert, update, resolution) plus reminder,
  escalation and acknowledgement, customisable per channel in a sandboxed Jinja2.
* :mod:`agent.notify.channels` — log, webhook (HMAC-signed), Slack, e-mail (SMTP with
  STARTTLS) and PagerDuty Events API v2; each delivers once and says whether a failure
  is worth retrying.
* :mod:`agent.runtime.outbox` — the persistent outbox in the store and the dispatcher
  that sends from it with backoff, so remediation never waits on a receiver and a
  pending notification survives a restart. :class:`~agent.runtime.outbox.Notifier` is the
  one object the incident layer holds.

Importing this package is cheap (no Jinja2, aiohttp or tenacity): import
``agent.runtime.outbox`` where notifications are actually sent. See docs/notifications.md.
"""

from agent.notify.templates import Notice

__all__ = ["Notice"]
