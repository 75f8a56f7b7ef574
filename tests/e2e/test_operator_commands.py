"""The operator commands against the installed ``paramedic`` and a real store file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.store.sqlite import Store
from tests.support.installed import PARAMEDIC

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]



def _config(tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"checks": [{"name": "web", "type": "tcp", "host": "127.0.0.1", "port": 1}]}))
    return config


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PARAMEDIC), *args, "-c", str(config)], capture_output=True, text=True, timeout=30,
                          check=False)


def test_pause_and_resume_set_the_flag_the_guardrails_read(tmp_path: Path) -> None:
    config = _config(tmp_path)
    paused = _run(config, "pause", "--reason", "db migration")
    assert paused.returncode == 0, paused.stderr
    assert "db migration" in paused.stdout
    store = Store(tmp_path / "paramedic.db")
    assert store.flag("pause")["reason"] == "db migration"
    store.close()
    assert _run(config, "resume").stdout.strip() == "resumed"
    assert _run(config, "resume").stdout.strip() == "was not paused"
    store = Store(tmp_path / "paramedic.db")
    assert store.flag("pause") is None
    store.close()


def test_silence_add_list_remove(tmp_path: Path) -> None:
    config = _config(tmp_path)
    added = _run(config, "silence", "add", "--check", "web", "--for", "2h", "--reason", "deploying")
    assert added.returncode == 0, added.stderr
    listed = json.loads(_run(config, "silence", "list", "--output", "json").stdout)
    [item] = listed["silences"]
    assert (item["check"], item["reason"]) == ("web", "deploying")
    assert 7100 < item["until"] - item["created_at"] <= 7200
    assert _run(config, "silence", "remove", str(item["id"])).returncode == 0
    assert json.loads(_run(config, "silence", "list", "--output", "json").stdout)["silences"] == []
    assert _run(config, "silence", "remove", str(item["id"])).returncode == 2


def test_silence_refuses_unknown_checks_and_bad_durations(tmp_path: Path) -> None:
    config = _config(tmp_path)
    unknown = _run(config, "silence", "add", "--check", "nope", "--for", "1h", "--reason", "x")
    assert unknown.returncode == 2
    assert "no check named 'nope'" in unknown.stderr
    bad = _run(config, "silence", "add", "--check", "web", "--for", "a while", "--reason", "x")
    assert bad.returncode == 2
    assert "valid duration" in bad.stderr


def test_history_lists_journaled_actions_with_their_reasons(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _run(config, "history").stdout.strip() == "no actions recorded"
    store = Store(tmp_path / "paramedic.db")
    intent = store.journal_intent(check="web", target="container web", runbook="service-down", step=0,
                                  action="restart", dry_run=False, detail={"plan": {"summary": "restart web"}})
    store.journal_outcome(intent, "blocked", {"reasons": ["cooldown: last restart 45s ago"]})
    store.close()
    table = _run(config, "history").stdout
    assert "restart container web" in table
    assert "-> blocked" in table
    assert "cooldown: last restart 45s ago" in table
    doc = json.loads(_run(config, "history", "--output", "json").stdout)
    assert doc["actions"][0]["outcome"] == "blocked"
