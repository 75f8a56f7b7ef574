"""The e2e tier runs what users install: see ``tests/support/installed.py``."""

from __future__ import annotations

import pytest

from tests.support.installed import Installed, installed


@pytest.fixture(scope="session", autouse=True)
def installed_paramedic() -> Installed:
    """Build the wheel and install it in a fresh venv before the first e2e test runs."""
    return installed()
