"""The runbook engine over real Docker and a real store: approvals, pause, silences, dry-run,
and exactly-once under repeated failing results."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.model import Config, load_config
from agent.core.state import CheckState, Health
from agent.kernel.results import Result, Status
from agent.runtime.executor import Executor
from agent.runtime.remedy import Remedy
from agent.runtime.runner import run_once
from agent.store.sqlite import Store
from remediations.base import ActionContext

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(120)]

PARAMEDIC = Path(sys.executable).with_name("paramedic")
DOWN = CheckState("web", Health.DOWN, failures=3, since=1.0, last_status=Status.CRITICAL)


def _config(tmp_path: Path, container: str, approval: str = "none") -> Path:
    doc = {
        "checks": [{"name": "web", "type": "container", "container": container, "timeout": "5s"}],
        "guardrails": {"per_target": {"cooldown": "0s", "backoff": {"base": "0s", "max": "0s"}}},
        "runbooks": [{
            "name": "service-down", "severity": "SEV-1", "match": {"checks": ["web"]},
            "steps": [{"action": "restart", "params": {"mode": "graceful", "stop_timeout": "1s"},
                       "verify_for": "10s", "approval": approval}],
        }],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _engine(config: Config, store: Store, dry_run: bool = False) -> Remedy:
    async def run_check(name: str) -> Result:
        return (await run_once([config.check(name)]))[0]

    context = ActionContext(operator_stops=store.operator_stops)
    return Remedy(config, store, Executor(store, context), run_check, dry_run=dry_run)


def _failing() -> Result:
    return Result("web", "container", Status.CRITICAL, "health endpoint hangs", 1.0, started_at=time.time())


def _started(docker_client: Any, name: str) -> str:
    return str(docker_client.containers.get(name).attrs["State"]["StartedAt"])


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PARAMEDIC), *args, "-c", str(config)], capture_output=True, text=True, timeout=30,
                          check=False)


@pytest.fixture
def sleeper(containers: Any) -> str:
    name = f"paramedic-remedy-{uuid.uuid4().hex[:8]}"
    containers.run(["sleep", "300"], name=name)
    return name


def test_a_step_needing_approval_waits_for_a_person_then_runs(tmp_path: Path, sleeper: str, docker_client: Any) -> None:
    path = _config(tmp_path, sleeper, approval="required")
    config = load_config(path)
    store = Store(config.store_path())
    remedy = _engine(config, store)
    before = _started(docker_client, sleeper)

    assert asyncio.run(remedy.handle(_failing(), DOWN)) is None
    [request] = store.journal()
    assert request["outcome"] == "pending-approval"
    assert asyncio.run(remedy.handle(_failing(), DOWN)) is None  # still waiting: no second request
    assert [e["outcome"] for e in store.journal()] == ["blocked", "pending-approval"]
    assert "waits for a person" in " ".join(store.journal()[0]["outcome_detail"]["reasons"])
    assert _started(docker_client, sleeper) == before

    approved = _cli(path, "approve", str(request["id"]))
    assert approved.returncode == 0, approved.stderr
    execution = asyncio.run(remedy.handle(_failing(), DOWN))
    assert execution is not None
    assert execution.outcome == "ok"
    assert _started(docker_client, sleeper) != before
    assert _cli(path, "approve", str(request["id"])).returncode == 2  # no longer pending
    store.close()


def test_pause_and_silence_block_and_say_why(tmp_path: Path, sleeper: str, docker_client: Any) -> None:
    path = _config(tmp_path, sleeper)
    config = load_config(path)
    assert _cli(path, "pause", "--reason", "db migration").returncode == 0
    store = Store(config.store_path())
    remedy = _engine(config, store)
    before = _started(docker_client, sleeper)
    assert asyncio.run(remedy.handle(_failing(), DOWN)) is None
    reasons = " ".join(store.journal()[0]["outcome_detail"]["reasons"])
    assert "db migration" in reasons
    assert _cli(path, "resume").returncode == 0
    assert _cli(path, "silence", "add", "--check", "web", "--for", "1h", "--reason", "deploying").returncode == 0
    assert asyncio.run(remedy.handle(_failing(), DOWN)) is None
    assert "silenced" in " ".join(store.journal()[0]["outcome_detail"]["reasons"])
    assert _started(docker_client, sleeper) == before
    store.close()


def test_dry_run_records_and_changes_nothing(tmp_path: Path, sleeper: str, docker_client: Any) -> None:
    config = load_config(_config(tmp_path, sleeper))
    store = Store(config.store_path())
    before = _started(docker_client, sleeper)
    execution = asyncio.run(_engine(config, store, dry_run=True).handle(_failing(), DOWN))
    assert execution is not None
    assert execution.outcome == "dry-run"
    assert store.journal()[0]["dry_run"] is True
    assert _started(docker_client, sleeper) == before
    store.close()


def test_concurrent_failing_results_act_once(tmp_path: Path, sleeper: str) -> None:
    config = load_config(_config(tmp_path, sleeper))
    store = Store(config.store_path())
    remedy = _engine(config, store)

    async def burst() -> list[Any]:
        return await asyncio.gather(*(remedy.handle(_failing(), DOWN) for _ in range(5)))

    outcomes = [e.outcome for e in asyncio.run(burst()) if e is not None]
    assert outcomes == ["ok"]
    assert [e["outcome"] for e in store.journal()] == ["ok"]
    store.close()


def test_a_refused_step_moves_the_ladder_on_instead_of_replanning_forever(tmp_path: Path) -> None:
    missing = f"paramedic-missing-{uuid.uuid4().hex[:8]}"
    doc = {
        "checks": [{"name": "web", "type": "container", "container": missing, "timeout": "5s"}],
        "runbooks": [{
            "name": "service-down", "match": {"checks": ["web"]},
            "steps": [{"action": "restart"}, {"action": "start"}],
        }],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = load_config(path)
    store = Store(config.store_path())
    remedy = _engine(config, store)
    for _ in range(4):
        asyncio.run(remedy.handle(_failing(), DOWN))
    entries = list(reversed(store.journal()))
    assert [(e["step"], e["action"], e["outcome"]) for e in entries] == [
        (0, "restart", "refused"), (1, "start", "refused")]  # then escalated: nothing more journaled
    assert "no container matched" in entries[0]["outcome_detail"]["reason"]
    # the ladder lives in the store: a restarted agent neither starts at step 1 again nor re-escalates
    restarted = _engine(config, store)
    escalations: list[str] = []
    restarted.events = type("Spy", (), {"escalated": lambda self, *a: escalations.append(a[2]),
                                        "action": lambda self, *a: None, "blocked": lambda self, *a: None,
                                        "approval_needed": lambda self, *a: None})()
    asyncio.run(restarted.handle(_failing(), DOWN))
    assert len(store.journal()) == 2
    assert escalations == []
    store.close()


def test_probes_are_held_while_a_step_is_applied_not_while_it_is_verified(tmp_path: Path, sleeper: str,
                                                                          docker_client: Any) -> None:
    config = load_config(_config(tmp_path, sleeper))
    store = Store(config.store_path())
    held_during_verification: list[bool] = []
    engine: list[Remedy] = []

    async def run_check(name: str) -> Result:
        held_during_verification.append(engine[0].holds(name))
        return (await run_once([config.check(name)]))[0]

    engine.append(Remedy(config, store, Executor(store, ActionContext(operator_stops=store.operator_stops)),
                         run_check))
    remedy = engine[0]
    before = _started(docker_client, sleeper)

    async def go() -> tuple[Any, list[bool]]:
        samples: list[bool] = []

        async def sample() -> None:
            while True:
                samples.append(remedy.holds("web"))
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        try:
            return await remedy.handle(_failing(), DOWN), samples
        finally:
            sampler.cancel()

    execution, samples = asyncio.run(go())
    assert execution is not None
    assert execution.outcome == "ok"
    assert _started(docker_client, sleeper) != before
    assert True in samples  # held while Docker restarted the container
    assert held_during_verification
    assert not any(held_during_verification)
    assert not remedy.holds("web")
    store.close()
