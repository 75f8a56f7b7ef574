"""What a config does not use costs nothing at load (cold start of a cron `paramedic check`, issue 2).

The optional sections' models live in agent.config.sections, imported only when a config
has such a section or a Config property for one is read; runbooks are validated on their
own. Each check runs in a fresh interpreter, as `paramedic check` does.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.config.model import parse_config
from agent.kernel.errors import ConfigError

CHECKS = "checks:\n  - {name: a, type: http, url: 'http://127.0.0.1:9/'}\n"


def fresh(code: str) -> None:
    subprocess.run([sys.executable, "-c", f"CHECKS = {CHECKS!r}\n{code}"], check=True, timeout=60)


def test_a_config_of_checks_only_imports_no_section_model_and_builds_no_runbook_schema() -> None:
    fresh(
        "import sys\n"
        "from agent.config import model as config\n"
        "loaded = config.parse_config(CHECKS)\n"
        "assert 'agent.config.sections' not in sys.modules\n"
        "assert not config.Runbook.__pydantic_complete__\n"
        "assert not config._Runbooks.__pydantic_complete__\n"
        "assert loaded.guardrails.per_target.budget == 3  # the defaults, imported on first read\n"
        "assert 'agent.config.sections' in sys.modules\n"
    )


def test_a_config_with_a_section_imports_the_section_models() -> None:
    fresh(
        "import sys\n"
        "from agent.config import model as config\n"
        "loaded = config.parse_config(CHECKS + 'incidents: {owner: ops}\\n')\n"
        "assert 'agent.config.sections' in sys.modules\n"
        "assert loaded.incidents.owner == 'ops'\n"
        "assert not config.Runbook.__pydantic_complete__\n"
    )


def test_runbook_problems_keep_their_paths_and_their_place_after_the_defaults() -> None:
    text = (
        CHECKS
        + "defaults: {timeout: soon}\n"
        + "runbooks:\n  - {name: r, steps: [{action: restart, bogus: 1}]}\n"
        + "store: {retention: 0s, zzz: 1}\n"
        + "extra: 1\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml", env={})
    assert info.value.problems == [
        "defaults.timeout: input should be a valid duration like 500ms, 10s, 5m, 1h (got 'soon')",
        "runbooks[0].match: field required",
        "runbooks[0].steps[0].bogus: unknown key",
        "store.zzz: unknown key",
        "extra: unknown key",
    ]


def test_step_params_errors_read_with_the_runbook_path() -> None:
    text = CHECKS + (
        "runbooks:\n  - name: r\n    match: {checks: [a]}\n"
        "    steps: [{action: restart}, {action: restart, params: {stop_timeout: soon}}]\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml", env={})
    assert info.value.problems == [
        "runbooks[0].steps[1].params.stop_timeout: input should be a valid duration like 500ms, 10s, 5m, 1h"
        " (got 'soon')"]
