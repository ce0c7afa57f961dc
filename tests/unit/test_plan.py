"""The pure ADD plan and the netlink errno mapping, no root."""

from __future__ import annotations

import errno
import ipaddress

from cni.linux.masq import rules, rules_found
from cni.linux.netlink import Exists, NotFound, map_errno
from cni.plugin.config import parse_netconf
from cni.plugin.plan import (
    Allocation,
    build_result,
    host_veth_name,
    masq_chain,
    masq_comment,
    plan_add,
)
from cni.protocol.types import DNS
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


def test_masquerade_names_are_the_reference_bridge_plugins() -> None:
    """As /usr/lib/cni/bridge (ipMasq) named them for network cbr0, container abc
    (read back with iptables-save), so either plugin's DEL finds the other's rules."""
    assert masq_chain("cbr0", "abc") == "CNI-64e75f641d11615844d681b7"
    assert masq_comment("cbr0", "abc") == 'name: "cbr0" id: "abc"'
    addr = ipaddress.ip_interface("10.42.0.2/24")
    chain, lines = rules("cbr0", "abc", addr)
    assert chain == "CNI-64e75f641d11615844d681b7"
    q = '"name: \\"cbr0\\" id: \\"abc\\""'
    assert lines == [
        f"-A {chain} -d 10.42.0.0/24 -m comment --comment {q} -j ACCEPT",
        f"-A {chain} ! -d 224.0.0.0/4 -m comment --comment {q} -j MASQUERADE",
        f"-A POSTROUTING -s 10.42.0.2/32 -m comment --comment {q} -j {chain}",
    ]
    _, v6 = rules("cbr0", "abc", ipaddress.ip_interface("fd42::2/64"))
    assert v6[1].startswith(f"-A {chain} ! -d ff00::/8 ") and "-s fd42::2/128 " in v6[2]
    assert rules_found("\n".join(["*nat", *lines, "COMMIT"]), lines)
    assert not rules_found("\n".join(["*nat", *lines[:2], "COMMIT"]), lines)


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
