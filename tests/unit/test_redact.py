"""Secrets never leave paramedic: structural masking and by-value redaction."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, SecretStr

from agent.config.model import parse_config
from agent.kernel.redact import MASK, Redactor, collect_secrets, redact_dsn, redact_headers, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://u:p4ss@h:8443/x", "https://u:***@h:8443/x"),
        ("https://u:p4ss@h/x?token=t0k&page=2#top", "https://u:***@h/x?token=***&page=2#top"),
        ("http://h/x?api_key=k&access_token=a&sig=s&q=1", "http://h/x?api_key=***&access_token=***&sig=***&q=1"),
        ("http://h/x?Password=p&PASSWD=z", "http://h/x?Password=***&PASSWD=***"),
        ("http://user@h/x", "http://user@h/x"),
        ("http://h/x", "http://h/x"),
        ("http://h/x?page=2", "http://h/x?page=2"),
        ("http://[::1", "http://[::1"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_keeps_user_and_host() -> None:
    redacted = redact_url("postgresql://app:s3cr3t@db.internal:5432/app")
    assert "s3cr3t" not in redacted
    assert redacted == "postgresql://app:***@db.internal:5432/app"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pw@h/db?sslpassword=z", "postgresql://u:***@h/db?sslpassword=***"),
        ("host=h user=u password=abc dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h password = 'se cret' dbname=d", "host=h password = *** dbname=d"),
        ("host=h PASSWORD=abc", "host=h PASSWORD=***"),
        ("host=h user=u dbname=d", "host=h user=u dbname=d"),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected


def test_redact_headers_masks_sensitive_names_case_insensitively() -> None:
    headers = {
        "Authorization": "Bearer abc",
        "proxy-authorization": "Basic xyz",
        "Cookie": "session=1",
        "X-API-Key": "k",
        "X-Vault-Token": "v",
        "Accept": "*/*",
        "X-Request-Id": "42",
    }
    assert redact_headers(headers) == {
        "Authorization": MASK,
        "proxy-authorization": MASK,
        "Cookie": MASK,
        "X-API-Key": MASK,
        "X-Vault-Token": MASK,
        "Accept": "*/*",
        "X-Request-Id": "42",
    }
    assert headers["Authorization"] == "Bearer abc"  # a copy, not in place


SECRET_CONFIG = """
checks:
  - name: api
    type: http
    url: http://user:url-pass-1@127.0.0.1:1/x?token=query-tok-2&page=2
    headers:
      Authorization: Bearer ${API_TOKEN}
      X-Api-Key: api-key-4
      Accept: text/plain
  - name: basic
    type: http
    url: http://127.0.0.1:1/
    headers: {authorization: Basic dXNlcjpwYXNz}
  - name: port
    type: tcp
    host: 127.0.0.1
    port: 5432
"""


def test_collect_secrets_from_a_parsed_config() -> None:
    config = parse_config(SECRET_CONFIG, env={"API_TOKEN": "bearer-tok-3"})
    secrets = collect_secrets(config.checks)
    assert {"url-pass-1", "query-tok-2", "bearer-tok-3", "Bearer bearer-tok-3", "api-key-4",
            "dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"} <= secrets
    for harmless in ("user", "127.0.0.1", "text/plain", "page", "2", "api", "port", "5432"):
        assert harmless not in secrets


def test_config_redactor_is_built_from_its_secrets() -> None:
    config = parse_config(SECRET_CONFIG, env={"API_TOKEN": "bearer-tok-3"})
    text = "driver said: auth failed for url-pass-1 with bearer-tok-3 (query-tok-2, api-key-4)"
    assert config.redactor.text(text) == "driver said: auth failed for *** with *** (***, ***)"


class _Inner(BaseModel):
    password: SecretStr
    dsn: str


class _Outer(BaseModel):
    inner: _Inner
    others: list[SecretStr]
    labels: dict[str, str]


def test_collect_secrets_finds_secretstr_and_dsn_passwords_in_nested_models() -> None:
    model = _Outer(
        inner=_Inner(password=SecretStr("secret-str-1"), dsn="host=db password=dsn-pass-2 user=x"),
        others=[SecretStr("secret-str-3")],
        labels={"Cookie": "cookie-4", "team": "infra"},
    )
    assert collect_secrets(model) == {"secret-str-1", "dsn-pass-2", "secret-str-3", "cookie-4"}


def test_collect_secrets_ignores_tiny_values() -> None:
    model = _Inner(password=SecretStr("ab"), dsn="x")
    assert collect_secrets(model) == frozenset()


def test_redactor_text_masks_longest_secret_first() -> None:
    redactor = Redactor(["tok", "Bearer tok"])
    assert redactor.text("Authorization: Bearer tok; again tok") == "Authorization: ***; again ***"


def test_redactor_escapes_regex_characters() -> None:
    redactor = Redactor(["a.b*c"])
    assert redactor.text("a.b*c axbbc") == "*** axbbc"


def test_redactor_without_secrets_is_identity() -> None:
    redactor = Redactor()
    data = {"k": ["v"]}
    assert redactor.text("anything") == "anything"
    assert redactor.data(data) is data


def test_redactor_data_masks_nested_strings_and_keys() -> None:
    redactor = Redactor(["s3cr3t"])
    data = {
        "body": "echo: s3cr3t",
        "json": {"headers": {"authorization": "Bearer s3cr3t"}, "list": ["x", "s3cr3t", 7, None, True]},
        "s3cr3t-key": 1,
        "tuple": ("s3cr3t",),
        "n": 1.5,
    }
    assert redactor.data(data) == {
        "body": "echo: ***",
        "json": {"headers": {"authorization": "Bearer ***"}, "list": ["x", "***", 7, None, True]},
        "***-key": 1,
        "tuple": ["***"],
        "n": 1.5,
    }
    assert data["body"] == "echo: s3cr3t"  # the input is not modified


def test_percent_encoded_secrets_are_masked_in_both_forms() -> None:
    config = parse_config(
        "checks:\n  - {name: a, type: http, url: 'http://u:p%40ss-word@h/echo?token=ab%2Bcd%20ef&page=2'}\n",
        env={},
    )
    text = "wire: /echo?token=ab%2Bcd%20ef; decoded: ab+cd ef; driver: login p@ss-word; raw: p%40ss-word"
    assert config.redactor.text(text) == "wire: /echo?token=***; decoded: ***; driver: login ***; raw: ***"
