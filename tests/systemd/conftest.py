from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Node, sandbox_node
from tests.release.oldroot import tarball
from tests.systemd.sdroot import SystemdRoot, systemd_root

ARCH = "amd64"


@pytest.fixture(scope="module")
def machine_tmp_file() -> Iterator[Path]:
    """A file in the machine's /tmp from before the root boots (its systemd-tmpfiles empties
    the /tmp it sees at boot: that must never be the machine's)."""
    fd, name = tempfile.mkstemp(prefix="weft-systemd-sentinel-", dir="/tmp")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def sdroot(machine_tmp_file: Path) -> Iterator[SystemdRoot]:
    """A booted systemd node root with the amd64 release tarball unpacked in its /opt."""
    with systemd_root(ARCH) as root:
        with tarfile.open(tarball(ARCH)) as t:
            top = t.getnames()[0].split("/")[0]
            t.extractall(root.host_path("/opt"), filter="tar")
        (root.host_path("/opt") / "TOP").write_text(top)
        yield root


def top_of(root: SystemdRoot) -> str:
    """The unpacked tarball's directory, inside the root."""
    return "/opt/" + (root.host_path("/opt") / "TOP").read_text()


@pytest.fixture
def node(sdroot: SystemdRoot, request: pytest.FixtureRequest) -> Iterator[Node]:
    """tests/conftest.py's sandbox node, its files in a directory the root sees at the same
    path (the root's /tmp is its own)."""
    with sandbox_node(sdroot.node_dir(request.node.name[:40])) as n:
        yield n
