"""Shared literals: incident severities and the kinds of notice (the runbook's severity matrix)."""

from __future__ import annotations

from typing import Literal

SevLevel = Literal["SEV-1", "SEV-2", "SEV-3", "SEV-4"]
SEV_LEVELS: tuple[SevLevel, ...] = ("SEV-1", "SEV-2", "SEV-3", "SEV-4")
NoticeKind = Literal["initial", "update", "resolution", "reminder", "escalation", "ack"]
NOTICE_KINDS: tuple[NoticeKind, ...] = ("initial", "update", "resolution", "reminder", "escalation", "ack")
