"""``webhook``: POST a JSON document to a URL, for what the built-in actions do not cover.

A CI job that redeploys, a ChatOps bot, an orchestration API: the receiver does the fix.

* ``inspect`` reads only the clock (the payload's ``at``).
* ``plan`` (pure) builds the exact body: ``{"action": "webhook", "check": <triggering
  check>, "target": <target>, "plan": <summary>, "at": <ISO time>}`` with the step's
  ``payload`` merged on top (its keys win). The URL and headers in the plan, the journal
  and the outcome are redacted (``user:***@``, ``?token=***``, ``Authorization: ***``).
* ``apply`` sends that body once (``urllib.request`` in a worker thread: no new
  dependency, no connection kept), TLS verified against the system store or ``ca_file``,
  redirects *not* followed (a 3xx is an answer, judged like any other status), and judges
  the status code against ``expect_status``. The outcome carries the status and up to
  4 KiB of the response body, with the URL's and headers' secrets masked.

Never retried here: a webhook is not known to be idempotent; the runbook's ladder and the
guardrails decide whether to try again.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field, JsonValue, field_validator

from agent.kernel.durations import Duration, format_duration
from agent.kernel.redact import MASK, SENSITIVE_HEADERS, redact_headers, redact_url
from remediations.base import Outcome, Params, Plan, Remediation, Target

#: How much of the response body the outcome keeps.
MAX_BODY = 4096
USER_AGENT = "paramedic-webhook"
_SECRET_PARAM = re.compile(r"(pass|secret|token|key|auth|signature|sig|credential)", re.I)


class WebhookParams(Params):
    """Where to send it, and what counts as success."""

    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = Field(default=10.0, gt=0)
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    expect_status: tuple[int, ...] = Field(default=tuple(range(200, 300)), min_length=1)
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("expect_status")
    @classmethod
    def _codes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 100 <= code <= 599 for code in value):
            raise ValueError("status codes are between 100 and 599")
        return value


def secrets_of(params: WebhookParams) -> list[str]:
    """Secret strings in the URL (password, token-like query values) and sensitive headers."""
    found: list[str] = []
    parts = urlsplit(params.url)
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    found += [v for k, v in parse_qsl(parts.query) if _SECRET_PARAM.search(k)]
    for key, value in params.headers.items():
        if key.lower() in SENSITIVE_HEADERS:
            found.append(value)
            found.append(value.partition(" ")[2])  # the credential after "Bearer "
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def masked(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def status_text(codes: tuple[int, ...]) -> str:
    """``200-299`` for a run of codes, else a list."""
    ordered = sorted(set(codes))
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(str(c) for c in ordered)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Return 3xx answers as they are: a redirected POST would change method or lose its body."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


def send(params: WebhookParams, body: bytes) -> tuple[int, bytes]:
    """One request (blocking; run it in a thread). ``HTTPError`` statuses are returned, not raised."""
    context = ssl.create_default_context(cafile=params.ca_file)
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **params.headers}
    request = urllib.request.Request(params.url, data=body, headers=headers, method=params.method)  # noqa: S310
    try:
        with opener.open(request, timeout=params.timeout) as response:
            return int(response.status), response.read(MAX_BODY)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), error.read(MAX_BODY)


class Webhook(Remediation[WebhookParams]):
    """POST (or PUT/PATCH) a JSON document describing the failure to a URL."""

    action: ClassVar[str] = "webhook"
    params_model: ClassVar[type[WebhookParams]] = WebhookParams

    async def inspect(self, target: Target) -> dict[str, Any]:
        return {"now": self.context.clock()}

    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        p = self.params
        url = redact_url(p.url)
        summary = f"{p.method} {url} about {target.describe()}"
        at = snapshot.get("now")
        body: dict[str, Any] = {
            "action": self.action, "check": target.check, "target": target.describe(), "plan": summary,
            "at": datetime.fromtimestamp(float(at), UTC).isoformat().replace("+00:00", "Z") if at else None,
        }
        body.update(p.payload)
        headers = redact_headers(p.headers)
        shown_headers = "".join(f", {k}: {v}" for k, v in sorted(headers.items()))
        step = (f"{p.method} {url} with a JSON body ({', '.join(sorted(body))}){shown_headers} "
                f"(timeout {format_duration(p.timeout)}, success: status {status_text(p.expect_status)})")
        data = {"method": p.method, "url": url, "headers": headers, "body": body}
        return Plan(self.action, target.describe(), True, summary, steps=(step,), data=data)

    async def apply(self, plan: Plan) -> Outcome:
        p = self.params
        secrets = secrets_of(p)
        url = redact_url(p.url)
        body = json.dumps(plan.data.get("body") or {}, separators=(",", ":")).encode()
        try:
            status, raw = await asyncio.to_thread(send, p, body)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            text = "timed out" if isinstance(reason, TimeoutError) else str(reason) or type(reason).__name__
            return Outcome(False, masked(f"{p.method} {url} failed: {text}", secrets), {"status": None})
        except Exception as exc:  # http.client protocol errors and the like: an answer we cannot read
            return Outcome(False, masked(f"{p.method} {url} failed: {type(exc).__name__}: {exc}", secrets),
                           {"status": None})
        text = masked(raw.decode("utf-8", errors="replace"), secrets)
        ok = status in p.expect_status
        verdict = "" if ok else f" (expected {status_text(p.expect_status)})"
        return Outcome(ok, f"{p.method} {url} answered {status}{verdict}", {"status": status, "body": text})


__all__ = ["Webhook", "WebhookParams"]
