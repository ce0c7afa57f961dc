"""The cluster's data path: pods set up by the frozen weft on three sandbox nodes, with
flannel's VXLAN and host-gw backends, kube-proxy's service rules and a node reboot.

Oracles are independent of weft: ``ip -j`` for kernel state, the store's files on disk, and
what a peer process on the far end observes (``agent.py``: the source address of a
connection, the bytes received).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from typing import Any

import pytest

from tests.cluster.agent import pattern
from tests.cluster.cluster import (
    CLUSTER_CIDR,
    OUTSIDE_IP,
    SERVICE_IP,
    SERVICE_PORT,
    UNDERLAY_MTU,
    VXLAN_DEV,
    VXLAN_ID,
    VXLAN_PORT,
    Cluster,
    ClusterNode,
    Pod,
    flannel_mtu,
)

pytestmark = pytest.mark.root

MIB = 1 << 20
ICMP_IP_HEADERS = 28  # IPv4 20 + ICMP 8
NO_ANSWER = 3.0  # seconds a control waits for the answer that must not come


def _one_pod_per_node_pairs(c: Cluster) -> list[tuple[Pod, Pod]]:
    firsts = [n.pods[0] for n in c.nodes]
    return list(itertools.permutations(firsts, 2))


def _host_veth(node: ClusterNode, pod: Pod) -> dict[str, Any]:
    """The node end of the pod's veth: the port of cni0 whose peer is the pod's eth0."""
    eth0 = pod.ns.ip("-d", "link", "show", "dev", "eth0")[0]
    ports: list[dict[str, Any]] = [
        link
        for link in node.ns.ip("-d", "link", "show", "master", "cni0")
        if link["ifindex"] == eth0.get("link_index")
    ]
    assert len(ports) == 1, f"no cni0 port for {pod.name}: {ports}"
    return ports[0]


def test_weft_sets_up_pods_for_the_backend_mtu(cluster: Cluster) -> None:
    """weft gives cni0 and every pod the subnet file's MTU (1450 under VXLAN, which is what
    flannel.1 carries on a 1500 underlay; 1500 under host-gw), the gateway and the routes."""
    mtu = flannel_mtu(cluster.backend)
    for node in cluster.nodes:
        cni0 = node.ns.ip("-d", "addr", "show", "dev", "cni0")[0]
        assert cni0["mtu"] == mtu
        assert node.ns.addrs("cni0") == [f"{node.gateway}/24"]
        if cluster.backend == "vxlan":
            vtep = node.ns.ip("-d", "link", "show", "dev", VXLAN_DEV)[0]
            info = vtep["linkinfo"]["info_data"]
            assert (info["id"], info["port"], info["local"], info["learning"]) == (
                VXLAN_ID,
                VXLAN_PORT,
                node.address,
                False,
            )
            assert vtep["mtu"] == UNDERLAY_MTU - 50 == mtu
        for pod in node.pods:
            eth0 = pod.ns.ip("-d", "addr", "show", "dev", "eth0")[0]
            assert eth0["mtu"] == mtu, pod.name
            assert pod.ns.addrs("eth0") == [f"{pod.ip}/24"]
            routes = {(r["dst"], r.get("gateway")) for r in pod.ns.routes()}
            assert ("default", node.gateway) in routes, routes
            assert (CLUSTER_CIDR, node.gateway) in routes, routes
            assert _host_veth(node, pod)["mtu"] == mtu


def test_pod_reaches_every_pod_unmasqueraded(cluster: Cluster) -> None:
    """ICMP and TCP from every pod to every other pod, on its node and across nodes; the
    receiver sees the sender's pod address, never a node address."""
    failures = []
    for a, b in itertools.permutations(cluster.pods, 2):
        if not cluster.ping(a.ns, b.ip):
            failures.append(f"ping {a.name}->{b.name}")
        seen = cluster.whoami(a.ns, b.ip)
        if seen != a.ip:
            failures.append(f"tcp {a.name}->{b.name}: receiver saw {seen}, expected {a.ip}")
    assert not failures, failures


def test_df_probe_across_nodes_fits_the_mtu_exactly(cluster: Cluster) -> None:
    """The largest unfragmented ping between pods on different nodes carries MTU − 28 bytes
    (1422 with VXLAN: 1450 inside, 1500 on the underlay); one byte more does not pass."""
    fits = flannel_mtu(cluster.backend) - ICMP_IP_HEADERS
    if cluster.backend == "vxlan":
        assert fits == 1422
    for a, b in _one_pod_per_node_pairs(cluster):
        assert cluster.ping(a.ns, b.ip, size=fits), f"{a.name}->{b.name} DF {fits}"
        assert not cluster.ping(a.ns, b.ip, size=fits + 1, tries=1), (
            f"{a.name}->{b.name} DF {fits + 1} passed"
        )


def test_one_mib_tcp_transfer_between_nodes(cluster: Cluster) -> None:
    want = (MIB, hashlib.sha256(pattern(MIB)).hexdigest())
    for a, b in _one_pod_per_node_pairs(cluster):
        assert cluster.fetch(a.ns, b.ip, MIB) == want, f"{b.name} -> {a.name}"


def test_pod_reaches_outside_masqueraded_to_its_node(cluster: Cluster) -> None:
    """The outside host sees the node's underlay address (flanneld's masquerade)."""
    assert cluster.outside is not None
    outside_routes = {r["dst"] for r in cluster.outside.routes()}
    assert not any(d.startswith("10.42.") for d in outside_routes), outside_routes
    for pod in cluster.pods:
        assert cluster.ping(pod.ns, OUTSIDE_IP), pod.name
        assert cluster.whoami(pod.ns, OUTSIDE_IP) == cluster.nodes[pod.node].address, pod.name


def test_outside_unreachable_without_masquerade(cluster: Cluster) -> None:
    """Control for the test above: with flanneld's masquerade bypassed for one pod, the
    outside host's replies have no way back — the observed address is the rule's doing."""
    pod = cluster.nodes[1].pods[0]
    node = cluster.nodes[1].ns
    bypass = ["FLANNEL-POSTRTG", "-s", f"{pod.ip}/32", "-j", "RETURN"]
    node.run("iptables", "-t", "nat", "-I", *bypass)
    try:
        assert cluster.whoami(pod.ns, OUTSIDE_IP, timeout=NO_ANSWER) is None
    finally:
        node.run("iptables", "-t", "nat", "-D", *bypass)
    assert cluster.whoami(pod.ns, OUTSIDE_IP) == cluster.nodes[1].address


def test_service_reached_by_its_backend_and_every_pod(cluster: Cluster) -> None:
    """kube-proxy's DNAT for 10.43.0.10:80: the backend pod reaches itself (hairpin on its
    cni0 port, masqueraded to the gateway by kube-proxy's mark), every other pod on its
    node and on the other nodes reaches it with its own address."""
    backend = cluster.service_backend
    node = cluster.nodes[backend.node]
    port = _host_veth(node, backend)
    assert port["linkinfo"]["info_slave_data"]["hairpin"] is True
    for pod in cluster.pods:
        seen = cluster.whoami(pod.ns, SERVICE_IP, SERVICE_PORT)
        want = node.gateway if pod is backend else pod.ip
        assert seen == want, f"{pod.name} via the service: backend saw {seen}, want {want}"


def test_service_hairpin_needs_hairpin_mode(cluster: Cluster) -> None:
    """Control for the test above: with hairpin off on the backend's port, the backend no
    longer reaches itself through the service (while the others still do)."""
    backend = cluster.service_backend
    node = cluster.nodes[backend.node]
    port = _host_veth(node, backend)["ifname"]
    node.ns.run("ip", "link", "set", "dev", port, "type", "bridge_slave", "hairpin", "off")
    try:
        assert cluster.whoami(backend.ns, SERVICE_IP, SERVICE_PORT, timeout=NO_ANSWER) is None
        other = cluster.nodes[1].pods[0]
        assert cluster.whoami(other.ns, SERVICE_IP, SERVICE_PORT) == other.ip
    finally:
        node.ns.run("ip", "link", "set", "dev", port, "type", "bridge_slave", "hairpin", "on")
    assert cluster.whoami(backend.ns, SERVICE_IP, SERVICE_PORT) == node.gateway


# ---- a node reboots ------------------------------------------------------------------------
def _assert_rebooted_node_serves(c: Cluster, node: ClusterNode) -> None:
    for pod in node.pods:
        assert pod.ip in node.reservations(), (pod.ip, node.reservations())
        assert pod.ip.startswith(f"10.42.{node.index}.")
        for other in c.pods:
            if other.node == node.index:
                continue
            assert c.ping(other.ns, pod.ip), f"{other.name}->{pod.name}"
            assert c.whoami(other.ns, pod.ip) == other.ip, f"{other.name}->{pod.name}"
            assert c.whoami(pod.ns, other.ip) == pod.ip, f"{pod.name}->{other.name}"
        assert c.whoami(pod.ns, SERVICE_IP, SERVICE_PORT) == pod.ip
        assert c.whoami(pod.ns, OUTSIDE_IP) == node.address


@pytest.mark.parametrize("reclaim", ["gc", "del"])
def test_reboot_new_sandboxes_and_the_old_are_reclaimed(
    fresh_cluster: Cluster, reclaim: str
) -> None:
    """A node reboots: netns, cni0, flannel.1 and pods are gone, weft's store on disk is
    not. The runtime creates new sandboxes (new container ids) and ADDs them; the new pods
    are reached from every other node. Then the runtime gets rid of the old sandboxes —
    CNI GC listing the attachments it knows, or a DEL of each old sandbox whose netns is
    gone — and the old reservations and records are gone from the store: what is left is
    exactly the live pods'."""
    c = fresh_cluster
    node = c.nodes[1]
    before = c.reboot(node, same_ids=False)
    assert {p.cid for p in before}.isdisjoint(p.cid for p in node.pods)
    _assert_rebooted_node_serves(c, node)

    if reclaim == "gc":
        res = c.gc(node)
        assert res.returncode == 0, res.stdout + res.stderr
    else:
        for old in before:
            assert not os.path.exists(old.ns.path)
            res = c.delete_pod(node, old)
            assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(node.reservations().values()) == sorted(p.cid for p in node.pods)
    assert len(node.records()) == len(node.pods) == len(before)
    assert len(node.ns.ip("link", "show", "master", "cni0")) == len(node.pods)
    _assert_rebooted_node_serves(c, node)


def test_reboot_same_container_ids_are_re_added(fresh_cluster: Cluster) -> None:
    """The runtime re-ADDs the containers it had, under their old ids, in new netns (on
    one kernel the boot id does not change, so only the gone netns tells the attachment is
    stale): the ADD reclaims the stale attachment, each id holds exactly one address."""
    c = fresh_cluster
    node = c.nodes[1]
    before = c.reboot(node, same_ids=True)
    assert [p.cid for p in before] == [p.cid for p in node.pods]
    held = node.reservations()
    assert sorted(held.values()) == sorted(p.cid for p in node.pods), held
    assert len(node.records()) == len(node.pods)
    _assert_rebooted_node_serves(c, node)
