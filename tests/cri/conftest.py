"""Fixtures for the CRI tier: containerd's CRI service on a sandbox node, driven over gRPC.

Reuses the ``ctr`` tier's sandbox library (``tests/e2e``): the node (netns + private mount
namespace with its own /etc, /opt, /var/lib and /run), the private containerd (here with its
CRI plugin on) and the OCI image builder (here a static pause image). The CNI config must be
in place before containerd starts (containerd 1.6's conflist watcher ignores create events),
so a test installs its chain first and then calls the ``start_cri`` factory.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.cri.client import CriClient
from tests.cri.stubs import generate
from tests.e2e.busybox_image import BusyboxImage, build_pause_archive
from tests.e2e.conftest import (
    _require_root_and_tools,
    e2e_base,  # noqa: F401  (a fixture this tier shares: the temp base dir)
    e2e_node,  # noqa: F401  (a fixture this tier shares: the sandbox node)
    pytest_runtest_makereport,  # noqa: F401  (failure reports carry the same logs)
)
from tests.e2e.private_containerd import CRI_NAMESPACE, CriSettings, Node, PrivateContainerd

PAUSE_SOURCE = Path(__file__).resolve().parent / "pause.c"
PAUSE_IMAGE = "registry.local/weft/pause:cri"


@pytest.fixture(scope="session")
def pause_image(tmp_path_factory: pytest.TempPathFactory) -> BusyboxImage:
    """The sandbox image: a static pause built here with gcc (nothing is pulled)."""
    _require_root_and_tools()
    work = tmp_path_factory.mktemp("pause")
    binary = work / "pause"
    proc = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(binary), str(PAUSE_SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:  # as root this tier must run: missing libc.a is a failure
        pytest.fail(
            f"building the static pause failed (apt-get install gcc libc6-dev):\n{proc.stderr}"
        )
    return build_pause_archive(work / "pause-oci.tar", PAUSE_IMAGE, binary)


@pytest.fixture(scope="session")
def cri_api(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """runtime.v1 messages and stubs, generated from tests/cri/runtime_v1.proto."""
    return generate(tmp_path_factory.mktemp("cri-stubs"))


StartCri = Callable[[], CriClient]


@pytest.fixture
def start_cri(
    e2e_node: Node,  # noqa: F811
    e2e_base: Path,  # noqa: F811
    pause_image: BusyboxImage,
    cri_api: tuple[ModuleType, ModuleType],
) -> Iterator[StartCri]:
    """Start containerd with CRI on the node (after the test installed its CNI chain) and hand
    out a gRPC client; on teardown stop and remove every sandbox left, then containerd."""
    started: list[tuple[PrivateContainerd, CriClient]] = []

    def start() -> CriClient:
        cd = PrivateContainerd(
            node=e2e_node,
            base=e2e_base / "containerd",
            namespace=CRI_NAMESPACE,
            cri=CriSettings(
                conf_dir="/etc/cni/net.d",
                bin_dir="/opt/cni/bin",
                sandbox_image=PAUSE_IMAGE,
                cgroup_parent=f"/weft-cri-{uuid.uuid4().hex[:10]}",
            ),
        )
        try:
            cd.start()
            cd.import_image(pause_image.archive)
        except BaseException:
            cd.close()
            raise
        client = CriClient(cd, *cri_api)
        started.append((cd, client))
        return client

    yield start
    for cd, client in started:
        try:
            client.remove_all()
        finally:
            client.close()
            cd.close()
