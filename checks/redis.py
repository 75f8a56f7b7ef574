"""``redis`` probe: connect with ``redis.asyncio``, PING, read INFO (like ``redis-cli ping``).

One fresh connection per run (a health probe should pay for its connect), RESP2 (works
with every Redis and compatible server, where redis-py's default HELLO 3 needs Redis 6),
no ``CLIENT SETINFO`` round trips, no client-side retries (the engine owns retries), and
``socket_connect_timeout``/``socket_timeout`` always set (redis-py waits forever by
default). The engine's ``wait_for`` remains the exact deadline; redis-py closes its
socket when a read is cancelled, and the client is closed in ``finally`` either way.

Observations: ``pong``, ``connect_ms`` (TCP/TLS + AUTH/SELECT), ``latency_ms`` (PING round
trip), from INFO ``redis_version``, ``uptime_s``, ``role`` (``master``/``slave``, as INFO
says), ``master_link_status`` (replicas only, else ``None``), ``connected_clients``,
``blocked_clients``, ``rejected_connections``, ``used_memory``, ``maxmemory`` (bytes) and
``memory_ratio`` (``None`` when ``maxmemory`` is 0, i.e. unlimited), and ``info.<field>``
for each name in ``info_fields``.

Errors: refused/reset/timeout/LOADING/"max number of clients" are the target failing
(CRITICAL); WRONGPASS/NOAUTH/NOPERM, TLS verification, DNS and a bad ``db`` are
agent-side (UNKNOWN).
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from agent.kernel.durations import Duration
from agent.kernel.errors import (
    AgentSideError,
    AuthError,
    ConnectionLostError,
    ConnectionRefusedProbeError,
    DNSError,
    ProbeError,
    ProbeTimeoutError,
    TargetError,
    TLSError,
)
from agent.kernel.redact import MASK, redact_url
from checks.base import CheckSpec, Probe
from checks.net import TlsSpec

_SCHEMES = ("redis", "rediss", "unix")
_FIELD = re.compile(r"^[A-Za-z0-9_]+$")


class RedisSpec(CheckSpec):
    """A Redis server to PING, by ``url`` or by ``host``/``port``/``db``."""

    type: Literal["redis"]
    url: SecretStr | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    db: int | None = Field(default=None, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsSpec | None = None
    socket_connect_timeout: Duration | None = None
    socket_timeout: Duration | None = None
    info_fields: tuple[str, ...] = ()

    default_conditions: ClassVar[tuple[str, ...]] = ("pong",)

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _split_url(value.get_secret_value())
        return value

    @field_validator("info_fields")
    @classmethod
    def _field_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not _FIELD.match(name)]
        if bad:
            raise ValueError(f"INFO field names are letters, digits and '_' (got {bad[0]!r})")
        return value

    @field_validator("socket_connect_timeout", "socket_timeout")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @model_validator(mode="after")
    def _url_or_host(self) -> RedisSpec:
        if self.url is None and self.host is None:
            raise ValueError("give url, or host (with port, db, username, password as needed)")
        if self.url is not None:
            self._check_url(self.url.get_secret_value())
        if self.tls is not None and self.tls.server_name:
            raise ValueError("tls.server_name is not supported by the redis probe")
        return self

    def _check_url(self, url: str) -> None:
        clash = [f for f in ("host", "port", "db") if getattr(self, f) is not None]
        if clash:
            raise ValueError(f"give either url or {', '.join(clash)}, not both (put them in the url)")
        parts = _split_url(url)
        if self.password is not None and parts.password:
            raise ValueError("the url already holds a password: give it in url or password, not both")
        if self.username is not None and parts.username:
            raise ValueError("the url already holds a username: give it in url or username, not both")
        if self.tls is not None and parts.scheme != "rediss":
            raise ValueError("tls settings need a rediss:// url")

    def target(self) -> str:
        if self.url is None:
            return f"{self.address()}/{self.db or 0}"
        parts = _split_url(self.url.get_secret_value())
        if parts.scheme == "unix":
            return self.address()
        db = parts.path.strip("/") or "0"
        return f"{'rediss://' if parts.scheme == 'rediss' else ''}{self.address()}/{db}"

    def address(self) -> str:
        """``host:port`` (or the socket path), for error messages."""
        if self.url is None:
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"{host}:{self.port or 6379}"
        parts = _split_url(self.url.get_secret_value())
        if parts.scheme == "unix":
            return unquote(parts.path)
        hostport = parts.netloc.rpartition("@")[2]
        return hostport if parts.port else f"{hostport}:6379"

    def connect_timeout_s(self) -> float:
        """``socket_connect_timeout``, defaulting to the check timeout."""
        return self.socket_connect_timeout or self.timeout

    def read_timeout_s(self) -> float:
        """``socket_timeout``, defaulting to the check timeout."""
        return self.socket_timeout or self.timeout

    def secrets(self) -> list[str]:
        """Every secret this spec holds (decoded and as written), for scrubbing messages."""
        found = [self.password.get_secret_value()] if self.password is not None else []
        if self.url is not None:
            url = self.url.get_secret_value()
            parts = _split_url(url)
            raw = parts.netloc.rpartition("@")[0].partition(":")[2]
            found += [url, raw, unquote(raw)]
        return [s for s in found if s]


def _split_url(url: str) -> SplitResult:
    """``urlsplit`` with the checks redis-py would otherwise fail on at run time."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError:
        raise ValueError("url is not a valid URL (bad port or brackets)") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError("url must start with redis://, rediss:// or unix://")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// url needs a socket path")
        return parts
    if not parts.hostname:
        raise ValueError("url needs a host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError("the url path must be a database number (redis://host:6379/0)")
    return parts


def connection_kwargs(spec: RedisSpec) -> dict[str, Any]:
    """Keyword arguments for ``redis.asyncio.Redis`` / ``Redis.from_url`` (no retry object).

    With ``url`` they complement it (redis-py lets the URL's own values win); the spec
    validation already rejected the overlaps.
    """
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": spec.connect_timeout_s(),
        "socket_timeout": spec.read_timeout_s(),
        "protocol": 2,
        "driver_info": None,
        "health_check_interval": 0,
        "single_connection_client": True,
    }
    if spec.url is None:
        kwargs.update(host=spec.host, port=spec.port or 6379, db=spec.db or 0)
    if spec.username is not None:
        kwargs["username"] = spec.username
    if spec.password is not None:
        kwargs["password"] = spec.password.get_secret_value()
    tls = spec.tls
    uses_tls = tls is not None or (spec.url is not None and spec.url.get_secret_value().startswith("rediss:"))
    if uses_tls:
        tls = tls or TlsSpec()
        kwargs.update(
            ssl_ca_certs=tls.ca_file, ssl_certfile=tls.cert_file, ssl_keyfile=tls.key_file,
            ssl_cert_reqs="none" if tls.insecure else "required", ssl_check_hostname=not tls.insecure,
        )
        if spec.url is None:
            kwargs["ssl"] = True
    return kwargs

#: Read by :meth:`evidence`, for an incident's timeline.
REDIS_FIELDS = (
    "redis_version", "role", "uptime_in_seconds", "connected_clients", "blocked_clients", "rejected_connections",
    "used_memory_human", "maxmemory_human", "maxmemory_policy", "mem_fragmentation_ratio", "evicted_keys",
    "expired_keys", "loading", "rdb_last_bgsave_status", "aof_enabled", "aof_last_write_status",
    "connected_slaves", "master_link_status", "instantaneous_ops_per_sec",
)


class RedisProbe(Probe[RedisSpec]):
    """Opens a fresh connection per run; nothing is kept between runs."""

    evidence_label = "redis INFO"
    evidence_scope = "failing"
    spec_model = RedisSpec
    lazy_imports = ("redis", "redis.asyncio", "redis.asyncio.retry", "redis.backoff", "redis.exceptions")

    async def observe(self) -> dict[str, Any]:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        spec = self.spec
        secrets = spec.secrets()
        kwargs = connection_kwargs(spec) | {"retry": Retry(NoBackoff(), 0)}
        try:
            url = spec.url.get_secret_value() if spec.url is not None else None
            client = Redis.from_url(url, **kwargs) if url is not None else Redis(**kwargs)
        except (ValueError, TypeError, RedisError) as exc:
            raise AgentSideError(scrub(f"invalid redis settings: {exc}", secrets)) from None
        try:
            started = time.perf_counter()
            await client.initialize()
            connected = time.perf_counter()
            pong = await client.ping()
            answered = time.perf_counter()
            info = await client.info()
        except RedisError as exc:
            raise redis_error(exc, spec.address(), secrets) from None
        except OSError as exc:  # pragma: no cover - redis-py wraps these; belt and braces
            raise ConnectionLostError(scrub(f"{spec.address()}: {exc}", secrets)) from None
        finally:
            await client.aclose()
        out: dict[str, Any] = {
            "pong": bool(pong),
            "connect_ms": round((connected - started) * 1000, 3),
            "latency_ms": round((answered - connected) * 1000, 3),
        }
        out.update(info_observations(info, spec.info_fields))
        return out

    async def evidence(self, timeout: float) -> str:
        """The INFO fields an on-call engineer reads first (clients, memory, persistence, replication)."""
        spec = self.spec
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        kwargs = connection_kwargs(spec) | {"retry": Retry(NoBackoff(), 0)}
        url = spec.url.get_secret_value() if spec.url is not None else None
        client = Redis.from_url(url, **kwargs) if url is not None else Redis(**kwargs)
        try:
            info = await client.info()
        finally:
            await client.aclose()
        return "\n".join(f"{name}: {info[name]}" for name in REDIS_FIELDS if name in info) or "(INFO was empty)"

def info_observations(info: Mapping[str, Any], fields: Iterable[str] = ()) -> dict[str, Any]:
    """The built-in observations from a parsed INFO reply, plus ``info`` for ``fields``."""
    used = _int(info.get("used_memory"))
    limit = _int(info.get("maxmemory"))
    role = info.get("role")
    version = info.get("redis_version")
    out: dict[str, Any] = {
        "redis_version": None if version is None else str(version),
        "uptime_s": _int(info.get("uptime_in_seconds")),
        "role": role,
        "master_link_status": info.get("master_link_status") if role == "slave" else None,
        "connected_clients": _int(info.get("connected_clients")),
        "blocked_clients": _int(info.get("blocked_clients")),
        "rejected_connections": _int(info.get("rejected_connections")),
        "used_memory": used,
        "maxmemory": limit,
        "memory_ratio": round(used / limit, 4) if used is not None and limit else None,
    }
    names = list(fields)
    if names:
        out["info"] = {name: _json(info.get(name)) for name in names}
    return out


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


# --------------------------------------------------------------------------- errors

_AUTH_CODES = ("WRONGPASS", "NOAUTH", "NOPERM")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret and any URL password masked."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return re.sub(r"(rediss?://[^\s]+)", lambda m: redact_url(m.group(1)), text)


def _os_cause(exc: BaseException) -> BaseException | None:
    """The OS/TLS error redis-py wrapped (it raises its own error inside ``except OSError``)."""
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def redis_error(exc: Exception, where: str, secrets: Iterable[str] = ()) -> ProbeError:
    """Map a redis-py error onto the error tree (pure: tested without a server)."""
    from redis import exceptions as rx

    code = getattr(exc, "status_code", None)
    text = scrub(str(exc).strip() or type(exc).__name__, secrets)
    detail = f"{code} {text}" if code and not text.startswith(code) else text
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError) or (
        isinstance(exc, rx.ResponseError) and text.startswith(_AUTH_CODES)
    ):
        return AuthError(f"{where}: {detail}")
    if isinstance(exc, rx.BusyLoadingError):
        return TargetError(f"{where} is loading its dataset: {detail}")
    if isinstance(exc, rx.TimeoutError):
        return ProbeTimeoutError(f"{where}: {detail}")
    if isinstance(exc, rx.ConnectionError):
        return _connection_error(exc, where, detail)
    if isinstance(exc, rx.ResponseError):
        if "DB index is out of range" in text or "invalid DB index" in text.lower():
            return AgentSideError(f"{where}: {detail}")
        return TargetError(f"{where} answered an error: {detail}")
    return TargetError(f"{where}: {detail}")


def _connection_error(exc: Exception, where: str, detail: str) -> ProbeError:
    cause = _os_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = getattr(cause, "verify_message", None) or cause.strerror or cause
        return TLSError(f"TLS certificate of {where} failed verification: {reason}")
    if isinstance(cause, ssl.SSLError):
        return TLSError(f"TLS handshake with {where} failed: {getattr(cause, 'reason', None) or cause}")
    if isinstance(cause, socket.gaierror):
        return DNSError(f"cannot resolve {where}: {cause.strerror}")
    if isinstance(cause, ConnectionRefusedError) or "Connection refused" in detail:
        return ConnectionRefusedProbeError(f"connection refused by {where}")
    if "max number of clients reached" in detail:
        return TargetError(f"{where}: {detail}")
    return ConnectionLostError(f"{where}: {detail}")


__all__ = ["RedisProbe", "RedisSpec", "connection_kwargs", "info_observations", "redis_error"]
