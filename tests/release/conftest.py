from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.netns import Node
from tests.release.oldroot import OldRoot, old_root, wrapper

ARCHS = os.environ.get("WEFT_RELEASE_ARCHS", "amd64 arm64").split()


@pytest.fixture(scope="module", params=ARCHS)
def root(request: pytest.FixtureRequest) -> Iterator[OldRoot]:
    """A bullseye root of the parametrized architecture with that release unpacked in /opt."""
    with old_root(request.param) as r:
        yield r


@pytest.fixture(scope="module")
def plugin(root: OldRoot, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The release bundle inside the root, as a WEFT_PLUGIN for tests.netns.Node."""
    return str(wrapper(root, root.bundle, tmp_path_factory.mktemp(f"plugin-{root.arch}")))


@pytest.fixture
def release_node(node: Node, plugin: str) -> Node:
    """tests/conftest.py's sandbox node, its plugin the release bundle in the old root."""
    node.plugin = plugin
    return node
