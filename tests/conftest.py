"""Test-wide configuration: fixture plugins live in ``tests/support``."""

pytest_plugins = [
    "tests.support.fixtures",
    "tests.support.docker",
    "tests.support.services",
    "tests.support.tls",
]
