"""The ADD plan, its CNI result and its attachment record, and CHECK's plan and diff, field by
field against values written out here by hand (the hashed names against hashlib), so that
no field can be dropped, swapped or defaulted unnoticed."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from cni.linux.netlink import KernelRoute
from cni.plugin.check import Drift, Expected, drifts, plan_check
from cni.plugin.config import parse_netconf
from cni.plugin.plan import (
    AddPlan,
    Allocation,
    attachment_record,
    build_result,
    host_veth_name,
    masq_chain,
    masq_comment,
    plan_add,
)
from cni.protocol.spec import PodRef
from cni.protocol.types import DNS, Interface, IPConfig, Result, Route
from cnispec.errors import InvalidConfig
from ipam.records import Attachment, NetnsId
from ipam.subnetfile import parse_subnet_file
from tests.unit.test_check import NETNS, PREV, VETH, conf, intact, link

A = ipaddress.ip_address
IF = ipaddress.ip_interface
N = ipaddress.ip_network
DUAL = (
    "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\n"
    "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\n"
    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
)
V4 = Allocation(IF("10.42.3.7/24"), A("10.42.3.1"))
V6 = Allocation(IF("2001:cafe:42:3::7/64"), A("2001:cafe:42:3::1"))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_names_derive_from_hashes_of_their_inputs() -> None:
    assert host_veth_name("c1", "eth0") == "veth" + sha("c1\0eth0")[:11]
    # the reference bridge plugin's chain name and comment, so either plugin's DEL removes
    # the other's rules
    sha512 = hashlib.sha512(b"cbr0c1").hexdigest()
    assert masq_chain("cbr0", "c1") == "CNI-" + sha512[:24]
    assert masq_chain("cbr0", "c1") == "CNI-68f1f1eeb62cad3d0bdd579c"
    assert masq_comment("cbr0", "c1") == 'name: "cbr0" id: "c1"'


def flannel(**delegate: object) -> object:
    obj = {"cniVersion": "1.0.0", "name": "cbr0", "type": "weft",
           "delegate": {"hairpinMode": True, "forceAddress": True, "isDefaultGateway": True,
                        **delegate}}
    return parse_netconf(obj, parse_subnet_file(DUAL))


def test_plan_add_dual_stack_field_by_field() -> None:
    plan = plan_add(flannel(), "c1", "eth0", [V4, V6])
    assert plan == AddPlan(
        bridge="cni0",
        mtu=1450,
        host_veth="veth" + sha("c1\0eth0")[:11],
        ifname="eth0",
        addresses=(V4, V6),
        bridge_addresses=(IF("10.42.3.1/24"), IF("2001:cafe:42:3::1/64")),
        routes=(
            Route(N("10.42.0.0/16"), A("10.42.3.1")),
            Route(N("2001:cafe:42::/56"), A("2001:cafe:42:3::1")),
            Route(N("0.0.0.0/0"), A("10.42.3.1")),
            Route(N("::/0"), A("2001:cafe:42:3::1")),
        ),
        hairpin=True,
        promisc=False,
        force_address=True,
        ip_masq=False,  # FLANNEL_IPMASQ=true: flannel masquerades
    )
    assert plan.versions == frozenset({4, 6})


def test_plan_add_keeps_a_routes_own_gateway_and_drops_other_families() -> None:
    obj = {"cniVersion": "1.0.0", "name": "cbr0", "type": "weft", "bridge": "br9",
           "isGateway": False, "isDefaultGateway": False, "promiscMode": True,
           "hairpinMode": False, "ipMasq": True,
           "ipam": {"ranges": [[{"subnet": "10.9.0.0/24"}]],
                    "routes": [{"dst": "192.168.0.0/16", "gw": "10.9.0.254"},
                               {"dst": "172.16.0.0/12"}, {"dst": "fd00::/8"}]}}
    alloc = Allocation(IF("10.9.0.2/24"), A("10.9.0.1"))
    plan = plan_add(parse_netconf(obj, None), "c2", "net1", [alloc])
    assert plan == AddPlan(
        bridge="br9",
        mtu=None,
        host_veth="veth" + sha("c2\0net1")[:11],
        ifname="net1",
        addresses=(alloc,),
        bridge_addresses=(),
        routes=(
            Route(N("192.168.0.0/16"), A("10.9.0.254")),
            Route(N("172.16.0.0/12"), A("10.9.0.1")),
        ),
        hairpin=False,
        promisc=True,
        force_address=False,
        ip_masq=True,
    )
    assert plan.versions == frozenset({4})


def test_build_result_lists_bridge_veth_and_pod_interface() -> None:
    plan = plan_add(flannel(), "c1", "eth0", [V4, V6])
    dns = DNS(("10.43.0.10",), "cluster.local", ("svc",), ("ndots:5",))
    res = build_result(plan, "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03",
                       NETNS, dns)
    assert res == Result(
        interfaces=(
            Interface("cni0", "02:00:00:00:00:01", "", 1450),
            Interface(plan.host_veth, "02:00:00:00:00:02", "", 1450),
            Interface("eth0", "02:00:00:00:00:03", NETNS, 1450),
        ),
        ips=(IPConfig(V4.address, V4.gateway, 2), IPConfig(V6.address, V6.gateway, 2)),
        routes=plan.routes,
        dns=dns,
    )
    no_mtu = build_result(plan._replace(mtu=None), "a", "b", "c", NETNS, DNS())
    assert [i.mtu for i in no_mtu.interfaces] == [0, 0, 0]


def test_attachment_record_field_by_field() -> None:
    plan = plan_add(flannel(ipMasq=True), "c1", "eth0", [V4, V6])
    pod = PodRef("kube-system", "dns-1")
    rec = attachment_record(plan, "c1", NETNS, "boot-1", pod, NetnsId(4, 4026532001))
    assert rec == Attachment(
        container_id="c1",
        ifname="eth0",
        host_veth="veth" + sha("c1\0eth0")[:11],
        netns=NETNS,
        boot_id="boot-1",
        ip_masq=True,
        bridge="cni0",
        ips=(V4.address, V6.address),
        pod_namespace="kube-system",
        pod_name="dns-1",
        netns_id=NetnsId(4, 4026532001),
    )
    assert attachment_record(plan, "c1", NETNS, "boot-1", pod).netns_id is None


def test_plan_check_field_by_field_and_its_error() -> None:
    c = conf()
    assert plan_check(c, "c1", "eth0", NETNS) == Expected(
        container_id="c1", ifname="eth0", netns=NETNS, bridge="cni0", hairpin=True,
        mtu=1450, ip_masq=True, prev=c.prev_result,
    )
    other = conf(bridge="br1", mtu=1400, hairpinMode=False, ipMasq=False)
    e = plan_check(other, "c1", "eth0", NETNS)
    assert (e.bridge, e.mtu, e.hairpin, e.ip_masq) == ("br1", 1400, False, False)
    with pytest.raises(InvalidConfig) as ei:
        plan_check(conf(prevResult=None), "c1", "eth0", NETNS)
    assert (ei.value.msg, ei.value.details) == (
        "invalid network configuration: prevResult", "CHECK requires prevResult")


def exp() -> Expected:
    return plan_check(conf(), "c1", "eth0", NETNS)


def test_mac_compare_ignores_case_and_a_change_names_both() -> None:
    upper = dict(PREV, interfaces=[dict(i, mac=i["mac"].upper()) for i in PREV["interfaces"]])
    assert drifts(plan_check(conf(prevResult=upper), "c1", "eth0", NETNS), intact()) == []
    obs = intact()._replace(pod_link=link(2, "eth0", mac="02:00:00:00:00:09"),
                            reserved=frozenset({A("10.42.0.5")}), masq=frozenset({4}))
    assert drifts(exp(), obs) == [Drift("interface eth0 MAC changed",
                                        "want 02:00:00:00:00:03, have 02:00:00:00:00:09")]


def ok_obs() -> object:
    return intact()._replace(reserved=frozenset({A("10.42.0.5")}), masq=frozenset({4}))


def test_every_drift_is_reported_not_only_the_first() -> None:
    obs = intact()._replace(reserved=frozenset(), masq=frozenset(),
                            pod_link=link(2, "eth0", up=False, mtu=1400))
    assert [d.what for d in drifts(exp(), obs)] == [
        "address 10.42.0.5 is not reserved for c1/eth0",
        "interface eth0 MTU is 1400, want 1450",
        "interface eth0 is down",
        "masquerade rule for c1 (IPv4) not found",
    ]


def test_the_host_veth_is_the_pod_interfaces_peer_and_listed_in_prev_result() -> None:
    assert drifts(exp(), ok_obs()._replace(host_veth=None)) == [
        Drift("host veth of eth0 not found", "no veth is the peer of eth0")]
    # prevResult lists another host interface, not the veth the pod interface pairs with
    prev = dict(PREV, interfaces=[dict(i, name="veth-other") if i["name"] == VETH else i
                                  for i in PREV["interfaces"]])
    e = plan_check(conf(prevResult=prev), "c1", "eth0", NETNS)
    assert drifts(e, ok_obs()) == [Drift(f"prevResult does not list the host veth {VETH}")]


def test_prev_result_without_the_pod_interface() -> None:
    prev = dict(PREV, interfaces=[i for i in PREV["interfaces"] if i["name"] != "eth0"]
                + [{"name": "eth0", "mac": "02:00:00:00:00:03"}])  # no sandbox
    e = plan_check(conf(prevResult=prev), "c1", "eth0", NETNS)
    assert drifts(e, ok_obs()) == [Drift("prevResult has no interface eth0 with a sandbox")]


def test_routes_match_on_destination_device_and_gateway() -> None:
    base = ok_obs()
    routes = base.pod_routes
    assert drifts(exp(), base) == []
    # the same destination on another device, or only other destinations: missing
    moved = tuple(r._replace(oif=9) if str(r.dst) == "10.42.0.0/16" else r for r in routes)
    assert [d.what for d in drifts(exp(), base._replace(pod_routes=moved))] == [
        f"route 10.42.0.0/16 via 10.42.0.1 not found in {NETNS}"]
    other = (KernelRoute(N("10.99.0.0/16"), A("10.42.0.1"), 2, 254),)
    assert [d.what for d in drifts(exp(), base._replace(pod_routes=other))] == [
        f"route 0.0.0.0/0 via 10.42.0.1 not found in {NETNS}",
        f"route 10.42.0.0/16 via 10.42.0.1 not found in {NETNS}"]
    # a route without a gateway in prevResult names no "via"
    prev = dict(PREV, routes=[{"dst": "10.77.0.0/16"}])
    e = plan_check(conf(prevResult=prev), "c1", "eth0", NETNS)
    assert [d.what for d in drifts(e, base)] == [f"route 10.77.0.0/16 not found in {NETNS}"]
