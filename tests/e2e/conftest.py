"""Fixtures for the containerd end-to-end tests (root only, real kernel, no mocks).

Everything is created under a fresh temp dir and a netns named ``wd...``; every
fixture cleans up in its finalizer, also after a failure. On a failed test the
containerd log, the ``ctr run`` logs and the node holder log are attached to the
report.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e.busybox_image import BUSYBOX, BusyboxImage, build_image_archive
from tests.e2e.private_containerd import Node, PrivateContainerd

REQUIRED_TOOLS = (
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "ip",
    "nsenter",
    "unshare",
    "mount",
    "iptables",
)
_counter = itertools.count()


def _require_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("containerd e2e needs root (network namespaces, mounts, containerd)")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if not BUSYBOX.exists():
        missing.append(str(BUSYBOX))
    if missing:
        # As root these tests must run: a missing dependency is a failure, not a skip.
        pytest.fail(
            "containerd e2e prerequisites missing: "
            + ", ".join(missing)
            + " (apt-get install containerd runc busybox-static iproute2 iptables"
            " util-linux containernetworking-plugins)"
        )


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> BusyboxImage:
    _require_root_and_tools()
    return build_image_archive(tmp_path_factory.mktemp("image") / "busybox-oci.tar")


@pytest.fixture
def e2e_base() -> Iterator[Path]:
    _require_root_and_tools()
    base = Path(tempfile.mkdtemp(prefix="wd-e2e-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def e2e_node(e2e_base: Path) -> Iterator[Node]:
    name = f"wd-e2e-{os.getpid()}-{next(_counter)}"
    n = Node(name=name, base=e2e_base / "node")
    try:
        n.start()
        yield n
    finally:
        n.close()


@pytest.fixture
def private_containerd(
    e2e_node: Node, e2e_base: Path, busybox_image: BusyboxImage
) -> Iterator[PrivateContainerd]:
    cd = PrivateContainerd(
        node=e2e_node, base=e2e_base / "containerd", namespace=f"wd-e2e-{uuid.uuid4().hex[:10]}"
    )
    try:
        cd.start()
        cd.import_image(busybox_image.archive)
        yield cd
    finally:
        cd.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    if rep.failed:
        _attach_logs(item, rep)
    return rep


def _attach_logs(item: pytest.Item, rep: pytest.TestReport) -> None:
    funcargs = getattr(item, "funcargs", {})
    cd = funcargs.get("private_containerd")
    if isinstance(cd, PrivateContainerd):
        rep.sections.append(("containerd log (tail)", cd.log_tail()))
        for log in sorted(cd.base.glob("ctr-*.log")):
            rep.sections.append((log.name, log.read_text(errors="replace")[-10000:]))
    nd = funcargs.get("e2e_node")
    if isinstance(nd, Node):
        holder_log = nd.base / "holder.log"
        if holder_log.exists():
            rep.sections.append(("node holder log", holder_log.read_text(errors="replace")))
    base = funcargs.get("e2e_base")  # the CRI tier's containerd and its chain's call log
    if isinstance(base, Path):
        log = base / "containerd" / "containerd.log"
        if not isinstance(cd, PrivateContainerd) and log.exists():
            rep.sections.append(("containerd log (tail)", log.read_text(errors="replace")[-20000:]))
        calls = base / "cni-calls.log"
        if calls.exists():
            rep.sections.append(("CNI calls", calls.read_text(errors="replace")))
