"""``webhook`` params and plans (pure). Sending: tests/integration/test_remediation_webhook.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import Target
from remediations.webhook import Webhook, WebhookParams, secrets_of, status_text

TARGET = Target(check="web-http", container="web")
NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z


def params(**fields: Any) -> WebhookParams:
    return WebhookParams.model_validate({"url": "https://hooks.example.test/redeploy", **fields})


def test_params() -> None:
    p = params()
    assert (p.method, p.timeout, p.payload, p.ca_file) == ("POST", 10.0, {}, None)
    assert p.expect_status == tuple(range(200, 300))
    with pytest.raises(ValidationError, match="http:// or https://"):
        params(url="ftp://example.test/x")
    with pytest.raises(ValidationError):
        params(method="GET")
    with pytest.raises(ValidationError):
        params(expect_status=[700])
    with pytest.raises(ValidationError):
        params(retries=3)


def test_plan_builds_the_exact_body_with_the_payload_merged() -> None:
    p = params(payload={"service": "shop", "plan": "overridden by config", "nested": {"a": [1, 2]}})
    plan = Webhook(p).plan(TARGET, {"now": NOW})
    assert plan.changes
    assert plan.data["body"] == {
        "action": "webhook", "check": "web-http", "target": "container web", "plan": "overridden by config",
        "at": "2026-11-18T11:06:40Z", "service": "shop", "nested": {"a": [1, 2]},
    }
    assert plan.summary == "POST https://hooks.example.test/redeploy about container web"
    assert plan.steps == ("POST https://hooks.example.test/redeploy with a JSON body (action, at, check, nested, plan, "
                          "service, target) (timeout 10s, success: status 200-299)",)
    assert json.loads(json.dumps(plan.as_dict())) == plan.as_dict() | {"steps": list(plan.steps)}


def test_default_body() -> None:
    plan = Webhook(params()).plan(Target(check="db"), {"now": NOW})
    assert plan.data["body"] == {"action": "webhook", "check": "db", "target": "check db",
                                 "plan": "POST https://hooks.example.test/redeploy about check db",
                                 "at": "2026-11-18T11:06:40Z"}


def test_secrets_never_reach_the_plan() -> None:
    p = params(url="https://bot:pa55word@hooks.example.test/x?token=t0ken-abc&team=ops",
               headers={"Authorization": "Bearer s3cr3t-bearer", "X-Team": "ops"})
    plan = Webhook(p).plan(TARGET, {"now": NOW})
    text = json.dumps(plan.as_dict())
    for secret in ("pa55word", "t0ken-abc", "s3cr3t-bearer"):
        assert secret not in text
    assert plan.data["url"] == "https://bot:***@hooks.example.test/x?token=***&team=ops"
    assert plan.data["headers"] == {"Authorization": "***", "X-Team": "ops"}
    assert set(secrets_of(p)) >= {"pa55word", "t0ken-abc", "s3cr3t-bearer", "Bearer s3cr3t-bearer"}


def test_status_text() -> None:
    assert status_text(tuple(range(200, 300))) == "200-299"
    assert status_text((204, 200)) == "200, 204"
    assert status_text((200, 201, 202)) == "200-202"
