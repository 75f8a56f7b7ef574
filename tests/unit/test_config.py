"""Config loading: one invalid fixture per rule, env expansion, defaults, --config resolution."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agent.config.model import (
    DEFAULT_CONFIG,
    ENV_CONFIG,
    Config,
    format_path,
    load_config,
    parse_config,
    resolve_path,
)
from agent.kernel.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "config"
DURATION_MSG = "input should be a valid duration like 500ms, 10s, 5m, 1h"


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    assert info.value.exit_code == 2
    assert info.value.permanent
    return info.value.problems


def load_text(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "test.yaml", env={} if env is None else env)


# ---------------------------------------------------------------- one fixture per rule

# (fixture, the one problem line; a compiled pattern when part of it is not ours to fix)
RULES: list[tuple[str, str | re.Pattern[str]]] = [
    ("unknown_top_level_key.yaml", "defualts: unknown key"),
    ("unknown_check_key.yaml", "checks[0].retry: unknown key"),
    ("bad_duration.yaml", f"checks[2].timeout: {DURATION_MSG} (got '5 parsecs')"),
    (
        "bad_condition.yaml",
        "checks[0].conditions[1].expr: expected a field name or a value at column 13, found end of expression",
    ),
    ("unknown_type.yaml", re.compile(r"checks\[0\]\.type: unknown check type 'htp' \(known: .*\bhttp\b.*\btcp\b.*\)")),
    ("missing_type.yaml", "checks[0].type: missing (every check needs a type)"),
    ("duplicate_names.yaml", "checks[1].name: duplicate name 'app' (also checks[0])"),
    ("runbook_missing_check.yaml", "runbooks[0].match.checks[1]: no check named 'ghost'"),
    (
        "missing_env.yaml",
        "checks[0].headers.Authorization: environment variable PARAMEDIC_TEST_UNSET_TOKEN is not set",
    ),
    ("yaml_syntax.yaml", re.compile(r"<yaml>: .+ at line 5, column \d+")),
    ("non_mapping_root.yaml", "<root>: the config must be a mapping with a 'checks' list"),
    ("negative_threshold.yaml", "checks[0].failure_threshold: input should be greater than or equal to 1"),
    ("bad_url_scheme.yaml", "checks[0].url: must be an http:// or https:// URL with a host"),
    ("severity_typo.yaml", "checks[0].conditions[1].severity: input should be 'critical' or 'warning'"),
]


def test_every_invalid_fixture_has_a_rule() -> None:
    listed = {name for name, _ in RULES} | {"many_problems.yaml"}
    assert {p.name for p in FIXTURES.glob("*.yaml")} == listed


@pytest.mark.parametrize(("fixture", "expected"), RULES, ids=[r[0].removesuffix(".yaml") for r in RULES])
def test_invalid_fixture_reports_its_problem(fixture: str, expected: str | re.Pattern[str]) -> None:
    problems = problems_of(FIXTURES / fixture)
    assert len(problems) == 1, problems
    if isinstance(expected, str):
        assert problems[0] == expected
    else:
        assert expected.fullmatch(problems[0]), problems[0]


def test_config_error_message_lists_source_and_every_problem() -> None:
    path = FIXTURES / "bad_duration.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.source == str(path)
    assert str(info.value).splitlines() == [f"{path}: 1 problem(s)", *info.value.problems]


def test_all_problems_are_reported_at_once() -> None:
    problems = problems_of(FIXTURES / "many_problems.yaml")
    expected = {
        "bogus: unknown key",
        f"defaults.timeout: {DURATION_MSG} (got 'soon')",
        "checks[0].url: must be an http:// or https:// URL with a host",
        "checks[0].conditions[0].expr: expected a field name or a value at column 15, found end of expression",
        "checks[1].port: input should be less than or equal to 65535",
        "checks[1].colour: unknown key",
        "checks[3].failure_threshold: input should be greater than or equal to 1",
        "checks[3].name: duplicate name 'app-health' (also checks[0])",
    }
    assert expected <= set(problems), sorted(expected - set(problems))
    assert any(p.startswith("checks[2].type: unknown check type 'gopher'") for p in problems)
    # A bad default is reported once, where it is written, not again under every check.
    assert not [p for p in problems if p.startswith("checks[") and ".timeout:" in p]
    assert len(problems) == len(expected) + 1


def test_missing_file_is_a_config_error() -> None:
    problems = problems_of(FIXTURES / "no-such-file.yaml")
    assert problems == [f"<file>: {FIXTURES / 'no-such-file.yaml'} does not exist"]


def test_empty_file_is_a_valid_config_with_no_checks() -> None:
    config = load_text("")
    assert config.checks == ()
    assert config.runbooks == ()


def test_checks_must_be_a_list() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("checks: {name: a}\n")
    assert info.value.problems == ["checks: must be a list of checks"]


def test_a_valid_config_loads_typed_and_frozen() -> None:
    config = load_text(
        """
checks:
  - name: app-health
    type: http
    url: http://127.0.0.1:8080/health
    conditions:
      - status_code == 200
      - {expr: "latency_ms < 200", severity: warning}
    tags: [app]
  - {name: db-port, type: tcp, host: 127.0.0.1, port: 5432}
runbooks:
  - name: restart-app
    match: {checks: [app-health]}
    steps: [{action: restart, verify_for: 30s}]
"""
    )
    app = config.check("app-health")
    assert app.type == "http"
    assert app.tags == ("app",)
    assert [(c.expr, c.severity) for c in app.effective_conditions()] == [
        ("status_code == 200", "critical"),
        ("latency_ms < 200", "warning"),
    ]
    assert config.check("db-port").type == "tcp"
    assert config.runbooks[0].steps[0].verify_for == 30.0
    with pytest.raises(KeyError):
        config.check("nope")
    with pytest.raises(ValueError, match="frozen"):
        app.timeout = 1.0


# ---------------------------------------------------------------- env expansion

def _description(text: str, env: dict[str, str]) -> str:
    config = load_text(
        f"checks:\n  - {{name: a, type: tcp, host: 127.0.0.1, port: 1, description: '{text}'}}\n", env
    )
    return config.checks[0].description


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${NAME}", {"NAME": "db"}, "db"),
        ("pre-${NAME}-post", {"NAME": "db"}, "pre-db-post"),
        ("${NAME:-fallback}", {}, "fallback"),
        ("${NAME:-fallback}", {"NAME": ""}, "fallback"),
        ("${NAME:-fallback}", {"NAME": "set"}, "set"),
        ("${NAME:-}", {}, ""),
        ("${NAME}", {"NAME": ""}, ""),
        ("cost $$5", {}, "cost $5"),
        ("$${NAME}", {"NAME": "db"}, "${NAME}"),
        ("$$$${NAME}", {"NAME": "db"}, "$${NAME}"),
        ("$$${NAME}", {"NAME": "db"}, "$db"),
        ("plain $ sign", {}, "plain $ sign"),
        ("${A}${B:-b}", {"A": "a"}, "ab"),
    ],
)
def test_env_expansion(text: str, env: dict[str, str], expected: str) -> None:
    assert _description(text, env) == expected


def test_env_expansion_cannot_inject_yaml_structure() -> None:
    evil = "x\nextra_key: 1\nconditions: [\"status_code == 999\"]"
    config = load_text("checks:\n  - {name: a, type: tcp, host: 127.0.0.1, port: 1, description: '${EVIL}'}\n",
                       {"EVIL": evil})
    spec = config.checks[0]
    assert spec.description == evil
    assert spec.conditions == ()


def test_env_expansion_feeds_typed_fields() -> None:
    config = load_text(
        "checks:\n  - {name: a, type: tcp, host: '${HOST}', port: '${PORT}', timeout: '${T:-250ms}'}\n",
        {"HOST": "db.internal", "PORT": "5432"},
    )
    spec = config.checks[0]
    assert (spec.host, spec.port, spec.timeout) == ("db.internal", 5432, 0.25)  # type: ignore[attr-defined]


def test_env_bare_number_duration_is_seconds() -> None:
    config = load_text("checks:\n  - {name: a, type: tcp, host: h, port: 1, timeout: '${T}'}\n", {"T": "3"})
    assert config.checks[0].timeout == 3.0


def test_missing_env_vars_are_all_reported_with_their_paths() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("checks:\n  - {name: a, type: tcp, host: '${H}', port: 1, tags: [ok, '${T}']}\n")
    assert info.value.problems[:2] == [
        "checks[0].host: environment variable H is not set",
        "checks[0].tags[1]: environment variable T is not set",
    ]


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAMEDIC_TEST_HOST", "from-env")
    config = parse_config("checks:\n  - {name: a, type: tcp, host: '${PARAMEDIC_TEST_HOST}', port: 1}\n")
    assert config.checks[0].host == "from-env"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- defaults

DEFAULTS_CONFIG = """
defaults:
  interval: 10s
  timeout: 2s
  failure_threshold: 5
  success_threshold: 4
  severity: warning
  retries: {attempts: 3, backoff: 100ms}
checks:
  - {name: inherits, type: tcp, host: 127.0.0.1, port: 1}
  - name: overrides
    type: http
    url: http://127.0.0.1/
    interval: 1m
    timeout: 500ms
    failure_threshold: 1
    success_threshold: 1
    severity: critical
    retries: {attempts: 1}
"""


def test_defaults_apply_to_every_check() -> None:
    config = load_text(DEFAULTS_CONFIG)
    spec = config.check("inherits")
    assert (spec.interval, spec.timeout, spec.failure_threshold, spec.success_threshold) == (10.0, 2.0, 5, 4)
    assert spec.severity == "warning"
    # a check-level severity is the default severity of its conditions
    assert {c.severity for c in spec.effective_conditions()} == {"warning"}
    assert (spec.retries.attempts, spec.retries.backoff) == (3, 0.1)
    assert config.defaults.timeout == 2.0


def test_a_check_overrides_defaults() -> None:
    spec = load_text(DEFAULTS_CONFIG).check("overrides")
    assert (spec.interval, spec.timeout, spec.failure_threshold, spec.success_threshold) == (60.0, 0.5, 1, 1)
    assert spec.severity == "critical"
    assert spec.retries.attempts == 1


def test_builtin_defaults_without_a_defaults_section() -> None:
    spec = load_text("checks: [{name: a, type: tcp, host: h, port: 1}]").checks[0]
    assert (spec.interval, spec.timeout, spec.failure_threshold, spec.success_threshold) == (30.0, 5.0, 3, 2)
    assert spec.retries.attempts == 1


def test_retry_interval_defaults_to_a_twentieth_of_the_interval_at_most_1s_and_never_exceeds_it() -> None:
    config = load_text(
        "checks:\n"
        "  - {name: a, type: tcp, host: h, port: 1}\n"
        "  - {name: b, type: tcp, host: h, port: 1, interval: 1s}\n"
        "  - {name: c, type: tcp, host: h, port: 1, retry_interval: 200ms}\n"
        "  - {name: d, type: tcp, host: h, port: 1, interval: 5s, retry_interval: 1m}\n"
    )
    assert [(c.retry_interval, c.retry_delay) for c in config.checks] == [
        (None, 1.0), (None, 0.05), (0.2, 0.2), (60.0, 5.0)]
    inherited = load_text("defaults: {retry_interval: 250ms}\nchecks: [{name: a, type: tcp, host: h, port: 1}]\n")
    assert inherited.checks[0].retry_delay == 0.25


def test_unknown_key_in_defaults_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("defaults: {timout: 1s}\nchecks: []\n")
    assert info.value.problems == ["defaults.timout: unknown key"]


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ("timeout: 0s", "checks[0].timeout: timeout must be greater than 0"),
        ("timeout: -1", "checks[0].timeout: input should be a valid duration, not negative"),
        ("interval: 10ms", "checks[0].interval: interval must be at least 100ms"),
        ("name: 'bad name!'", "checks[0].name: string should match pattern '^[A-Za-z0-9][A-Za-z0-9_.:\\-]*$'"),
        ("tls: {key_file: k.pem}", "checks[0].tls: key_file needs cert_file"),
        ("send: ''", "checks[0]: send must not be empty (leave it out to only connect)"),
    ],
)
def test_field_rules(snippet: str, problem: str) -> None:
    key = snippet.split(":", 1)[0]
    base = {"name": "a", "type": "tcp", "host": "h", "port": "1"}
    fields = [f"{k}: {v}" for k, v in base.items() if k != key]  # a key given twice is an error of its own
    item = "{" + ", ".join([*fields, snippet]) + "}"
    with pytest.raises(ConfigError) as info:
        load_text(f"checks:\n  - {item}\n")
    assert info.value.problems == [problem]


# ---------------------------------------------------------------- --config resolution

def test_resolve_explicit_wins_over_env() -> None:
    assert resolve_path("given.yaml", {ENV_CONFIG: "env.yaml"}) == Path("given.yaml")


def test_resolve_env_when_not_explicit() -> None:
    assert resolve_path(None, {ENV_CONFIG: "env.yaml"}) == Path("env.yaml")


def test_resolve_default_is_config_yaml_in_cwd() -> None:
    assert resolve_path(None, {}) == Path(DEFAULT_CONFIG) == Path("config.yaml")
    assert resolve_path(None, {ENV_CONFIG: ""}) == Path("config.yaml")


def test_resolve_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CONFIG, "/etc/paramedic.yaml")
    assert resolve_path(None) == Path("/etc/paramedic.yaml")
    monkeypatch.delenv(ENV_CONFIG)
    assert resolve_path(None) == Path("config.yaml")


@pytest.mark.parametrize(
    ("loc", "text"),
    [
        (("checks", 2, "timeout"), "checks[2].timeout"),
        (("checks", 0, "conditions", 1, "expr"), "checks[0].conditions[1].expr"),
        (("bogus",), "bogus"),
        ((), "<root>"),
    ],
)
def test_format_path(loc: tuple[str | int, ...], text: str) -> None:
    assert format_path(loc) == text


def test_runbook_step_params_are_typed_validated_with_paths_and_their_secrets_masked() -> None:
    config = load_text(
        """
checks: [{name: a, type: tcp, host: h, port: 1}]
runbooks:
  - name: r
    match: {checks: [a]}
    steps:
      - action: restart
        params: {container: web, mode: force}
      - action: rollback
        params: {container: web}
      - action: webhook
        params: {url: "https://hooks.example/x?token=SEKRET99", headers: {Authorization: "Bearer TOKEN777"}}
"""
    )
    steps = config.runbooks[0].steps
    assert type(steps[0].typed_params).__name__ == "RestartParams"
    assert [s.needs_approval for s in steps] == [False, True, False]  # rollback needs approval by default
    assert config.redactor.text("SEKRET99 TOKEN777") == "*** ***"
    with pytest.raises(ConfigError) as bad:
        load_text(
            """
checks: [{name: a, type: tcp, host: h, port: 1}]
runbooks:
  - name: r
    match: {checks: [a]}
    steps:
      - {action: restart, params: {mode: sideways}}
      - {action: teleport}
"""
        )
    problems = "\n".join(bad.value.problems)
    assert "runbooks[0].steps[0].params.mode:" in problems
    assert "runbooks[0].steps[1].action: unknown action 'teleport'" in problems


# ---------------------------------------------------------------- hostile or broken files


def test_a_duplicate_key_is_an_error_with_both_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("checks:\n  - name: a\n    type: tcp\n    host: h\n    port: 1\n    port: 2\n")
    assert info.value.problems == ["<yaml>: duplicate key 'port' (first at line 5) at line 6, column 5"]


def test_merge_keys_may_be_overridden() -> None:
    config = load_text("x: &d {interval: 10s}\nchecks: [{name: a, type: tcp, host: h, port: 1, <<: *d, interval: 5s}]\n"
                       .replace("x:", "defaults:"))
    assert config.checks[0].interval == 5.0


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(ConfigError) as info:
        load_text("\n".join([*lines, "checks: []"]))
    assert info.value.problems[0].startswith("<yaml>: the aliases expand to ")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("checks: []\nx: " + "[" * 100 + "]" * 100 + "\n")
    assert "nested deeper than 64 levels" in info.value.problems[0]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_infinite_numbers_are_errors(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(f"checks: [{{name: a, type: tcp, host: h, port: 1, interval: {value}}}]\n"
                  f"guardrails: {{blast_radius: {{max_unhealthy: {value}}}}}\n")
    assert any(p.startswith("checks[0].interval: input should be a finite duration") for p in info.value.problems)
    assert any(p.startswith("guardrails.blast_radius.max_unhealthy: input should be a finite number")
               for p in info.value.problems)


def test_a_fifo_or_invalid_utf8_config_is_a_clear_error(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        load_config(fifo)  # would block forever on open/read without a writer
    assert info.value.problems == [f"<file>: {fifo} is not a regular file"]
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"checks: []\n# \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.problems == [f"<file>: {bad} is not valid UTF-8 (byte 13, line 2)"]
