"""The plugin against a real kernel: a sandbox node netns, pod netns, the plugin executable.

Kernel state is read back with ``ip -j`` (tests/netns.py), never with weft's own code.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.netns import (
    Netns,
    Node,
    cni_env,
    delete_netns,
    host_veth_name,
    masq_chain_of,
    nat_left,
    netconf,
    reference_plugin,
    subnet_env,
)

pytestmark = pytest.mark.root

ALL_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def addr_of(pod: Netns, dev: str = "eth0", family: int = 4) -> list[str]:
    return [a for a in pod.addrs(dev) if (":" in a) == (family == 6)]


def ok(out: Any) -> Any:
    assert out.rc == 0, f"rc={out.rc} stdout={out.stdout} stderr={out.stderr[-2000:]}"
    return out.json if out.stdout.strip() else None


def err(out: Any, code: int) -> dict[str, Any]:
    assert out.rc != 0, out.stdout
    e = json.loads(out.stdout)
    assert e["code"] == code, e
    assert isinstance(e["msg"], str) and e["msg"]
    assert "Traceback" not in out.stdout
    return dict(e)


def test_add_gives_pod_address_mtu_routes_and_bridge_gateway(node: Node) -> None:
    pod = node.pod()
    res = ok(node.add(pod, "c1"))
    # result shape: [bridge, host veth, pod eth0 in the sandbox]; ips point at eth0
    names = [i["name"] for i in res["interfaces"]]
    assert names[0] == "cni0" and names[2] == "eth0" and res["interfaces"][2]["sandbox"] == pod.path
    assert res["ips"] == [{"address": "10.42.0.2/24", "gateway": "10.42.0.1", "interface": 2}]
    # the pod, as the kernel sees it
    eth0 = pod.links()["eth0"]
    assert eth0["mtu"] == 1450 and "UP" in eth0["flags"]
    assert eth0["address"] == res["interfaces"][2]["mac"]
    assert addr_of(pod) == ["10.42.0.2/24"]
    routes = {(r["dst"], r.get("gateway")) for r in pod.routes()}
    assert ("default", "10.42.0.1") in routes and ("10.42.0.0/16", "10.42.0.1") in routes
    # the node: cni0 is a bridge with the gateway and the MTU; the veth is its port, hairpin on
    links = node.ns.links()
    cni0 = links["cni0"]
    assert cni0["linkinfo"]["info_kind"] == "bridge" and cni0["mtu"] == 1450
    assert "UP" in cni0["flags"]
    assert node.ns.addrs("cni0") == ["10.42.0.1/24"]
    veth = links[names[1]]
    assert veth["linkinfo"]["info_kind"] == "veth" and veth["master"] == "cni0"
    assert veth["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert veth["mtu"] == 1450
    assert node.ns.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    # the store is host-local's format, byte for byte
    assert node.reservations() == {"10.42.0.2": b"c1\r\neth0"}
    assert (node.store_dir() / "last_reserved_ip.0").read_text() == "10.42.0.2"


def test_two_pods_ping_each_other_and_the_gateway(node: Node) -> None:
    p1, p2 = node.pod(), node.pod()
    a1 = ok(node.add(p1, "c1"))["ips"][0]["address"].split("/")[0]
    a2 = ok(node.add(p2, "c2"))["ips"][0]["address"].split("/")[0]
    assert a1 != a2
    for pod, target in ((p1, "10.42.0.1"), (p1, a2), (p2, a1)):
        out = pod.run("ping", "-c", "1", "-W", "2", target, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


def test_check_passes_after_add_and_fails_after_drift(node: Node) -> None:
    pod = node.pod()
    res = ok(node.add(pod, "c1"))
    ok(node.check(pod, "c1", res))
    pod.run("ip", "addr", "del", "10.42.0.2/24", "dev", "eth0")
    e = err(node.check(pod, "c1", res), 102)
    assert "10.42.0.2/24" in e["msg"]


def test_check_notices_a_missing_route_without_gw(node: Node) -> None:
    """The reference 1.1.1 can't CHECK routes without an explicit gw; weft must."""
    pod = node.pod()
    res = ok(node.add(pod, "c1"))
    prev = dict(res, routes=[{"dst": "10.42.0.0/16"}])
    ok(node.check(pod, "c1", prev))
    pod.run("ip", "route", "del", "10.42.0.0/16")
    e = err(node.check(pod, "c1", prev), 102)
    assert "10.42.0.0/16" in e["msg"]


def test_check_notices_hairpin_and_bridge_drift(node: Node) -> None:
    pod = node.pod()
    res = ok(node.add(pod, "c1"))
    veth = res["interfaces"][1]["name"]
    node.ns.run("ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "off")
    assert "hairpin" in err(node.check(pod, "c1", res), 102)["msg"]


def test_del_twice_leaves_nothing(node: Node) -> None:
    pod = node.pod()
    ok(node.add(pod, "c1"))
    assert node.veths()
    ok(node.delete(pod, "c1"))
    ok(node.delete(pod, "c1"))
    assert node.veths() == [] and node.reservations() == {}
    assert "eth0" not in pod.links()
    assert node.weft_files() == []


def test_del_after_netns_is_gone_frees_the_address(node: Node) -> None:
    pod = node.pod()
    ok(node.add(pod, "c1"))
    delete_netns(pod)
    ok(node.delete(pod, "c1"))
    ok(node.delete(None, "c1"))  # empty CNI_NETNS too
    assert node.reservations() == {} and node.veths() == []


def test_add_into_existing_ifname_fails_cleanly(node: Node) -> None:
    pod = node.pod()
    pod.run(
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"
    )  # no dummy module here
    e = err(node.add(pod, "c1"), 4)
    assert "eth0" in e["msg"]
    assert node.veths() == [] and node.reservations() == {}
    assert node.weft_files() == []
    assert "other0" in pod.links() and "eth0" in pod.links()  # untouched


def test_exhaustion_on_a_slash_29(node: Node) -> None:
    node.write_subnet(subnet_env("10.42.5.1/29", ipmasq=False))
    pods = [node.pod() for _ in range(6)]
    got = [ok(node.add(p, f"c{i}"))["ips"][0]["address"] for i, p in enumerate(pods[:5])]
    assert sorted(got) == [f"10.42.5.{n}/29" for n in range(2, 7)]
    e = err(node.add(pods[5], "c5"), 100)
    assert e["msg"] == "no IP addresses available in range 10.42.5.2-10.42.5.6"
    assert len(node.reservations()) == 5 and len(node.veths()) == 5
    assert "eth0" not in pods[5].links()
    ok(node.delete(pods[0], "c0"))
    assert ok(node.add(pods[5], "c5"))["ips"][0]["address"] == "10.42.5.2/29"


def test_dual_stack(node: Node) -> None:
    node.write_subnet(subnet_env(ipv6=("2001:cafe:42::/56", "2001:cafe:42::1/64")))
    p1, p2 = node.pod(), node.pod()
    res = ok(node.add(p1, "c1"))
    assert [ip["address"] for ip in res["ips"]] == ["10.42.0.2/24", "2001:cafe:42::2/64"]
    ok(node.add(p2, "c2"))
    assert addr_of(p1, family=6) == ["2001:cafe:42::2/64"]
    assert sorted(node.ns.addrs("cni0")) == ["10.42.0.1/24", "2001:cafe:42::1/64"]
    r6 = {(r["dst"], r.get("gateway")) for r in p1.routes("-6")}
    assert ("default", "2001:cafe:42::1") in r6 and ("2001:cafe:42::/56", "2001:cafe:42::1") in r6
    out = p1.run("ping", "-6", "-c", "1", "-W", "2", "2001:cafe:42::3", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    ok(node.check(p1, "c1", res))
    ok(node.delete(p1, "c1"))
    assert set(node.reservations()) == {"10.42.0.3", "2001:cafe:42::3"}


def test_force_address_after_subnet_change(node: Node) -> None:
    p1, p2 = node.pod(), node.pod()
    ok(node.add(p1, "c1"))
    node.write_subnet(subnet_env("10.42.9.1/24", ipmasq=False))
    res = ok(node.add(p2, "c2"))
    assert res["ips"][0]["address"] == "10.42.9.2/24"
    assert node.ns.addrs("cni0") == ["10.42.9.1/24"]
    # without forceAddress the stale gateway is a clear error, and nothing is left behind
    node.write_subnet(subnet_env("10.42.10.1/24", ipmasq=False))
    p3 = node.pod()
    e = err(node.add(p3, "c3", node.conf(forceAddress=False)), 7)
    assert "already has an IP address different from 10.42.10.1/24" in e["msg"]
    assert "10.42.10.2" not in node.reservations() and "eth0" not in p3.links()
    ok(node.delete(p1, "c1"))  # the pod of the old range is still cleaned up
    assert "10.42.0.2" not in node.reservations()


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_version_add_check_del(node: Node, version: str) -> None:
    pod = node.pod()
    res = ok(node.add(pod, "c1", node.conf(version)))
    assert res["cniVersion"] == version
    assert all(("version" in ip) == version.startswith("0.") for ip in res["ips"])
    if version in ("0.3.0", "0.3.1"):
        err(node.check(pod, "c1", res, node.conf(version)), 1)  # CHECK needs >= 0.4.0
    else:
        ok(node.check(pod, "c1", res, node.conf(version)))
    ok(node.delete(pod, "c1", node.conf(version)))
    assert node.reservations() == {} and node.veths() == []


def test_ip_masq_rules_are_the_reference_bridges_and_del_removes_them(node: Node) -> None:
    """The chain, comment and rule shapes are the reference bridge plugin's (its
    FormatChainName/FormatComment, and iptables-save's form of its rules), and DEL leaves
    the whole nat table as it was."""
    pod = node.pod()
    conf = node.conf(ipMasq=True)
    res = ok(node.add(pod, "c1", conf))
    chain = masq_chain_of("c1")
    comment = '--comment "name: \\"cbr0\\" id: \\"c1\\""'
    assert sorted(nat_left(node)) == sorted(
        [
            f"+ ipv4 :{chain} - [0:0]",
            f"+ ipv4 -A POSTROUTING -s 10.42.0.2/32 -m comment {comment} -j {chain}",
            f"+ ipv4 -A {chain} -d 10.42.0.0/24 -m comment {comment} -j ACCEPT",
            f"+ ipv4 -A {chain} ! -d 224.0.0.0/4 -m comment {comment} -j MASQUERADE",
        ]
    )
    ok(node.check(pod, "c1", res, conf))
    ok(node.delete(pod, "c1", conf))
    assert nat_left(node) == []


def test_missing_subnet_file_is_try_again_and_malformed_is_7(node: Node) -> None:
    pod = node.pod()
    node.subnet_file.unlink()
    e = err(node.add(pod, "c1"), 11)
    assert "flannel has not written the subnet file yet" in e["msg"]
    node.write_subnet(subnet_env("10.43.0.1/24"))
    e = err(node.add(pod, "c1"), 7)
    assert "subnet.env:2" in (e["msg"] + e.get("details", ""))  # names the line
    assert node.veths() == [] and node.reservations() == {} and "eth0" not in pod.links()


@pytest.mark.parametrize(
    ("netns", "code"), [("/run/netns/does-not-exist", 4), ("/proc/self/status", 4), ("relative", 4)]
)
def test_bad_netns_is_code_4_and_leaves_nothing(node: Node, netns: str, code: int) -> None:
    err(node.exec("ADD", node.conf(), "c1", netns), code)
    assert not os.path.exists("/run/netns/does-not-exist")  # never created
    assert node.veths() == [] and node.reservations() == {}


def test_status_and_gc(node: Node) -> None:
    conf = node.conf("1.1.0")
    ok(node.exec("STATUS", conf))
    p1, p2 = node.pod(), node.pod()
    ok(node.add(p1, "keep", conf))
    ok(node.add(p2, "drop", conf))
    gc = dict(conf)
    gc["cni.dev/valid-attachments"] = [{"containerID": "keep", "ifname": "eth0"}]
    ok(node.exec("GC", gc))
    assert node.reservations() == {"10.42.0.2": b"keep\r\neth0"}
    assert len(node.veths()) == 1 and "eth0" not in p2.links() and "eth0" in p1.links()
    ok(node.exec("GC", conf))  # no valid-attachments key: a no-op
    assert len(node.reservations()) == 1
    node.subnet_file.unlink()
    e = err(node.exec("STATUS", conf), 50)
    assert "subnet file" in e["msg"]


def test_interoperates_with_reference_host_local_store(node: Node) -> None:
    """An operator can switch between weft and the reference on a running node."""
    pod_ref, pod_weft = node.pod(), node.pod()
    # the reference as k3s's flannel plugin drives it, from the same subnet file
    ref_conf = netconf(reference_plugin(node.subnet_file.read_text(), node.data_dir))
    env = cni_env("ADD", "ref1", pod_ref.path)
    subprocess.run(
        ["ip", "netns", "exec", node.ns.name, "/usr/lib/cni/bridge"],
        input=json.dumps(ref_conf),
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )
    assert node.reservations() == {"10.42.0.2": b"ref1\r\neth0"}
    assert ok(node.add(pod_weft, "w1"))["ips"][0]["address"] == "10.42.0.3/24"
    ok(node.delete(pod_ref, "ref1"))  # weft releases a host-local reservation and its eth0
    assert node.reservations() == {"10.42.0.3": b"w1\r\neth0"}
    assert "eth0" not in pod_ref.links()


def test_check_of_a_pod_the_reference_made_passes_and_leaves_no_lock(node: Node) -> None:
    """weft finds the reference's randomly named host veth as the reference does, by the
    pod eth0's peer; and it takes no lock file it would leave behind for that pod."""
    pod = node.pod()
    ref_conf = netconf(reference_plugin(node.subnet_file.read_text(), node.data_dir))
    ref = subprocess.run(
        ["ip", "netns", "exec", node.ns.name, "/usr/lib/cni/bridge"],
        input=json.dumps(ref_conf),
        text=True,
        env=cni_env("ADD", "ref1", pod.path),
        check=True,
        capture_output=True,
    )
    res = json.loads(ref.stdout)
    assert res["interfaces"][1]["name"] != host_veth_name("ref1")
    ok(node.check(pod, "ref1", res))
    assert node.weft_files() == []
    # a real drift is still one: the host end off the bridge
    node.ns.run("ip", "link", "set", res["interfaces"][1]["name"], "nomaster")
    e = err(node.check(pod, "ref1", res), 102)
    assert e["msg"] == f"host veth {res['interfaces'][1]['name']} is not attached to cni0"
    assert node.weft_files() == []
    ok(node.delete(pod, "ref1"))


def test_del_never_deletes_what_a_forged_record_names(node: Node) -> None:
    """A record is data from disk: one naming the bridge as "hostVeth" can't take it down."""
    pod = node.pod()
    ok(node.add(pod, "c1"))
    [rec_path] = list((node.store_dir() / ".weft").glob("*.json"))
    rec = json.loads(rec_path.read_text())
    rec["hostVeth"] = "cni0"
    rec_path.write_text(json.dumps(rec))
    ok(node.delete(pod, "c1"))
    assert "cni0" in node.ns.links() and node.veths() == [] and node.reservations() == {}


def test_attachment_record_on_disk_names_the_kubernetes_pod(node: Node) -> None:
    """The record under .weft/ (read here as plain JSON) carries what DEL and GC act on and
    the pod the runtime named in CNI_ARGS, sent the way containerd sends it."""
    pod, bare = node.pod(), node.pod()
    args = (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-7b98449c4-x2x9z;"
        "K8S_POD_INFRA_CONTAINER_ID=k8s1;K8S_POD_UID=0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
    )
    res = ok(node.add(pod, "k8s1", env={"CNI_ARGS": args}))
    ok(node.add(bare, "bare1"))
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    recs = {
        r["containerID"]: r
        for r in (json.loads(p.read_text()) for p in (node.store_dir() / ".weft").glob("*.json"))
    }
    assert recs["k8s1"] == {
        "containerID": "k8s1",
        "ifname": "eth0",
        "hostVeth": res["interfaces"][1]["name"],
        "netns": pod.path,
        "bootID": boot,
        "ipMasq": False,  # flannel masquerades (FLANNEL_IPMASQ=true), so weft does not
        "bridge": "cni0",
        "ips": [res["ips"][0]["address"]],
        "podNamespace": "kube-system",
        "podName": "coredns-7b98449c4-x2x9z",
        "netnsDevice": os.stat(pod.path).st_dev,  # which namespace the path named at ADD
        "netnsInode": os.stat(pod.path).st_ino,
    }
    assert "podNamespace" not in recs["bare1"] and "podName" not in recs["bare1"]
    ok(node.delete(pod, "k8s1", env={"CNI_ARGS": args}))
    ok(node.delete(bare, "bare1"))
    assert node.weft_files() == []  # no record, no lock file
