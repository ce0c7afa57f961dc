"""The node's subnet or MTU changes under running pods (flannel rewrote
subnet.env): new pods follow, old pods still DEL cleanly; STATUS says when ADD can't work."""

from __future__ import annotations

import pytest

from tests.netns import (
    Node,
    owners,
    subnet_env,
)
from tests.robustness._support import (
    assert_gone,
    assert_there,
    bump,
    expect_error,
    expect_ok_empty,
    expect_result,
    host_veth,
    result_ip,
)

pytestmark = pytest.mark.root


def _cni0_v4(node: Node) -> list[str]:
    return node.ns.addrs("cni0")


def test_subnet_change_moves_cni0_and_old_pods_still_delete(node: Node) -> None:
    old_pod = node.pod()
    old = expect_result(node.add(old_pod, "before"))
    assert result_ip(old).startswith("10.42.0.")
    assert _cni0_v4(node) == ["10.42.0.1/24"]

    node.write_subnet(subnet_env("10.42.7.1/24"))
    new_pod = node.pod()
    new = expect_result(node.add(new_pod, "after"))
    ip = result_ip(new)
    assert ip.startswith("10.42.7.") and ip != "10.42.7.1"
    assert new["ips"][0]["gateway"] == "10.42.7.1"
    assert _cni0_v4(node) == ["10.42.7.1/24"]  # old gateway gone (forceAddress)
    routes = {r["dst"]: r.get("gateway") for r in new_pod.routes()}
    assert routes.get("default") == "10.42.7.1"
    assert_there(node, new_pod, "after", ip)

    # DEL of the pod in the old range still cleans everything up
    expect_ok_empty(node.delete(old_pod, "before"))
    assert_gone(node, old_pod, "before")
    assert list(owners(node)) == [ip]
    assert_there(node, new_pod, "after", ip)
    expect_ok_empty(node.delete(new_pod, "after"))
    assert_gone(node, new_pod, "after")
    bump("subnet_change.scenarios")


def test_mtu_change_new_pods_and_cni0_follow(node: Node) -> None:
    a = node.pod()
    ra = expect_result(node.add(a, "mtu-a"))
    links = node.ns.links()
    assert links["cni0"]["mtu"] == 1450 and a.links()["eth0"]["mtu"] == 1450

    node.write_subnet(subnet_env("10.42.0.1/24", mtu=1400))
    b = node.pod()
    rb = expect_result(node.add(b, "mtu-b"))
    links = node.ns.links()
    assert b.links()["eth0"]["mtu"] == 1400
    assert links[host_veth(rb)]["mtu"] == 1400
    assert links["cni0"]["mtu"] == 1400
    for cid, pod in (("mtu-a", a), ("mtu-b", b)):
        expect_ok_empty(node.delete(pod, cid))
        assert_gone(node, pod, cid)
    assert ra["ips"] and owners(node) == {}
    bump("subnet_change.scenarios")


def _status(node: Node) -> tuple[int, str]:
    out = node.exec("STATUS", node.conf("1.1.0"))
    if out.rc == 0:
        expect_ok_empty(out)
        return 0, ""
    err = expect_error(out, code=50)
    return 50, (err["msg"] + " " + err.get("details", "")).lower()


def test_status_reports_50_with_a_reason(node: Node) -> None:
    assert _status(node) == (0, "")
    node.subnet_file.unlink()  # flannel has not written it (yet)
    code, text = _status(node)
    assert code == 50 and str(node.subnet_file).lower() in text and "subnet" in text
    node.write_subnet("FLANNEL_SUBNET=garbage\n")
    code, text = _status(node)
    assert code == 50 and "flannel_subnet" in text

    node.write_subnet(subnet_env("10.42.0.1/29"))
    assert _status(node) == (0, "")
    pods = []
    for i in range(5):
        pod = node.pod()
        expect_result(node.add(pod, f"st-{i}"))
        pods.append(pod)
    code, text = _status(node)
    assert code == 50 and "no ip addresses available" in text and "10.42.0" in text
    expect_ok_empty(node.delete(pods[0], "st-0"))
    assert _status(node) == (0, "")  # room again
    bump("subnet_change.status_checks", 5)
