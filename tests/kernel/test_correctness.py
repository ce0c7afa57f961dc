"""What the kernel and the node's files say, trusted only when they say it whole: the netns
a record names, the subnet file's keys, the bridge as the reference leaves it, an address
the runtime asks for. (Dumps that raced a change: tests/unit/test_dump_intr.py.)

Oracles: ``ip -j`` and /proc/sys read inside the sandbox netns, the store on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.netns import (
    Netns,
    Node,
    cni_env,
    create_netns,
    delete_netns,
    host_veth_name,
    netconf,
    reference_plugin,
    subnet_env,
)

pytestmark = pytest.mark.root


def ok(out: Any) -> Any:
    assert out.rc == 0, f"rc={out.rc} stdout={out.stdout} stderr={out.stderr[-2000:]}"
    return out.json if out.stdout.strip() else None


def err(out: Any, code: int) -> dict[str, Any]:
    assert out.rc != 0, out.stdout
    e = json.loads(out.stdout)
    assert e["code"] == code, e
    assert "Traceback" not in out.stdout
    return dict(e)


# ---- a netns path that names another namespace ------------------------------------------------
SLASH_29 = subnet_env("10.42.5.1/29")  # 10.42.5.2 .. 10.42.5.6: five addresses


@contextmanager
def recreated(pod: Netns) -> Iterator[None]:
    """Delete ``pod``'s netns without DEL (a crashed runtime) and create another one under
    the same name. The old namespace is held open meanwhile, so the kernel cannot hand its
    identity to the new one: the path names another namespace, for certain."""
    held = os.open(pod.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        before = os.fstat(held)
        delete_netns(pod)
        create_netns(pod.name)
        after = os.stat(pod.path)
        assert (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino)
        yield
    finally:
        os.close(held)


def fill(node: Node, count: int) -> None:
    for i in range(count):
        ok(node.add(node.pod(), f"fill{i}"))


def test_an_address_whose_netns_name_was_reused_is_reclaimed(node: Node) -> None:
    node.write_subnet(SLASH_29)
    x = node.pod()
    first = ok(node.add(x, "a"))["ips"][0]["address"]
    with recreated(x):
        assert "eth0" not in x.links()  # the new namespace has no pod interface
        fill(node, 4)
        late = node.add(node.pod(), "late")
        assert late.rc == 0, late.stdout  # before: code 100, "(0 stale, ...)"
        assert late.json["ips"][0]["address"] == first
        assert node.reservations()[first.split("/")[0]] == b"late\r\neth0"
        assert [r["containerID"] for r in node.records().values()].count("a") == 0
        assert "names another namespace" in late.stderr


def test_a_record_without_the_netns_identity_keeps_the_path_rule(node: Node) -> None:
    """Records written before weft recorded the namespace's identity: a path that exists
    still keeps the address (nothing to compare it with)."""
    node.write_subnet(SLASH_29)
    x = node.pod()
    ok(node.add(x, "a"))
    [path] = [p for p in (node.store_dir() / ".weft").glob("*.json")]
    rec = json.loads(path.read_text())
    assert isinstance(rec.pop("netnsDevice"), int) and isinstance(rec.pop("netnsInode"), int)
    path.write_text(json.dumps(rec))
    with recreated(x):
        fill(node, 4)
        e = err(node.add(node.pod(), "late"), 100)
        assert "(0 stale" in e["details"]
        assert node.reservations()["10.42.5.2"] == b"a\r\neth0"


def test_the_record_holds_the_identity_of_the_pods_namespace(node: Node) -> None:
    pod = node.pod()
    ok(node.add(pod, "c1"))
    [rec] = node.records().values()
    st = os.stat(pod.path)
    assert (rec["netnsDevice"], rec["netnsInode"]) == (st.st_dev, st.st_ino)
    ok(node.delete(pod, "c1"))


# ---- the subnet file must carry every key flannel's plugin requires ----------------------
@pytest.mark.parametrize(
    ("mtu", "ipmasq", "named"),
    [
        (None, None, ["FLANNEL_MTU", "FLANNEL_IPMASQ"]),
        (None, True, ["FLANNEL_MTU"]),
        (1450, None, ["FLANNEL_IPMASQ"]),
    ],
)
def test_a_subnet_file_without_mtu_or_ipmasq_is_try_again(
    node: Node, mtu: int | None, ipmasq: bool | None, named: list[str]
) -> None:
    node.write_subnet(subnet_env(mtu=mtu, ipmasq=ipmasq))
    pod = node.pod()
    e = err(node.add(pod, "c1"), 11)
    text = e["msg"] + " " + e.get("details", "")
    assert all(k in text for k in named), text
    assert str(node.subnet_file) in text
    assert node.veths() == [] and node.reservations() == {} and "eth0" not in pod.links()
    assert "cni0" not in node.ns.links()  # nothing made from a half-written file
    status = err(node.exec("STATUS", node.conf("1.1.0")), 50)
    assert all(k in status["msg"] + status.get("details", "") for k in named)


def test_del_still_works_when_the_subnet_file_is_incomplete(node: Node) -> None:
    pod = node.pod()
    ok(node.add(pod, "c1"))
    node.write_subnet(subnet_env(mtu=None))
    ok(node.delete(pod, "c1"))
    assert node.veths() == [] and node.reservations() == {} and node.weft_files() == []


# ---- the bridge as the reference leaves it --------------------------------------------------
def accept_ra(node: Node, ifname: str) -> str:
    """Read inside the node's netns, by the kernel's /proc/sys (not through weft)."""
    return str(node.ns.run("cat", f"/proc/sys/net/ipv6/conf/{ifname}/accept_ra").stdout.strip())


def test_accept_ra_is_off_on_the_bridge_and_the_host_veth(node: Node) -> None:
    pod = node.pod()
    res = ok(node.add(pod, "c1"))
    veth = res["interfaces"][1]["name"]
    assert node.ns.links()[veth]["master"] == "cni0"
    assert accept_ra(node, "cni0") == "0" and accept_ra(node, veth) == "0"
    assert accept_ra(node, "default") == "1"  # only weft's interfaces, never the netns default
    node.ns.run("sysctl", "-qw", "net.ipv6.conf.cni0.accept_ra=1")
    res2 = ok(node.add(node.pod(), "c2"))
    assert accept_ra(node, "cni0") == "0" and accept_ra(node, res2["interfaces"][1]["name"]) == "0"


DUAL = subnet_env(ipv6=("2001:cafe:42::/56", "2001:cafe:42::1/64"))


def bridge_with(node: Node, *addrs: str) -> None:
    node.ns.run("ip", "link", "add", "cni0", "type", "bridge")
    node.ns.run("ip", "link", "set", "cni0", "up")
    for a in addrs:
        node.ns.run("ip", "addr", "add", a, "dev", "cni0", *(["nodad"] if ":" in a else []))


def global_addrs(node: Node) -> set[str]:
    return {a for a in node.ns.addrs("cni0") if not a.startswith("fe80:")}


@pytest.mark.parametrize("force", [False, True])
def test_other_ipv6_prefixes_on_the_bridge_are_left_alone(node: Node, force: bool) -> None:
    node.write_subnet(DUAL)
    bridge_with(node, "fd99::1/64", "2001:db8:7::1/64")
    pod = node.pod()
    ok(node.add(pod, "c1", node.conf(forceAddress=force)))
    assert global_addrs(node) == {
        "10.42.0.1/24",
        "2001:cafe:42::1/64",
        "fd99::1/64",
        "2001:db8:7::1/64",
    }
    out = pod.run("ping", "-6", "-c", "1", "-W", "2", "2001:cafe:42::1", check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("other", ["2001:cafe:42::99/64", "2001:cafe:42::1/56", "10.42.9.1/24"])
def test_an_overlapping_ipv6_or_any_other_ipv4_address_is_in_the_way(
    node: Node, other: str
) -> None:
    node.write_subnet(DUAL)
    bridge_with(node, other, "fd99::1/64")
    pod = node.pod()
    e = err(node.add(pod, "c1", node.conf(forceAddress=False)), 7)
    assert "cni0 already has an IP address different from" in e["msg"]
    assert other in e.get("details", "")
    assert node.reservations() == {} and "eth0" not in pod.links() and node.veths() == []
    assert other in global_addrs(node)
    ok(node.add(pod, "c1", node.conf(forceAddress=True)))
    assert global_addrs(node) == {"10.42.0.1/24", "2001:cafe:42::1/64", "fd99::1/64"}


# ---- an address the runtime asks for -------------------------------------------------------
def args(ip: str) -> dict[str, str]:
    return {"CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME=p;IP={ip}"}


def with_ips(conf: dict[str, Any], *ips: str) -> dict[str, Any]:
    c = dict(conf)
    c["runtimeConfig"] = {"ips": list(ips), "portMappings": []}
    return c


def reference_add(
    node: Node, cid: str, env: dict[str, str], conf: dict[str, Any] | None = None
) -> tuple[Netns, int, Any]:
    """The reference bridge + host-local on the same node, store and cni0, in a new pod."""
    pod = node.pod()
    ref = conf or netconf(reference_plugin(node.subnet_file.read_text(), node.data_dir))
    e = cni_env("ADD", cid, pod.path)
    e.update(env)
    proc = subprocess.run(
        ["ip", "netns", "exec", node.ns.name, "/usr/lib/cni/bridge"],
        input=json.dumps(ref),
        text=True,
        env=e,
        capture_output=True,
        timeout=60,
    )
    return pod, proc.returncode, json.loads(proc.stdout)


def address_of(pod: Netns) -> list[str]:
    return [a for a in pod.addrs("eth0") if ":" not in a]


def test_a_requested_address_is_given_and_refused_as_the_reference_does(node: Node) -> None:
    pod, rc, res = reference_add(node, "ref1", args("10.42.0.77"))
    assert rc == 0 and res["ips"][0]["address"] == "10.42.0.77/24", res
    w1 = node.pod()
    assert ok(node.add(w1, "w1", env=args("10.42.0.78")))["ips"][0]["address"] == "10.42.0.78/24"
    assert address_of(w1) == ["10.42.0.78/24"]
    assert node.reservations() == {"10.42.0.77": b"ref1\r\neth0", "10.42.0.78": b"w1\r\neth0"}
    # the same refused requests, to the reference and to weft: host-local's words
    for i, (ip, code) in enumerate(
        [("10.42.0.77", 105), ("10.42.0.78", 105), ("10.42.0.1", 7), ("10.43.0.5", 7)]
    ):
        _, rc, ref_err = reference_add(node, f"ref-no{i}", args(ip))
        assert rc != 0
        pod = node.pod()
        e = err(node.add(pod, f"w-no{i}", env=args(ip)), code)
        assert e["msg"] == ref_err["msg"], (e, ref_err)
        assert "eth0" not in pod.links() and host_veth_name(f"w-no{i}") not in node.veths()
        assert set(node.reservations()) == {"10.42.0.77", "10.42.0.78"}
    # the ips capability (runtimeConfig.ips), address or address/prefix
    ref_plugin = reference_plugin(node.subnet_file.read_text(), node.data_dir)
    ref_conf = with_ips(netconf(ref_plugin), "10.42.0.88/24")
    _, rc, res = reference_add(node, "ref2", {}, ref_conf)
    assert rc == 0 and res["ips"][0]["address"] == "10.42.0.88/24"
    w2 = node.pod()
    ok(node.add(w2, "w2", with_ips(node.conf(), "10.42.0.89/24")))
    assert address_of(w2) == ["10.42.0.89/24"]
    assert node.reservations()["10.42.0.89"] == b"w2\r\neth0"
    assert {host_veth_name("w1"), host_veth_name("w2")} <= set(node.veths())


def test_requested_addresses_in_both_families(node: Node) -> None:
    node.write_subnet(DUAL)
    pod = node.pod()
    res = ok(node.add(pod, "c1", with_ips(node.conf(), "2001:cafe:42::99", "10.42.0.99")))
    assert [ip["address"] for ip in res["ips"]] == ["10.42.0.99/24", "2001:cafe:42::99/64"]
    assert sorted(pod.addrs("eth0")) == ["10.42.0.99/24", "2001:cafe:42::99/64"]


def test_a_requested_address_held_by_a_dead_pod_is_reclaimed(node: Node) -> None:
    dead = node.pod()
    ok(node.add(dead, "dead", env=args("10.42.0.50")))
    delete_netns(dead)
    node.pods.remove(dead)
    pod = node.pod()
    assert ok(node.add(pod, "new", env=args("10.42.0.50")))["ips"][0]["address"] == "10.42.0.50/24"
    assert node.reservations() == {"10.42.0.50": b"new\r\neth0"}
    assert [r["containerID"] for r in node.records().values()] == ["new"]
