"""The notification channels' config models (``notifications.channels[]``), one per type.

Built like ``checks/``: a channel type is a frozen spec here and an implementation in
:mod:`agent.notify.channels`; :mod:`agent.config.sections` puts the specs in the
``notifications:`` section.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from agent.kernel.durations import Duration, positive
from agent.kernel.literals import NOTICE_KINDS, SEV_LEVELS, NoticeKind, SevLevel
from agent.kernel.models import Frozen

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

    _positive_timeout = positive("timeout")

    def accepts(self, severity: str, kind: str) -> bool:
        """Whether a notice of this severity and kind goes to this channel."""
        return severity in self.severities and kind in self.kinds


class LogChannel(ChannelBase):
    """Write the message to the ``paramedic`` logger."""

    type: Literal["log"]
    level: Literal["debug", "info", "warning", "error", "critical"] = "warning"


class _UrlChannel(ChannelBase):
    """A channel that POSTs to an http(s) URL kept secret (it may carry a token), optionally with its own CA."""

    url: SecretStr
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        _http_url(value.get_secret_value())
        return value


class WebhookChannel(_UrlChannel):
    """POST the notice and its text as JSON; signed with HMAC-SHA256 when ``secret`` is set."""

    type: Literal["webhook"]
    secret: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_authorization(self) -> WebhookChannel:
        has_userinfo = "@" in self.url.get_secret_value().partition("://")[2].partition("/")[0]
        if has_userinfo and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("give credentials either in the URL or in an Authorization header, not both")
        return self


class SlackChannel(_UrlChannel):
    """A Slack incoming webhook (the whole URL is the credential)."""

    type: Literal["slack"]
    blocks: bool = False


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
#: pydantic puts the union's tag in a channel's error path (``notifications.channels[1].webhook.url``);
#: agent.config.model drops it so errors read ``notifications.channels[1].url``.
CHANNEL_TAG = re.compile(r"^(notifications\.channels\[\d+\])\.(?:" + "|".join(CHANNEL_TYPES) + r")\b")
