"""Slow deployment smoke tests (container build, arm64 emulation): minutes each, so outside the default run.

They run only with EDGE_DAEMON_SLOW_TESTS=1, e.g. `EDGE_DAEMON_SLOW_TESTS=1 .venv/bin/python -m pytest -m slow
tests/deploy`; otherwise each is skipped with that hint.
"""

from __future__ import annotations

import os

import pytest

SLOW_ENV = "EDGE_DAEMON_SLOW_TESTS"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"slow: takes minutes; runs only with {SLOW_ENV}=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SLOW_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"slow deployment smoke test: set {SLOW_ENV}=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
