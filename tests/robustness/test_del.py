"""DEL never fails forever: whatever is already gone, DEL succeeds and cleans up
the rest; it fails only when something it must remove could not be removed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import pytest

from tests.netns import (
    Netns,
    Node,
    delete_netns,
    nat_left,
    node_veths,
    owners,
    records,
)
from tests.robustness._support import (
    assert_gone,
    bump,
    expect_error,
    expect_ok_empty,
    expect_result,
    host_veth,
)

pytestmark = pytest.mark.root


def _netns_deleted(node: Node, pod: Netns, veth: str) -> str:
    delete_netns(pod)
    return pod.path  # the runtime still passes the old path


def _veth_deleted(node: Node, pod: Netns, veth: str) -> str:
    node.ns.run("ip", "link", "del", veth)
    return pod.path


def _eth0_deleted_in_pod(node: Node, pod: Netns, veth: str) -> str:
    pod.run("ip", "link", "del", "eth0")
    return pod.path


def _subnet_file_removed(node: Node, pod: Netns, veth: str) -> str:
    node.subnet_file.unlink()
    return pod.path


def _store_removed(node: Node, pod: Netns, veth: str) -> str:
    shutil.rmtree(node.data_dir)
    return pod.path


def _empty_netns(node: Node, pod: Netns, veth: str) -> str:
    return ""


def _everything_gone(node: Node, pod: Netns, veth: str) -> str:
    delete_netns(pod)
    shutil.rmtree(node.data_dir)
    node.subnet_file.unlink()
    return ""


def _masq_rules_flushed(node: Node, pod: Netns, veth: str) -> str:
    node.ns.run("iptables", "-t", "nat", "-F", "POSTROUTING")
    return pod.path


BREAKS: dict[str, Callable[[Node, Netns, str], str]] = {
    "netns-deleted": _netns_deleted,
    "veth-deleted-by-hand": _veth_deleted,
    "eth0-deleted-in-pod": _eth0_deleted_in_pod,
    "subnet-file-removed": _subnet_file_removed,
    "store-dir-removed": _store_removed,
    "empty-CNI_NETNS": _empty_netns,
    "everything-gone": _everything_gone,
    "masq-jump-flushed": _masq_rules_flushed,
}


@pytest.mark.parametrize("what", list(BREAKS))
def test_del_succeeds_whatever_is_already_gone(node: Node, what: str) -> None:
    pod = node.pod()
    conf = node.conf(ipMasq=True)
    res = expect_result(node.add(pod, "gone", conf))
    veth = host_veth(res)
    netns = BREAKS[what](node, pod, veth)
    for _ in range(2):  # and called twice
        expect_ok_empty(node.exec("DEL", conf, "gone", netns))
        bump("del.calls_ok")
    assert veth not in node_veths(node)
    assert owners(node) == {} and records(node) == {}
    assert nat_left(node) == []
    assert_gone(node, pod if netns else None, "gone")
    bump("del.scenarios")


def test_del_of_something_never_added(node: Node) -> None:
    """DEL for a container the plugin never saw (runtime cleaning up a failed sandbox):
    success, with or without a netns, with or without a store directory."""
    pod = node.pod()
    expect_ok_empty(node.delete(pod, "never"))
    expect_ok_empty(node.delete(None, "never"))
    expect_result(node.add(node.pod(), "someone-else"))
    expect_ok_empty(node.delete(pod, "never"))
    assert len(owners(node)) == 1
    bump("del.scenarios")


def test_del_reports_an_error_when_it_cannot_remove_the_reservation(node: Node) -> None:
    """The one case DEL must fail: the reservation is there and cannot be removed (the
    store directory is made immutable). The error is a CNI error JSON; once the obstacle
    is gone, DEL succeeds and everything is cleaned up."""
    pod = node.pod()
    expect_result(node.add(pod, "stuck"))
    store = node.store_dir()
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.fail("chattr (e2fsprogs) is needed to make the store immutable")
    made = subprocess.run([chattr, "+i", str(store)], capture_output=True, text=True)
    if made.returncode != 0:  # e.g. tmpfs does not support the flag
        pytest.fail(f"cannot make {store} immutable: {made.stderr.strip()}")
    try:
        err = expect_error(node.delete(pod, "stuck"))
        assert err["code"] == 5, err  # I/O failure, naming what could not be removed
        assert str(store) in err.get("details", ""), err
        assert owners(node), "reservation vanished although DEL reported failure"
    finally:
        subprocess.run([chattr, "-i", str(store)], check=True)
    expect_ok_empty(node.delete(pod, "stuck"))
    assert_gone(node, pod, "stuck")
    bump("del.error_when_cannot_remove")
