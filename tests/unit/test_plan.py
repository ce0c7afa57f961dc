"""The pure ADD plan and the netlink errno mapping, no root."""

from __future__ import annotations

import errno
import ipaddress

from cni.config import parse_netconf
from cni.netlink import Exists, NotFound, map_errno
from cni.plan import Allocation, build_result, host_veth_name, masq_chain, plan_add
from cni.types import DNS
from ipam.subnetfile import parse_subnet_file

DUAL = (
    "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\n"
    "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\n"
    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
)
CONF = {
    "cniVersion": "1.0.0",
    "name": "cbr0",
    "delegate": {"hairpinMode": True, "forceAddress": True, "isDefaultGateway": True},
}


def allocs() -> list[Allocation]:
    return [
        Allocation(ipaddress.ip_interface("10.42.3.7/24"), ipaddress.ip_address("10.42.3.1")),
        Allocation(
            ipaddress.ip_interface("2001:cafe:42:3::7/64"),
            ipaddress.ip_address("2001:cafe:42:3::1"),
        ),
    ]


def test_host_veth_name_is_deterministic_and_fits() -> None:
    a = host_veth_name("abc", "eth0")
    assert a == host_veth_name("abc", "eth0") and a.startswith("veth") and len(a) == 15
    assert a != host_veth_name("abc", "eth1") and a != host_veth_name("abd", "eth0")
    assert len(masq_chain("cbr0", "x" * 255)) <= 28


def test_plan_routes_and_bridge_addresses_dual_stack() -> None:
    conf = parse_netconf(dict(CONF), parse_subnet_file(DUAL))
    plan = plan_add(conf, "c1", "eth0", allocs())
    routes = {(str(r.dst), str(r.gw)) for r in plan.routes}
    assert routes == {
        ("10.42.0.0/16", "10.42.3.1"),
        ("0.0.0.0/0", "10.42.3.1"),
        ("2001:cafe:42::/56", "2001:cafe:42:3::1"),
        ("::/0", "2001:cafe:42:3::1"),
    }
    assert [str(a) for a in plan.bridge_addresses] == ["10.42.3.1/24", "2001:cafe:42:3::1/64"]
    assert plan.mtu == 1450 and plan.hairpin and plan.force_address
    assert plan.ip_masq  # FLANNEL_IPMASQ=false: flannel does not masquerade, so the bridge does


def test_explicit_default_route_is_replaced_by_is_default_gateway() -> None:
    obj = dict(CONF, ipam={"routes": [{"dst": "0.0.0.0/0", "gw": "10.42.3.254"}]})
    conf = parse_netconf(obj, parse_subnet_file(DUAL))
    plan = plan_add(conf, "c1", "eth0", allocs()[:1])
    defaults = [r for r in plan.routes if r.dst.prefixlen == 0]
    assert [(str(r.dst), str(r.gw)) for r in defaults] == [("0.0.0.0/0", "10.42.3.1")]


def test_no_gateway_no_bridge_address() -> None:
    obj = {"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.9.0.0/24"}}
    plan = plan_add(parse_netconf(obj, None), "c1", "eth0", allocs()[:1])
    assert plan.bridge_addresses == () and plan.routes == ()


def test_result_points_ips_at_the_pod_interface() -> None:
    conf = parse_netconf(dict(CONF), parse_subnet_file(DUAL))
    plan = plan_add(conf, "c1", "eth0", allocs())
    res = build_result(
        plan, "aa:aa:aa:aa:aa:aa", "bb:bb:bb:bb:bb:bb", "cc:cc:cc:cc:cc:cc", "/run/netns/p", DNS()
    )
    d = res.to_dict("1.0.0")
    assert [i["name"] for i in d["interfaces"]] == ["cni0", plan.host_veth, "eth0"]
    assert d["interfaces"][2]["sandbox"] == "/run/netns/p"
    assert {ip["interface"] for ip in d["ips"]} == {2}


def test_errnos_map_to_our_exceptions() -> None:
    assert isinstance(map_errno(errno.EEXIST, "x"), Exists)
    for e in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL):
        assert isinstance(map_errno(e, "x"), NotFound)
    other = map_errno(errno.EPERM, "create veth")
    assert type(other).__name__ == "NetlinkFailure" and other.code == 101
    assert "EPERM" in other.details
