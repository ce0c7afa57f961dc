"""Robustness suite: collects the figures the tests produce and reports them at the end
(terminal summary, and ``<pytest basetemp>/weft-robustness-figures.json``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.robustness._support import FIGURES

_OUT: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _figures_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    path = tmp_path_factory.getbasetemp() / "weft-robustness-figures.json"
    path.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
    _OUT.append(path)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("weft robustness figures")
    for key in sorted(FIGURES):
        terminalreporter.write_line(f"{key}: {FIGURES[key]}")
    for p in _OUT:
        terminalreporter.write_line(f"written to {p}")
