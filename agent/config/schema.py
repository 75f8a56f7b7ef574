"""The JSON Schema of ``config.yaml`` (``paramedic schema``), generated from the config models.

One schema for editors: with the YAML language server (VS Code's YAML extension and
others), ``# yaml-language-server: $schema=./paramedic.schema.json`` as a config's first
line gives completion, hover text and checking as you type. It is built from the same
pydantic models that validate a config at load time, so it cannot drift from them:

* the top-level keys of :mod:`agent.config.model` and the optional sections of
  :mod:`agent.config.sections` (``guardrails``, ``maintenance``, ``incidents``,
  ``notifications``), which the loader imports only when a config has them; here all are;
* ``checks`` items as a union on ``type``: each registered probe type's spec model
  (through :mod:`agent.registry`), so an ``http`` check completes ``url`` and
  ``expected_status``;
* runbook steps: ``action`` is one of the registered actions, and ``params`` are checked
  against that action's own params model (an ``if``/``then`` per action).

The schema is JSON Schema draft-07, the draft the YAML language server implements
(``definitions``, not ``$defs``). It checks values as written, before ``${VAR}``
expansion: a ``${VAR}`` in a number or duration field is fine for paramedic but shows as a
type warning in the editor. What the schema cannot say (cross-references such as a
runbook naming a missing check, ``dsn`` *or* ``host``) is still checked by
``paramedic validate``.
"""

from __future__ import annotations

import functools
import operator
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from agent.config import model as config_module
from agent.config import sections as config_sections
from agent.registry import ACTION_TYPES, CHECK_TYPES, action_class, spec_model

DRAFT = "http://json-schema.org/draft-07/schema#"
TITLE = "paramedic config"
_REF = "#/definitions/{model}"


def _root_model() -> Any:
    """A pydantic model of the whole file: ``_Top``'s keys plus checks, runbooks and the sections."""
    check_union: Any = functools.reduce(operator.or_, (spec_model(t) for t in CHECK_TYPES))
    check_item: Any = Annotated[check_union, Field(discriminator="type")]
    fields: dict[str, Any] = {name: (info.annotation, info)
                              for name, info in config_module._Top.model_fields.items()}
    fields |= {
        "checks": (tuple[check_item, ...], Field(default=(), description="The probes.")),
        "runbooks": (tuple[config_module.Runbook, ...],
                     Field(default=(), description="What to do when a check goes DOWN.")),
        "guardrails": (config_sections.GuardrailSettings, None),
        "maintenance": (tuple[config_sections.MaintenanceWindow, ...],
                        Field(default=(), description="Recurring windows in which no action runs.")),
        "incidents": (config_sections.IncidentSettings, None),
        "notifications": (config_sections.NotificationSettings, None),
    }
    return create_model("ParamedicConfig", __config__=ConfigDict(extra="forbid"),
                        __doc__="A paramedic config file (config.yaml).", **fields)


def _step_params(definitions: dict[str, Any], refs: dict[str, dict[str, Any]]) -> None:
    """Make ``RunbookStep`` say which actions exist and check ``params`` against each one's model."""
    step = definitions["RunbookStep"]
    step["properties"]["action"] = {
        "enum": list(ACTION_TYPES), "title": "Action",
        "description": "The remediation action; its params are checked against the action's own keys."}
    step["properties"]["params"] = {"type": "object", "title": "Params", "default": {},
                                    "description": "The action's settings (see the action's reference)."}
    rules = []
    for action, ref in refs.items():
        then: dict[str, Any] = {"properties": {"params": ref}}
        if definitions[ref["$ref"].rsplit("/", 1)[1]].get("required"):
            then["required"] = ["params"]
        rules.append({"if": {"properties": {"action": {"const": action}}, "required": ["action"]}, "then": then})
    step["allOf"] = rules


def _draft7(node: Any) -> Any:
    """pydantic writes ``$defs`` refs (2020-12); the YAML language server reads draft-07."""
    if isinstance(node, dict):
        return {("definitions" if k == "$defs" else k): _draft7(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_draft7(v) for v in node]
    return node


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _tidy(definitions: dict[str, Any]) -> None:
    """A model's description is its docstring: keep the first paragraph, as plain text for hover."""
    for definition in definitions.values():
        text = definition.get("description")
        if isinstance(text, str):
            first = " ".join(text.split("\n\n", 1)[0].split())
            definition["description"] = _ROLE.sub(r"`\1`", first).replace("``", "`")


def _referenced(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """The definitions reachable from ``schema``, in their order (a replaced field's leave)."""
    seen: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and (name := ref.rsplit("/", 1)[1]) not in seen:
                seen.add(name)
                stack.append(definitions[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return {name: value for name, value in definitions.items() if name in seen}


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of a paramedic config file, as a JSON-ready dict."""
    root: type[BaseModel] = _root_model()
    params = {action: action_class(action).params_model for action in ACTION_TYPES}
    models: list[type[BaseModel]] = [root, *dict.fromkeys(params.values())]
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(model, "validation") for model in models]
    refs, top = models_json_schema(wanted, ref_template=_REF)
    definitions: dict[str, Any] = dict(top.get("$defs", {}))
    root_name = refs[(root, "validation")]["$ref"].rsplit("/", 1)[1]
    schema = definitions.pop(root_name)
    _step_params(definitions, {action: refs[(model, "validation")] for action, model in params.items()})
    _tidy(definitions)
    schema.pop("title", None)
    out = {"$schema": DRAFT, "title": TITLE, **schema, "definitions": _referenced(schema, definitions)}
    result: dict[str, Any] = _draft7(out)
    return result
