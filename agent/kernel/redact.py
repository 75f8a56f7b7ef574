"""Keep secrets out of everything paramedic prints, logs or stores.

Two layers, because one is never enough:

1. *Structural*: :func:`redact_url` hides the password in ``user:pass@host`` and the values
   of token-like query parameters; :func:`redact_headers` hides sensitive header values.
   Probe modules use these when they describe their target.
2. *By value*: :func:`collect_secrets` walks the validated config and gathers every
   ``SecretStr``, URL password, token query value and sensitive header value; a
   :class:`Redactor` then replaces any occurrence of those strings in any text (an error
   message from a driver that echoes its DSN, for instance). Every output path (CLI
   table and JSON, logs, the store, HTTP pages) goes through the redactor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

MASK = "***"
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
     "x-auth-token", "x-vault-token", "private-token", "x-access-token"}
)
_SENSITIVE_PARAM = re.compile(r"(pass|secret|token|key|auth|signature|sig|credential)", re.I)
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact_url(url: str) -> str:
    """``https://u:p@h/x?token=t`` -> ``https://u:***@h/x?token=***``; garbage passes through."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SENSITIVE_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_dsn(dsn: str) -> str:
    """Hide the password in a URL-style or ``key=value`` libpq DSN."""
    if "://" in dsn:
        return redact_url(dsn)
    return _DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, dsn)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with sensitive values masked."""
    return {k: MASK if k.lower() in SENSITIVE_HEADERS else v for k, v in headers.items()}


def _url_secrets(text: str) -> Iterator[str]:
    if "://" not in text:
        yield from (m.group(2).strip("'") for m in _DSN_PASSWORD.finditer(text))
        return
    try:
        parts = urlsplit(text)
        if parts.password:
            yield parts.password
            yield unquote(parts.password)  # what a driver sees (and may echo in an error)
        for key, value in parse_qsl(parts.query):
            if value and _SENSITIVE_PARAM.search(key):
                yield value
        for pair in parts.query.split("&"):  # as sent on the wire, still percent-encoded
            key, _, raw = pair.partition("=")
            if raw and _SENSITIVE_PARAM.search(unquote_plus(key)):
                yield raw
    except ValueError:
        return


def _walk(value: Any, key: str = "") -> Iterator[str]:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        yield secret
        yield from _url_secrets(secret)  # a DSN or URL kept as a secret: its password alone too
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name), name)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, str) and str(k).lower() in SENSITIVE_HEADERS:
                yield v
                yield from _bearer_parts(v)
            else:
                yield from _walk(v, str(k))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item, key)
    elif isinstance(value, str):
        yield from _url_secrets(value)


def _bearer_parts(value: str) -> Iterator[str]:
    scheme, _, credential = value.partition(" ")
    if credential and scheme.lower() in {"bearer", "basic", "token"}:
        yield credential


def collect_secrets(config: Any) -> frozenset[str]:
    """Every secret value reachable in a validated config (min. 3 characters, to stay sane)."""
    return frozenset(s for s in _walk(config) if len(s) >= 3)


class Redactor:
    """Replace known secret values in text and nested data with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        ordered = sorted(set(secrets), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def text(self, value: str) -> str:
        """``value`` with every known secret masked."""
        return self._pattern.sub(MASK, value) if self._pattern is not None else value

    def data(self, value: Any) -> Any:
        """Deep copy of JSON-like ``value`` with secrets masked in every string."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value
