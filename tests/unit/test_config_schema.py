"""``paramedic schema``: the JSON Schema of the config file, checked against the example, the docs and the loader."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agent.config.model import parse_config
from agent.config.schema import config_schema
from agent.kernel.errors import ConfigError
from agent.notify.specs import CHANNEL_TYPES
from agent.registry import ACTION_TYPES, CHECK_TYPES

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SCHEMA = config_schema()
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
DEFINITIONS: dict[str, Any] = SCHEMA["definitions"]


def problems(doc: Any) -> list[str]:
    """Every schema error of ``doc`` as ``path: message``."""
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    out = []
    for error in errors:
        best = jsonschema.exceptions.best_match([error, *error.context]) if error.context else error
        out.append(f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {best.message}")
    return out


# --------------------------------------------------------------------------- the schema itself


def test_the_schema_is_valid_draft_07_json() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert "$defs" not in json.dumps(SCHEMA)  # the YAML language server reads draft-07 refs
    assert json.loads(json.dumps(SCHEMA)) == SCHEMA


def test_top_level_keys_are_the_loaders() -> None:
    assert set(SCHEMA["properties"]) == {
        "defaults", "checks", "runbooks", "store", "server", "scheduler", "state",
        "guardrails", "maintenance", "incidents", "notifications"}
    assert SCHEMA["additionalProperties"] is False


def test_checks_are_a_union_on_type_with_every_registered_probe() -> None:
    items = SCHEMA["properties"]["checks"]["items"]
    assert set(items["discriminator"]["mapping"]) == set(CHECK_TYPES)
    assert len(items["oneOf"]) == len(CHECK_TYPES)


def test_steps_check_params_against_every_registered_action() -> None:
    step = DEFINITIONS["RunbookStep"]
    assert step["properties"]["action"]["enum"] == list(ACTION_TYPES)
    assert [rule["if"]["properties"]["action"]["const"] for rule in step["allOf"]] == list(ACTION_TYPES)


def _check(**extra: Any) -> dict[str, Any]:
    return {"checks": [{"name": "a", "type": "tcp", "host": "localhost", "port": 5432, **extra}]}


def _step(action: str, **params: Any) -> dict[str, Any]:
    return {"runbooks": [{"name": "r", "match": {}, "steps": [{"action": action, "params": params}]}]}


@pytest.mark.parametrize("value", ["30s", "500ms", "1h30m", "1h 30m", "2d", "1w", "90", 30, 0.5, "1.5s"])
def test_durations_are_strings_or_numbers(value: Any) -> None:
    assert problems(_check(timeout=value)) == []
    assert problems({"defaults": {"interval": value}}) == []
    assert problems(_step("restart", stop_timeout=value)) == []


@pytest.mark.parametrize("value", ["5 parsecs", "soon", "", "10x", -1, True, [1]])
def test_bad_durations_are_refused(value: Any) -> None:
    assert problems(_check(timeout=value))
    assert problems({"defaults": {"interval": value}})


def test_a_condition_is_a_string_or_an_expr_with_a_severity() -> None:
    assert problems(_check(conditions=["connected", {"expr": "latency_ms < 5", "severity": "warning"}])) == []
    assert problems(_check(conditions=[{"expr": "connected", "severity": "fatal"}]))
    assert problems(_check(conditions=[{"severity": "warning"}]))


@pytest.mark.parametrize(("doc", "where"), [
    ({"bogus": 1}, "bogus"),
    (_check(colour="red"), "colour"),
    ({"checks": [{"name": "a", "type": "ftp"}]}, "checks.0"),  # in no alternative of the union
    ({"checks": [{"name": "a", "type": "http"}]}, "url"),  # required key missing
    (_step("reboot"), "reboot"),
    (_step("restart", mode="gentle"), "gentle"),
    (_step("restart", colour="red"), "colour"),
    ({"runbooks": [{"name": "r", "match": {}, "steps": [{"action": "webhook"}]}]}, "params"),
    ({"guardrails": {"global": {"max_per_hour": 0}}}, "max_per_hour"),
    ({"notifications": {"channels": [{"name": "n", "type": "fax"}]}}, "channels.0"),
    ({"incidents": {"response_times": {"SEV-9": "5m"}}}, "SEV-9"),
])
def test_what_the_loader_refuses_the_schema_refuses(doc: dict[str, Any], where: str) -> None:
    found = problems(doc)
    assert any(where in problem for problem in found), found
    with pytest.raises(ConfigError):
        parse_config(yaml.safe_dump(doc), env={})


def test_the_example_config_validates() -> None:
    """(a) The repository's ``config.yaml``, as written (``${VAR:-default}`` strings are fine there)."""
    doc = yaml.safe_load((REPO / "config.yaml").read_text())
    assert problems(doc) == []


# --------------------------------------------------------------------------- (b) examples in the docs

_FENCE = re.compile(r"^```ya?ml[^\n]*\n(.*?)^```", re.M | re.S)
#: Keys every check has (README "Keys every check has"): a block of only these is a fragment of a check.
_CHECK_KEYS = set(DEFINITIONS["TcpSpec"]["properties"]) - {"host", "port", "send", "expect", "type", "name"}
_MINIMAL_CHECK = {"name": "doc-example", "type": "tcp", "host": "localhost", "port": 1}


def yaml_blocks() -> Iterator[tuple[str, Any]]:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield f"{path.relative_to(REPO)}:{line}", yaml.safe_load(match.group(1))


def as_config(block: Any) -> dict[str, Any] | None:
    """The whole config a docs block stands for, or None when it fits no rule.

    The rule, by what the block parses to:

    * a mapping whose keys are all top-level config keys (``checks:``, ``runbooks:``,
      ``guardrails:``...): a whole config (or a part of one), validated as it is;
    * a check, or a list of checks (mappings with ``name`` and a probe ``type``): the
      items of ``checks:``;
    * a list of mappings with ``action``: the ``steps:`` of a runbook;
    * a list of mappings with ``name`` and a channel ``type`` (``webhook``, ``slack``...):
      ``notifications.channels``;
    * a mapping of keys every check has (``conditions:``): merged into a minimal check.
    """
    items = block if isinstance(block, list) else [block]
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if isinstance(block, dict) and set(block) <= set(SCHEMA["properties"]):
        return block
    if all("name" in i and i.get("type") in CHECK_TYPES for i in items):
        return {"checks": items}
    if isinstance(block, list) and all("action" in i for i in items):
        return {"runbooks": [{"name": "doc-example", "match": {}, "steps": items}]}
    if isinstance(block, list) and all("name" in i and i.get("type") in CHANNEL_TYPES for i in items):
        return {"notifications": {"channels": items}}
    if isinstance(block, dict) and set(block) <= _CHECK_KEYS:
        return {"checks": [{**_MINIMAL_CHECK, **block}]}
    return None


BLOCKS = list(yaml_blocks())


def test_the_docs_have_yaml_examples() -> None:
    assert len(BLOCKS) >= 20


@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_every_yaml_example_in_the_docs_validates(where: str, block: Any) -> None:
    """(b) Every ```` ```yaml ```` block of README.md and docs/**/*.md, by the rule of :func:`as_config`.

    A block that fits none of the rules fails: make it one of those shapes (or fence it as
    something other than yaml if it is not config).
    """
    config = as_config(block)
    assert config is not None, f"{where}: a yaml block that is neither a config nor a known fragment of one"
    assert problems(config) == [], where


# --------------------------------------------------------------------------- (c) every key has a reference entry

#: Keys in the schema that are not keys a user writes, with why. Empty: every key is documented.
NOT_USER_KEYS: dict[str, str] = {}
_SECTION_DOCS = {"guardrails": "docs/guardrails.md", "maintenance": "docs/guardrails.md",
                 "incidents": "docs/incidents.md", "notifications": "docs/notifications.md"}


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = DEFINITIONS[node["$ref"].rsplit("/", 1)[1]]
    return node


def keys(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """``(dotted path, key)`` for every property under ``node`` (through refs, unions, lists, maps).

    A runbook step's ``if``/``then`` rules are not followed: action params are walked per action.
    """
    node = _resolve(node)
    if not isinstance(node, dict):
        return
    for key, sub in node.get("properties", {}).items():
        yield f"{path}{key}", key
        yield from keys(sub, f"{path}{key}.")
    for union in ("anyOf", "oneOf"):
        for sub in node.get(union, []):
            yield from keys(sub, path)
    if "items" in node:
        yield from keys(node["items"], path.removesuffix(".") + "[].")
    if isinstance(node.get("additionalProperties"), dict):
        yield from keys(node["additionalProperties"], path + "*.")


def documented(key: str, text: str) -> bool:
    """Whether ``text`` names ``key`` in code: `key`, `a.b.key`, `key: ...`, `x[].key`, `{a, key}`."""
    k = re.escape(key)
    as_path = r"`\.?(?:[\w\-\[\]]+\.)*" + k + r"(?:[.:=\[][^`]*)?`"
    in_shape = r"`[^`]*[{,]\s*" + k + r"\s*[,}:][^`]*`"
    return re.search(as_path, text) is not None or re.search(in_shape, text) is not None


def _read(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


def _linked_docs(kind: str) -> dict[str, str]:
    """``type -> docs/<kind>/<file>.md`` from the README's tables of probe types and actions."""
    rows = re.finditer(r"^\| `([\w.]+)` \|.*\[(docs/" + kind + r"/[\w\-]+\.md)\]", _read("README.md"), re.M)
    return {m.group(1): m.group(2) for m in rows}


def undocumented() -> list[str]:
    """Every schema key without an entry in its reference doc, as ``path (doc)``."""
    readme = _read("README.md")
    missing: list[tuple[str, str, str]] = []
    for top, sub in SCHEMA["properties"].items():
        missing += [("README.md", top, top)] if not documented(top, readme) else []
        if top == "checks":
            continue
        doc = _SECTION_DOCS.get(top, "README.md")
        missing += [(doc, path, key) for path, key in keys(sub, f"{top}.") if not documented(key, _read(doc))]
    probe_docs = _linked_docs("probes")
    for index, type_name in enumerate(CHECK_TYPES):
        doc = probe_docs.get(type_name, f"docs/probes/{type_name}.md (no row in README's probe table)")
        text = readme + (_read(doc) if doc in probe_docs.values() else "")  # keys every check has: README
        spec = SCHEMA["properties"]["checks"]["items"]["oneOf"][index]
        missing += [(doc, path, key) for path, key in keys(spec, f"checks[type={type_name}].")
                    if not documented(key, text)]
    action_docs = _linked_docs("remediations")
    for rule in DEFINITIONS["RunbookStep"]["allOf"]:
        action = rule["if"]["properties"]["action"]["const"]
        doc = action_docs.get(action, f"docs/remediations/?.md (no row for {action} in README's action table)")
        text = _read(doc) if doc in action_docs.values() else ""
        missing += [(doc, path, key) for path, key in keys(rule["then"]["properties"]["params"],
                                                           f"runbooks[].steps[action={action}].params.")
                    if not documented(key, text)]
    return [f"{path} ({doc})" for doc, path, key in missing if path not in NOT_USER_KEYS]


def test_every_config_key_has_an_entry_in_the_reference_docs() -> None:
    """(c) Each key of the schema is named, in code, in the doc its section belongs to.

    Top-level keys and ``defaults``/``store``/``server``/``scheduler``/``state``/``runbooks``
    keys: README.md. A check's keys: README.md (keys every check has) or the probe type's
    page linked from README's probe table. A step's params: the action's page linked from
    README's action table. ``guardrails`` and ``maintenance``: docs/guardrails.md;
    ``incidents``: docs/incidents.md; ``notifications``: docs/notifications.md. A key
    missing here needs a reference entry (a table row), not an exemption.
    """
    assert undocumented() == []


def test_the_key_walk_sees_nested_keys() -> None:
    found = {path for path, _ in keys(SCHEMA, "")}
    for path in ("defaults.retries.attempts", "guardrails.per_target.backoff.factor", "guardrails.global",
                 "incidents.evidence.log_lines", "notifications.channels[].from", "runbooks[].match.alert_labels",
                 "maintenance[].cron"):
        assert path in found


def test_documented_finds_keys_only_in_code() -> None:
    assert documented("interval", "| `interval` | 30s |")
    assert documented("flap_window", "`state.flap_window` / `state.flap_threshold`")
    assert documented("cron", "| `maintenance[].cron` | string |")
    assert documented("tags", "| `maintenance[].checks`, `.tags` | lists |")
    assert documented("project", "| `compose` | `{project, service}` |")
    assert documented("stop_timeout", "`stop_timeout: 10s`")
    assert not documented("interval", "the interval of a check")
    assert not documented("state", '`state == "running"`')
    assert not documented("port", "`sslport`")
