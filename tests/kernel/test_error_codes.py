"""Every CNI error code weft can answer with, reached through the plugin executable
(``WEFT_PLUGIN``: the frozen binary in ``make test-frozen``) by a real cause on a sandbox node,
pinned exactly, with nothing left half-made.

weft's own codes (cnispec/errors.py): 100 range exhausted, 101 a netlink request the kernel
refused, 102 CHECK failed, 104 masquerading (iptables) failed, 105 duplicate allocation.
The spec's 1, 4, 6, 7, 11 and 50 are pinned in tests/kernel/test_plugin.py and
tests/robustness; 5 (I/O failure) for DEL in tests/robustness/test_del.py and for ADD and
CHECK here.

999 ("a bug in weft") has no cause a runtime or a node can produce: every OS error is mapped
to a spec code at the boundary, and the robustness fuzzing counts 999s and requires none. A
genuine way to reach it through the binary would be a bug to fix, and the product has no
switch to fake one; the dispatcher's 999 wrapping is pinned in tests/unit/test_dispatch.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Node, nat_mentions, subnet_env
from tests.netns import expect_ok as ok

pytestmark = pytest.mark.root

IO_FAILURE = 5
NETLINK_FAILURE = 101
MASQ_FAILURE = 104
DUPLICATE_ALLOCATION = 105


def err(out: Any, code: int) -> dict[str, Any]:
    assert out.rc == 1, f"rc={out.rc} stdout={out.stdout} stderr={out.stderr[-2000:]}"
    e = json.loads(out.stdout)
    assert e["code"] == code, e
    assert isinstance(e["msg"], str) and e["msg"]
    assert "Traceback" not in out.stdout + out.stderr
    return dict(e)


def nothing_left(node: Node, pod: Any, cid: str) -> None:
    """The oracles of a failed ADD: no veth on the node, no eth0 in the pod, no reservation,
    record or lock file in the store, no NAT rule naming the container."""
    assert node.veths() == [] and "eth0" not in pod.links()
    assert node.reservations() == {} and node.weft_files() == []
    assert nat_mentions(node, cid) == []


@pytest.fixture
def path_without_iptables(tmp_path: Path) -> Iterator[str]:
    """A PATH holding what the plugin executable needs to start (ip for ``ip netns exec``;
    sh's helpers and python for tests/weft-from-source) and no iptables: a node where
    iptables is not installed."""
    d = tmp_path / "bin-without-iptables"
    d.mkdir()
    for tool in ("ip", "dirname", "readlink"):
        found = shutil.which(tool)
        assert found is not None, tool
        (d / tool).symlink_to(found)
    (d / "python3").symlink_to(os.environ.get("WEFT_PYTHON") or sys.executable)
    assert shutil.which("iptables-restore", path=str(d)) is None
    yield str(d)


def test_105_a_second_add_of_the_same_attachment_is_refused_and_changes_nothing(
    node: Node,
) -> None:
    pod = node.pod()
    res = ok(node.add(pod, "c1"))
    before = (node.reservations(), node.records(), sorted(node.veths()))
    e = err(node.add(pod, "c1"), DUPLICATE_ALLOCATION)
    assert e["msg"] == (
        "10.42.0.2 has been allocated to c1/eth0, duplicate allocation is not allowed"
    )
    # the refused ADD freed nothing of the live attachment: store and kernel as before
    assert (node.reservations(), node.records(), sorted(node.veths())) == before
    ok(node.check(pod, "c1", res))


def test_101_the_kernel_refusing_the_pods_ipv6_address(node: Node) -> None:
    """A dual-stack node and a pod netns with IPv6 disabled: the kernel refuses the address
    (EACCES), a netlink failure; the ADD undoes its veth and reservations."""
    node.write_subnet(subnet_env(ipv6=("2001:cafe:42::/56", "2001:cafe:42::1/64")))
    pod = node.pod()
    pod.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
    pod.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    e = err(node.add(pod, "c1"), NETLINK_FAILURE)
    assert "2001:cafe:42::2" in e["msg"] + e.get("details", ""), e
    assert "EACCES" in e.get("details", ""), e
    nothing_left(node, pod, "c1")


def test_104_add_with_ip_masq_on_a_node_without_iptables(
    node: Node, path_without_iptables: str
) -> None:
    pod = node.pod()
    conf = node.conf(ipMasq=True)
    e = err(node.add(pod, "c1", conf, env={"PATH": path_without_iptables}), MASQ_FAILURE)
    # the setup's iptables-restore fails first, and that is what the runtime is told; the
    # undo's iptables-save fails the same way, and is only logged
    assert e["msg"] == "cannot run iptables-restore", e
    nothing_left(node, pod, "c1")


def test_104_check_with_ip_masq_on_a_node_without_iptables(
    node: Node, path_without_iptables: str
) -> None:
    pod = node.pod()
    conf = node.conf(ipMasq=True)
    res = ok(node.add(pod, "c1", conf))
    ok(node.check(pod, "c1", res, conf))  # the control: with iptables there, CHECK passes
    e = err(node.check(pod, "c1", res, conf, env={"PATH": path_without_iptables}), MASQ_FAILURE)
    assert "iptables-save" in e["msg"], e
    ok(node.delete(pod, "c1", conf))


def test_5_add_when_the_store_cannot_be_written(node: Node) -> None:
    """The store directory is immutable (chattr +i): the reservation cannot be created, an
    I/O failure naming the store; the ADD leaves no veth and no reservation."""
    pod, first = node.pod(), node.pod()
    ok(node.add(first, "c0"))  # the store directory exists; then nothing new fits in it
    ok(node.delete(first, "c0"))
    store = node.store_dir()
    made = subprocess.run(["chattr", "+i", str(store)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"cannot make {store} immutable: {made.stderr.strip()}")
    try:
        e = err(node.add(pod, "c1"), IO_FAILURE)
        assert str(store) in e["msg"] + e.get("details", ""), e
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=True)
    nothing_left(node, pod, "c1")


def test_5_check_when_the_subnet_file_cannot_be_read(node: Node) -> None:
    """CHECK reads the subnet file; one that cannot be read (a directory where the file
    should be: EISDIR) is an I/O failure naming it, not a CHECK verdict."""
    pod = node.pod()
    res = ok(node.add(pod, "c1"))
    node.subnet_file.unlink()
    node.subnet_file.mkdir()
    e = err(node.check(pod, "c1", res), IO_FAILURE)
    assert str(node.subnet_file) in e["msg"] + e.get("details", ""), e
    assert "EISDIR" in e.get("details", ""), e
    node.subnet_file.rmdir()
    node.write_subnet()
    ok(node.check(pod, "c1", res))
    ok(node.delete(pod, "c1"))
