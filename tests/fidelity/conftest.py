"""Fixtures and the summary line of the fidelity suite.

``FIDELITY_SHAPES=N`` (set by `make fidelity`) makes the generated test run at least N
shapes; without it a small, fixed sample runs as part of `make test`.
"""

from __future__ import annotations

import os

import pytest

from .catalog import KNOWN
from .harness import STATS

LONG_SHAPES = int(os.environ.get("FIDELITY_SHAPES", "0") or 0)


@pytest.fixture(scope="session")
def fidelity_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fidelity")


def pytest_terminal_summary(terminalreporter) -> None:
    if STATS.shapes:
        terminalreporter.write_sep("-", "fidelity")
        for line in STATS.summary(KNOWN):
            terminalreporter.write_line(line)
