from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Node, guard_machine_paths, sandbox_node


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Root tests need root. Outside CI, a non-root run reports them as skipped (visibly);
    under CI (CI=true, which runs as root) nothing is ever skipped: they run, or fail."""
    if os.geteuid() == 0 or os.environ.get("CI"):
        return
    for item in items:
        if item.get_closest_marker("root"):
            item.add_marker(
                pytest.mark.skip(reason="needs root (network namespaces); CI runs as root")
            )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with sandbox_node(tmp_path) as n:
        yield n


# the machine's own CNI paths end the session as they began (tests.netns.MACHINE_PATHS)
_machine_paths_untouched = pytest.fixture(scope="session", autouse=True)(guard_machine_paths)
