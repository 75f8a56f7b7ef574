"""The one error tree of paramedic.

Every error paramedic raises on purpose is a :class:`ParamedicError`. Each class says
whether retrying can help (``permanent``) and which process exit code it maps to when it
reaches the CLI (``exit_code``). Probe errors additionally say which check status they
become, so the engine never has to guess from a message::

    ParamedicError                      exit 3
    ├── ConfigError                     exit 2 (check, audit: 3), permanent: the config is invalid
    ├── StoreError                      exit 3: the state store cannot be read or written
    └── ProbeError                      a probe could not produce observations
        ├── TargetError                 status CRITICAL: the target itself is failing
        │   ├── ConnectionRefusedProbeError   nothing listens on the port
        │   ├── ConnectionLostError           the peer reset or closed the connection
        │   ├── ProbeTimeoutError             no answer within the check's timeout
        │   └── ProtocolError                 the target answered something that is not the protocol
        └── AgentSideError              status UNKNOWN: the agent cannot tell whether the target is fine
            ├── DNSError                      the name does not resolve from here
            ├── TLSError                      certificate verification or handshake failed
            ├── AuthError                     credentials were refused
            └── DependencyUnavailableError    e.g. the Docker socket is unreachable

Why UNKNOWN for agent-side failures: the remediation layer never acts on UNKNOWN, so a
wrong password or a broken CA bundle in *our* config can never make paramedic restart a
healthy service.
"""

from __future__ import annotations

from typing import ClassVar, Literal

StatusName = Literal["OK", "WARNING", "CRITICAL", "UNKNOWN"]


class ParamedicError(Exception):
    """Base of every error paramedic raises deliberately."""

    permanent: ClassVar[bool] = False
    exit_code: ClassVar[int] = 3


class ConfigError(ParamedicError):
    """The configuration is invalid. ``problems`` holds one ``path: message`` line each."""

    permanent = True
    exit_code = 2

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n" + "\n".join(self.problems))


class StoreError(ParamedicError):
    """The persistent store could not be opened, migrated, read or written."""


class ProbeError(ParamedicError):
    """A probe could not produce observations. ``status`` is the check status it maps to."""

    status: ClassVar[StatusName] = "UNKNOWN"


class TargetError(ProbeError):
    """The target is failing: refused, reset, timed out, or spoke garbage."""

    status = "CRITICAL"


class ConnectionRefusedProbeError(TargetError):
    """Nothing accepts connections at the target address."""


class ConnectionLostError(TargetError):
    """The target reset or closed the connection before answering."""


class ProbeTimeoutError(TargetError):
    """The target did not answer within the check's timeout."""


class ProtocolError(TargetError):
    """The target answered, but not in the protocol the probe speaks."""


class AgentSideError(ProbeError):
    """The agent cannot reach a verdict; the target may be fine. Never remediated."""

    status = "UNKNOWN"
    permanent = True


class DNSError(AgentSideError):
    """The target's host name does not resolve from the agent."""


class TLSError(AgentSideError):
    """TLS handshake or certificate verification failed."""


class AuthError(AgentSideError):
    """The target refused the agent's credentials."""


class DependencyUnavailableError(AgentSideError):
    """Something the probe needs on the agent's side (Docker socket, a library) is missing."""
