"""Driving a remediation the way the executor does, for tests of the actions themselves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from remediations.base import Outcome, Plan, Remediation, Target


def run_action(action: Remediation[Any], target: Target) -> tuple[Plan, Outcome | None]:
    """``inspect`` then ``plan`` ``action`` for ``target``, then ``apply`` the plan, in a fresh
    event loop (``asyncio.run``): the plan and the outcome.

    A plan that is refused or changes nothing is not applied: its outcome is None. Whatever
    ``inspect``, ``plan`` or ``apply`` raises propagates.
    """

    async def go() -> tuple[Plan, Outcome | None]:
        snapshot = await action.inspect(target)
        plan = action.plan(target, snapshot)
        if plan.refused or not plan.changes:
            return plan, None
        return plan, await action.apply(plan)

    return asyncio.run(go())


@dataclass(frozen=True)
class Bounds:
    """What ``scale``'s params carry (``ScaleParams`` in remediations/scale.py), for calling
    ``plan_scale`` / ``apply_scale`` directly: a target ``replicas`` or a ``step``, within
    ``min``..``max``."""

    replicas: int | None = None
    step: int | None = None
    min: int = 1
    max: int = 10
