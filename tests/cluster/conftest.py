"""Fixtures for the cluster tier: a three-node sandbox cluster per flannel backend.

Everything lives in netns named ``wk<random>-...`` and a pytest temp dir; every fixture
tears its cluster down in ``finally``, also after a failed test or a half-built cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.cluster import BACKENDS, DRIVER, REFERENCE_DIR, Cluster, running_cluster
from tests.netns import PLUGIN

TOOLS = ("ip", "bridge", "ping", "iptables-restore", "iptables-save", "sysctl")


def _prerequisites() -> None:
    """As root these tests must run: a missing piece is a failure, never a skip."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    missing += [str(p) for p in (DRIVER, Path(PLUGIN)) if not os.access(p, os.X_OK)]
    missing += [
        str(REFERENCE_DIR / n) for n in ("portmap", "bandwidth") if not (REFERENCE_DIR / n).exists()
    ]
    if missing:
        pytest.fail(
            "cluster tier prerequisites missing: " + ", ".join(missing)
            + " (make build conformance-driver; apt-get install iproute2 iptables iputils-ping"
            " containernetworking-plugins)"
        )  # fmt: skip
    if not Path("/proc/sys/net/bridge").is_dir():  # br_netfilter: kube-proxy needs it
        subprocess.run(["modprobe", "br_netfilter"], check=False)
        if not Path("/proc/sys/net/bridge").is_dir():
            pytest.fail("br_netfilter is not available (modprobe br_netfilter)")


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One cluster per backend, shared by the read-only tests of a module."""
    _prerequisites()
    with running_cluster(request.param, tmp_path_factory.mktemp(request.param)) as c:
        yield c


@pytest.fixture(params=BACKENDS)
def fresh_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own, for a test that reboots a node."""
    _prerequisites()
    with running_cluster(request.param, tmp_path) as c:
        yield c
