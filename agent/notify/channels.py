"""Notification channels: one class per ``type`` in ``notifications.channels``.

A channel turns a :class:`~agent.notify.templates.Notice` into one delivery and either
returns or raises :class:`DeliveryError` (try again later) / :class:`RejectedError`
(trying again cannot help: a 4xx, refused credentials, a refused recipient). It never
retries itself and never sleeps: the outbox (:mod:`agent.runtime.outbox`) owns retries,
so a slow or broken receiver never holds up anything else.

========== ==============================================================================
log        the ``paramedic.notify`` logger, at the channel's ``level``
webhook    ``POST`` JSON ``{"delivery_id", "channel", "kind", "text", "notice"}``; with a
           ``secret``, header ``X-Paramedic-Signature: sha256=<hex HMAC-SHA256 of the body>``
slack      incoming webhook: ``{"text": ...}`` (``&<>`` escaped), optional one mrkdwn block
email      SMTP in a worker thread (stdlib ``smtplib``), STARTTLS by default, AUTH only over TLS
pagerduty  Events API v2: trigger / acknowledge / resolve, one ``dedup_key`` per incident
========== ==============================================================================

Error texts are built here from status codes and exception types, and every channel
masks its own secrets (URL, token, routing key, password, HMAC secret) in them before
they leave: they end up in logs and in the outbox's ``last_error``.

HTTP channels share one :class:`HttpPoster` (one ``aiohttp.ClientSession`` per process,
created on first use inside the running loop); TLS is verified against the system store
or the channel's ``ca_file``; redirects are not followed (a redirected POST is not the
POST that was meant).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp

from agent.kernel.errors import ConfigError, ParamedicError
from agent.kernel.redact import MASK, SENSITIVE_HEADERS
from agent.notify.specs import ChannelBase, EmailChannel, LogChannel, PagerDutyChannel, SlackChannel, WebhookChannel
from agent.notify.templates import Notice, Renderer, iso_time

LOGGER = logging.getLogger("paramedic.notify")
USER_AGENT = "paramedic-notify/1"
SIGNATURE_HEADER = "X-Paramedic-Signature"
#: How much of a receiver's answer goes into an error text.
MAX_ANSWER = 200
#: HTTP statuses worth trying again; any other non-2xx is a rejection.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

PAGERDUTY_ACTIONS: Mapping[str, str] = {
    "initial": "trigger", "update": "trigger", "reminder": "trigger", "escalation": "trigger",
    "ack": "acknowledge", "resolution": "resolve",
}
PAGERDUTY_SEVERITY: Mapping[str, str] = {"SEV-1": "critical", "SEV-2": "error", "SEV-3": "warning", "SEV-4": "info"}


class DeliveryError(ParamedicError):
    """A delivery failed in a way that may pass: the outbox tries again after a backoff."""


class RejectedError(DeliveryError):
    """The receiver refused the delivery for good (bad request, bad credentials): no retry."""

    permanent = True


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what a log line may say about a secret URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}"


def _url_secrets(url: str) -> list[str]:
    """The URL itself, its path (Slack keeps the token there), password and query values."""
    found = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    tokens = [segment for segment in parts.path.split("/") if _token_like(segment)]
    if tokens:  # Slack and most chat webhooks keep the credential in the path
        found += [parts.path, unquote(parts.path), *tokens]
    for pair in parts.query.split("&"):
        found.append(pair.partition("=")[2])
    return found


def _token_like(segment: str) -> bool:
    """Long, and with digits or mixed case: ``B0123ABC``-style ids and tokens, not ``notifications``."""
    mixed = any(c.isupper() for c in segment) and any(c.islower() for c in segment)
    return len(segment) >= 12 and (mixed or any(c.isdigit() for c in segment))


SpecT = TypeVar("SpecT", bound=ChannelBase)


class Channel(ABC, Generic[SpecT]):
    """One configured channel. ``deliver`` is its only I/O."""

    type: ClassVar[str]

    def __init__(self, spec: SpecT) -> None:
        self.spec = spec
        self.name = spec.name
        subject = spec.subject if isinstance(spec, EmailChannel) else None
        self.renderer = Renderer(spec.templates, subject)
        self._secrets = sorted({s for s in self.secrets() if len(s) >= 3}, key=len, reverse=True)

    def accepts(self, notice: Notice) -> bool:
        """Whether this channel's route (severities x kinds) takes ``notice``."""
        return self.spec.accepts(notice.severity, notice.kind)

    def secrets(self) -> list[str]:
        """Strings of this channel's config that must never be shown."""
        return []

    def mask(self, text: str) -> str:
        """``text`` with this channel's secrets replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def describe(self) -> str:
        """A secret-free one-liner: ``webhook ops-hook (https://hooks.example.com)``."""
        return f"{self.type} {self.name}"

    def text(self, notice: Notice) -> str:
        """The rendered message (a failing custom template falls back to the default, logged)."""
        text = self.renderer.text(notice)
        self._report_template_error()
        return text

    def _report_template_error(self) -> None:
        if self.renderer.last_error:
            LOGGER.warning("notification channel %s: %s", self.name, self.mask(self.renderer.last_error))
            self.renderer.last_error = None

    @abstractmethod
    async def deliver(self, notice: Notice, delivery_id: int) -> None:
        """Send ``notice`` once; raise :class:`DeliveryError` or :class:`RejectedError` on failure."""


# --------------------------------------------------------------------------- HTTP


class HttpPoster:
    """POSTs for every HTTP channel of the process, through one shared ``aiohttp.ClientSession``.

    Pass ``session`` to share one the caller owns (then :meth:`close` leaves it open).
    """

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owned = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (created on first use; must be inside the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT}, connector=aiohttp.TCPConnector(limit=32),
            )
            self._owned = True
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float,
                   tls: ssl.SSLContext) -> tuple[int, bytes]:
        """One POST: the status and up to 4 KiB of the answer. Transport errors propagate."""
        async with self.session.post(
            url, data=body, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout),
            ssl=tls, allow_redirects=False,
        ) as response:
            return response.status, await response.content.read(4096)

    async def close(self) -> None:
        """Close the session if this poster created it."""
        if self._session is not None and self._owned and not self._session.closed:
            await self._session.close()


def _answer(raw: bytes) -> str:
    text = " ".join(raw.decode("utf-8", errors="replace").split())
    return text[:MAX_ANSWER] + ("…" if len(text) > MAX_ANSWER else "")


class HttpChannel(Channel[SpecT]):
    """A channel that POSTs JSON; subclasses say where, what and with which headers."""

    def __init__(self, spec: SpecT, http: HttpPoster) -> None:
        super().__init__(spec)
        self.http = http
        ca_file: str | None = getattr(spec, "ca_file", None)
        self.tls = ssl.create_default_context(cafile=ca_file)

    @abstractmethod
    def url(self) -> str:
        """Where to POST (may hold a secret)."""

    @abstractmethod
    def body(self, notice: Notice, delivery_id: int) -> bytes:
        """The exact bytes to POST."""

    def headers(self, body: bytes, delivery_id: int) -> dict[str, str]:
        """Request headers for ``body``."""
        return {"Content-Type": "application/json"}

    def describe(self) -> str:
        return f"{self.type} {self.name} ({origin(self.url())})"

    async def deliver(self, notice: Notice, delivery_id: int) -> None:
        body = self.body(notice, delivery_id)
        where = origin(self.url())
        try:
            status, answer = await self.http.post(self.url(), body, self.headers(body, delivery_id),
                                                  timeout=self.spec.timeout, tls=self.tls)
        except TimeoutError:
            raise DeliveryError(f"POST {where}: no answer within {self.spec.timeout:g}s") from None
        except aiohttp.ClientSSLError as exc:
            raise DeliveryError(self.mask(f"POST {where}: TLS failed: {_reason(exc)}")) from None
        except aiohttp.ClientConnectorError as exc:
            raise DeliveryError(self.mask(f"POST {where}: cannot connect: {_reason(exc)}")) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise DeliveryError(self.mask(f"POST {where}: {type(exc).__name__}: {_reason(exc)}")) from None
        self.judge(status, answer, where)

    def judge(self, status: int, answer: bytes, where: str) -> None:
        """Raise unless ``status`` is a success."""
        if 200 <= status < 300:
            return
        text = self.mask(f"POST {where}: HTTP {status}" + (f": {_answer(answer)}" if answer.strip() else ""))
        if status in RETRYABLE_STATUS:
            raise DeliveryError(text)
        raise RejectedError(text)


def _reason(exc: BaseException) -> str:
    """A short reason without the request URL (aiohttp puts it in some messages)."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, BaseException):
        return getattr(os_error, "strerror", None) or type(os_error).__name__
    return str(exc) or type(exc).__name__


def _json(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


class WebhookChannelImpl(HttpChannel[WebhookChannel]):
    """Generic webhook: the notice and its text as JSON, optionally HMAC-signed."""

    type = "webhook"

    def url(self) -> str:
        return self.spec.url.get_secret_value()

    def secrets(self) -> list[str]:
        found = _url_secrets(self.spec.url.get_secret_value())
        if self.spec.secret is not None:
            found.append(self.spec.secret.get_secret_value())
        for key, value in self.spec.headers.items():
            if key.lower() in SENSITIVE_HEADERS:
                found += [value, value.partition(" ")[2]]
        return found

    def body(self, notice: Notice, delivery_id: int) -> bytes:
        return _json({"delivery_id": delivery_id, "channel": self.name, "kind": notice.kind,
                      "text": self.text(notice), "notice": notice.payload()})

    def headers(self, body: bytes, delivery_id: int) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.spec.headers, "X-Paramedic-Delivery": str(delivery_id)}
        if self.spec.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.spec.secret.get_secret_value(), body)
        return headers


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes with ``secret``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def slack_escape(text: str) -> str:
    """Slack's three control characters, so evidence cannot ``<!channel>`` anybody."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackChannelImpl(HttpChannel[SlackChannel]):
    """Slack incoming webhook."""

    type = "slack"

    def url(self) -> str:
        return self.spec.url.get_secret_value()

    def secrets(self) -> list[str]:
        return _url_secrets(self.spec.url.get_secret_value())

    def body(self, notice: Notice, delivery_id: int) -> bytes:
        text = slack_escape(self.text(notice))
        doc: dict[str, Any] = {"text": text}
        if self.spec.blocks:  # a section's text is capped at 3,000 characters
            doc["blocks"] = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]
        return _json(doc)


def pagerduty_dedup_key(dedup_key: str) -> str:
    """The alert key for an incident: the same for its trigger, acknowledge and resolve (<= 255 chars)."""
    key = f"paramedic:{dedup_key}"
    if len(key) <= 255:
        return key
    return "paramedic:sha256:" + hashlib.sha256(dedup_key.encode("utf-8")).hexdigest()


def pagerduty_event(notice: Notice, routing_key: str, text: str, source: str = "") -> dict[str, Any]:
    """The Events API v2 document for ``notice`` (pure)."""
    action = PAGERDUTY_ACTIONS[notice.kind]
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action,
                             "dedup_key": pagerduty_dedup_key(notice.dedup_key), "client": "paramedic"}
    if action != "trigger":
        return event
    payload: dict[str, Any] = {
        "summary": f"[{notice.severity}] {notice.issue} ({notice.service})"[:1024],
        "source": source or notice.target or notice.service or "paramedic",
        "severity": PAGERDUTY_SEVERITY[notice.severity],
        "custom_details": {**notice.payload(), "text": text},
    }
    at = iso_time(notice.updated_at if notice.updated_at is not None else notice.started_at)
    if at:
        payload["timestamp"] = at
    if notice.check:
        payload["component"] = notice.check
    if notice.service:
        payload["group"] = notice.service
    if notice.runbook:
        payload["class"] = notice.runbook
    event["payload"] = payload
    return event


class PagerDutyChannelImpl(HttpChannel[PagerDutyChannel]):
    """PagerDuty Events API v2."""

    type = "pagerduty"

    def url(self) -> str:
        return self.spec.url

    def secrets(self) -> list[str]:
        return [self.spec.routing_key.get_secret_value()]

    def body(self, notice: Notice, delivery_id: int) -> bytes:
        return _json(pagerduty_event(notice, self.spec.routing_key.get_secret_value(), self.text(notice),
                                     self.spec.source))


# --------------------------------------------------------------------------- log


class LogChannelImpl(Channel[LogChannel]):
    """The message, as one log record, with the notice's identity as extra fields."""

    type = "log"

    def __init__(self, spec: LogChannel, logger: logging.Logger = LOGGER) -> None:
        super().__init__(spec)
        self.logger = logger

    async def deliver(self, notice: Notice, delivery_id: int) -> None:
        level = logging.getLevelName(self.spec.level.upper())
        self.logger.log(level, "%s", self.text(notice), extra={
            "channel": self.name, "incident": notice.incident_id, "kind": notice.kind,
            "severity": notice.severity, "delivery_id": delivery_id,
        })


# --------------------------------------------------------------------------- email


class EmailChannelImpl(Channel[EmailChannel]):
    """One plain-text mail per notice; mails of one incident thread together (References)."""

    type = "email"

    def __init__(self, spec: EmailChannel) -> None:
        super().__init__(spec)
        self.tls = ssl.create_default_context(cafile=spec.ca_file)

    def secrets(self) -> list[str]:
        return [self.spec.password.get_secret_value()] if self.spec.password is not None else []

    def describe(self) -> str:
        return f"email {self.name} (smtp://{self.spec.host}:{self.spec.port}, {self.spec.tls})"

    def message(self, notice: Notice, delivery_id: int) -> EmailMessage:
        """The mail for ``notice`` (pure but for the Date and Message-ID headers)."""
        domain = self.spec.sender.rpartition("@")[2].strip("> ") or "paramedic"
        thread = f"<paramedic.incident-{notice.incident_id}." \
                 f"{hashlib.sha256(notice.dedup_key.encode()).hexdigest()[:16]}@{domain}>"
        message = EmailMessage()
        message["Subject"] = self.renderer.subject(notice)
        self._report_template_error()
        message["From"] = self.spec.sender
        message["To"] = ", ".join(self.spec.recipients)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        if notice.kind == "initial":
            message["Message-ID"] = thread
        else:
            message["Message-ID"] = make_msgid(f"paramedic.{delivery_id}", domain=domain)
            message["In-Reply-To"] = thread
            message["References"] = thread
        message["X-Paramedic-Incident"] = str(notice.incident_id)
        message["X-Paramedic-Kind"] = notice.kind
        message["X-Paramedic-Severity"] = notice.severity
        message.set_content(self.text(notice) + "\n")
        return message

    async def deliver(self, notice: Notice, delivery_id: int) -> None:
        message = self.message(notice, delivery_id)
        where = f"smtp://{self.spec.host}:{self.spec.port}"
        try:
            await asyncio.to_thread(self._send, message)
        except smtplib.SMTPAuthenticationError as exc:
            raise RejectedError(self.mask(f"{where}: login refused ({exc.smtp_code})")) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise RejectedError(self.mask(f"{where}: {exc}")) from None
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(f"{r} ({code})" for r, (code, _msg) in exc.recipients.items())
            raise RejectedError(self.mask(f"{where}: recipients refused: {refused}")) from None
        except smtplib.SMTPResponseException as exc:
            text = self.mask(f"{where}: {exc.smtp_code} {_answer(_bytes(exc.smtp_error))}")
            raise (RejectedError if 500 <= exc.smtp_code < 600 else DeliveryError)(text) from None
        except ssl.SSLError as exc:
            raise DeliveryError(self.mask(f"{where}: TLS failed: {exc.reason or type(exc).__name__}")) from None
        except TimeoutError:
            raise DeliveryError(f"{where}: no answer within {self.spec.timeout:g}s") from None
        except (smtplib.SMTPException, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise DeliveryError(self.mask(f"{where}: {type(exc).__name__}: {reason}")) from None

    def _send(self, message: EmailMessage) -> None:
        """Blocking SMTP conversation (runs in a worker thread; every socket step has the timeout)."""
        spec = self.spec
        smtp: smtplib.SMTP
        if spec.tls == "tls":
            smtp = smtplib.SMTP_SSL(spec.host, spec.port, timeout=spec.timeout, context=self.tls)
        else:
            smtp = smtplib.SMTP(spec.host, spec.port, timeout=spec.timeout)
        with smtp:
            smtp.ehlo()
            if spec.tls == "starttls":
                smtp.starttls(context=self.tls)  # no STARTTLS offered: SMTPNotSupportedError, never plain text
                smtp.ehlo()
            if spec.username is not None and spec.password is not None:
                smtp.login(spec.username, spec.password.get_secret_value())
            smtp.send_message(message)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", errors="replace")


# --------------------------------------------------------------------------- building


def build_channel(spec: ChannelBase, http: HttpPoster, logger: logging.Logger = LOGGER) -> Channel[Any]:
    """The channel object for one validated channel spec."""
    if isinstance(spec, LogChannel):
        return LogChannelImpl(spec, logger)
    if isinstance(spec, WebhookChannel):
        return WebhookChannelImpl(spec, http)
    if isinstance(spec, SlackChannel):
        return SlackChannelImpl(spec, http)
    if isinstance(spec, EmailChannel):
        return EmailChannelImpl(spec)
    if isinstance(spec, PagerDutyChannel):
        return PagerDutyChannelImpl(spec, http)
    raise TypeError(f"no channel implementation for {type(spec).__name__}")


def build_channels(settings: HasChannels, http: HttpPoster,
                   logger: logging.Logger = LOGGER) -> dict[str, Channel[Any]]:
    """Every configured channel by name, all HTTP ones sharing ``http``.

    Raises :class:`~agent.kernel.errors.ConfigError` naming every channel that cannot be set up
    (``notifications.channels[1].ca_file: cannot load /etc/ca.pem: No such file or directory``):
    what the config's validation cannot see because it reads no files.
    """
    channels: dict[str, Channel[Any]] = {}
    problems: list[str] = []
    for index, spec in enumerate(settings.channels):
        try:
            channels[spec.name] = build_channel(spec, http, logger)
        except Exception as exc:
            problems.append(setup_problem(index, spec, exc))
    if problems:
        raise ConfigError(problems, "notifications")
    return channels


class HasChannels(Protocol):
    """What :func:`build_channels` reads of the ``notifications:`` section."""

    @property
    def channels(self) -> Sequence[ChannelBase]: ...


def setup_problem(index: int, spec: ChannelBase, exc: Exception) -> str:
    """The ``path: message`` line for a channel whose object could not be built (never its secrets)."""
    where = f"notifications.channels[{index}]"
    ca_file: str | None = getattr(spec, "ca_file", None)
    if ca_file is not None and isinstance(exc, OSError):  # ssl.SSLError is an OSError too
        reason = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
        return f"{where}.ca_file: cannot load {ca_file}: {reason}"
    return f"{where}: channel {spec.name} cannot be set up: {type(exc).__name__}"


__all__ = [
    "Channel", "DeliveryError", "HttpPoster", "RejectedError", "build_channel", "build_channels",
    "pagerduty_dedup_key", "pagerduty_event", "setup_problem", "sign",
]
