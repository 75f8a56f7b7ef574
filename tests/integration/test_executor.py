"""The executor against real Docker and a real store: journal before and after, dry-run
changes nothing, a crash mid-action is reconciled and not repeated."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.config.model import Config, parse_config
from agent.kernel.results import Result, Status
from agent.registry import probe_class
from agent.runtime.executor import Executor
from agent.runtime.runner import ProbeRunner
from agent.store.sqlite import Store
from remediations.base import ActionContext, Outcome, Plan, verify

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(120)]


def _config(name: str) -> Config:
    return parse_config(f"""
checks:
  - {{name: web, type: container, container: {name}, timeout: 5s}}
runbooks:
  - name: service-down
    match: {{checks: [web]}}
    steps:
      - {{action: restart, params: {{mode: graceful, stop_timeout: 2s}}, verify_for: 20s}}
""")


async def _run_check(config: Config) -> Result:
    spec = config.check("web")
    return await ProbeRunner().run(spec, probe_class(spec.type)(spec))


def _started_at(docker_client: Any, name: str) -> str:
    return str(docker_client.containers.get(name).attrs["State"]["StartedAt"])


def test_a_step_is_journaled_applied_and_verified(tmp_path: Path, containers: Any, docker_client: Any) -> None:
    name = f"paramedic-exec-{uuid.uuid4().hex[:8]}"
    containers.run(["sleep", "300"], name=name)
    config = _config(name)
    store = Store(tmp_path / "s.db")
    executor = Executor(store, ActionContext())
    before = _started_at(docker_client, name)

    async def go() -> Any:
        prepared = await executor.prepare(config.check("web"), config.runbooks[0], 0)
        assert prepared.plan.changes, prepared.plan.summary
        return await executor.execute(
            prepared, [{"policy": "cooldown", "allowed": True, "reason": "ok"}], dry_run=False,
            verify=lambda: verify(lambda: _run_check(config), 1, 20.0, 0.5),
        )

    execution = asyncio.run(go())
    assert execution.outcome == "ok"
    assert execution.verification is not None
    assert execution.verification.ok
    assert _started_at(docker_client, name) != before  # it really restarted
    [entry] = store.journal()
    assert (entry["action"], entry["target"], entry["outcome"], entry["dry_run"]) == (
        "restart", f"container {name}", "ok", False)
    assert entry["detail"]["decisions"][0]["policy"] == "cooldown"
    assert entry["outcome_detail"]["verification"]["ok"] is True
    assert store.open_intents() == []
    store.close()


def test_dry_run_records_the_plan_and_changes_nothing(tmp_path: Path, containers: Any, docker_client: Any) -> None:
    name = f"paramedic-exec-{uuid.uuid4().hex[:8]}"
    containers.run(["sleep", "300"], name=name)
    config = _config(name)
    store = Store(tmp_path / "s.db")
    executor = Executor(store, ActionContext())
    before = _started_at(docker_client, name)

    async def go() -> Any:
        prepared = await executor.prepare(config.check("web"), config.runbooks[0], 0)
        return await executor.execute(prepared, [], dry_run=True)

    execution = asyncio.run(go())
    assert execution.outcome == "dry-run"
    assert _started_at(docker_client, name) == before
    [entry] = store.journal()
    assert entry["dry_run"] is True
    assert entry["outcome"] == "dry-run"
    assert "restart" in entry["detail"]["summary"]
    store.close()


def test_a_missing_container_gives_a_refused_plan_that_is_journaled(tmp_path: Path, docker_client: Any) -> None:
    config = _config(f"paramedic-missing-{uuid.uuid4().hex[:8]}")
    store = Store(tmp_path / "s.db")
    executor = Executor(store, ActionContext())

    async def go() -> Any:
        prepared = await executor.prepare(config.check("web"), config.runbooks[0], 0)
        return await executor.execute(prepared, [], dry_run=False)

    execution = asyncio.run(go())
    assert execution.outcome == "refused"
    assert store.journal()[0]["outcome_detail"]["reason"]
    store.close()


def test_an_interrupted_action_is_reconciled_not_repeated(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.journal_intent(check="web", target="container x", runbook="service-down", step=0, action="restart",
                         dry_run=False, detail={"plan": {}})
    executor = Executor(store, ActionContext())
    checked: list[str] = []

    async def check_now(name: str) -> Result:
        checked.append(name)
        return Result(name, "container", Status.OK, "all conditions passed", 1.0)

    closed = asyncio.run(executor.reconcile(check_now))
    assert checked == ["web"]
    assert [c["outcome"] for c in closed] == ["interrupted"]
    assert store.open_intents() == []
    assert store.journal()[0]["outcome_detail"]["check_status"] == "OK"
    assert asyncio.run(executor.reconcile(check_now)) == []  # nothing left to reconcile
    store.close()


def test_an_apply_that_raises_is_recorded_as_failed(tmp_path: Path) -> None:
    config = _config("whatever")
    store = Store(tmp_path / "s.db")
    executor = Executor(store, ActionContext())

    class Exploding:
        async def apply(self, plan: Plan) -> Outcome:
            raise ConnectionResetError("Docker went away mid-action")

    async def go() -> Any:
        prepared = await executor.prepare(config.check("web"), config.runbooks[0], 0)
        fake_plan = Plan("restart", "container whatever", True, "restart container whatever")
        rigged = type(prepared)(prepared.check, prepared.runbook, 0, prepared.target, fake_plan, Exploding())  # type: ignore[arg-type]
        return await executor.execute(rigged, [], dry_run=False)

    execution = asyncio.run(go())
    assert execution.outcome == "failed"
    assert "Docker went away" in store.journal()[0]["outcome_detail"]["result"]["message"]
    store.close()


def test_warm_up_opens_the_docker_client_the_first_action_will_use_and_changes_nothing(
        tmp_path: Path, containers: Any, docker_client: Any) -> None:
    name = f"paramedic-exec-{uuid.uuid4().hex[:8]}"
    containers.run(["sleep", "300"], name=name)
    config = _config(name)
    store = Store(tmp_path / "s.db")
    context = ActionContext()
    executor = Executor(store, context)
    before = _started_at(docker_client, name)

    async def go() -> tuple[Any, Any]:
        await executor.warm(config.runbooks)
        warmed = next(iter(context.resources._items.values()))
        prepared = await executor.prepare(config.check("web"), config.runbooks[0], 0)
        assert prepared.plan.changes, prepared.plan.summary
        used = next(iter(context.resources._items.values()))
        await context.resources.close()
        return warmed, used

    warmed, used = asyncio.run(go())
    assert warmed is used  # the step's inspect used the client the warm-up opened
    assert _started_at(docker_client, name) == before
    assert store.journal() == []  # warming journals nothing
    store.close()


def test_warm_up_never_raises_when_docker_is_unreachable(tmp_path: Path) -> None:
    config = parse_config("""
checks:
  - {name: web, type: http, url: "http://127.0.0.1:1/"}
runbooks:
  - name: r
    match: {checks: [web]}
    steps:
      - {action: restart, params: {container: c, docker_host: "tcp://127.0.0.1:1"}}
""")
    context = ActionContext()
    store = Store(tmp_path / "s.db")

    async def go() -> None:
        await Executor(store, context).warm(config.runbooks)  # logs at debug, raises nothing
        await context.resources.close()

    asyncio.run(go())
    store.close()
