"""CHECK's pure diff: expected (prevResult, config) against an observation. No root."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cni.linux.netlink import KernelRoute, Link
from cni.plugin.check import Drift, Observed, drifts, plan_check
from cni.plugin.config import parse_netconf
from cni.plugin.plan import host_veth_name
from cnispec.errors import InvalidConfig

A = ipaddress.ip_address
IF = ipaddress.ip_interface
N = ipaddress.ip_network
VETH = host_veth_name("c1", "eth0")
NETNS = "/run/netns/p1"
PREV = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "cni0", "mac": "02:00:00:00:00:01"},
        {"name": VETH, "mac": "02:00:00:00:00:02"},
        {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": NETNS},
    ],
    "ips": [{"address": "10.42.0.5/24", "gateway": "10.42.0.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.42.0.1"}, {"dst": "10.42.0.0/16", "gw": "10.42.0.1"}],
}


def conf(**kw: Any) -> Any:
    obj = {
        "cniVersion": "1.1.0",
        "name": "cbr0",
        "type": "weft",
        "mtu": 1450,
        "hairpinMode": True,
        "ipMasq": True,
        "ipam": {"ranges": [[{"subnet": "10.42.0.0/24"}]]},
        "prevResult": PREV,
    }
    obj.update(kw)
    return parse_netconf(obj, None)


def link(ifindex: int, name: str, **kw: Any) -> Link:
    base = Link(ifindex, name, "veth", 1450, "02:00:00:00:00:03", None, True, False, None)
    return base._replace(**kw)


def intact() -> Observed:
    return Observed(
        bridge=link(1, "cni0", kind="bridge"),
        host_veth=link(5, VETH, master=1, hairpin=True, peer=2),
        pod_link=link(2, "eth0", peer=5),
        pod_addrs=frozenset({IF("10.42.0.5/24")}),
        pod_routes=(
            KernelRoute(N("0.0.0.0/0"), A("10.42.0.1"), 2, 254),
            KernelRoute(N("10.42.0.0/16"), A("10.42.0.1"), 2, 254),
            KernelRoute(N("10.42.0.0/24"), None, 2, 254),
        ),
        reserved=frozenset({A("10.42.0.5")}),
        masq=frozenset({4}),
    )


EXP = plan_check(conf(), "c1", "eth0", NETNS)


def test_intact_attachment_has_no_drift() -> None:
    assert EXP.route_versions == [4]
    assert drifts(EXP, intact()) == []


def test_host_veth_is_the_pod_ends_peer_whatever_its_name() -> None:
    """The reference names its host veths at random; the pod end's peer is the host end."""
    prev = dict(
        PREV, interfaces=[PREV["interfaces"][0], {"name": "vethe4ce0a1b"}, PREV["interfaces"][2]]
    )
    exp = plan_check(conf(prevResult=prev), "c1", "eth0", NETNS)
    seen = intact()._replace(host_veth=link(5, "vethe4ce0a1b", master=1, hairpin=True, peer=2))
    assert drifts(exp, seen) == []
    # a veth of that name that is not eth0's peer is not the host end
    assert drifts(exp, seen._replace(host_veth=seen.host_veth._replace(peer=9)))[0].what == (
        "host veth of eth0 not found"
    )


def test_prev_result_is_required() -> None:
    with pytest.raises(InvalidConfig, match="prevResult"):
        plan_check(conf(prevResult=None), "c1", "eth0", NETNS)


@pytest.mark.parametrize(
    "change, want",
    [
        ({"reserved": frozenset()}, "address 10.42.0.5 is not reserved for c1/eth0"),
        ({"bridge": None}, "bridge cni0 not found"),
        ({"pod_link": None}, f"interface eth0 not found in {NETNS}"),
        ({"pod_link": link(2, "eth0", mac="02:00:00:00:00:99")}, "interface eth0 MAC changed"),
        ({"pod_link": link(2, "eth0", mtu=1500)}, "interface eth0 MTU is 1500, want 1450"),
        ({"pod_link": link(2, "eth0", up=False)}, "interface eth0 is down"),
        ({"host_veth": None}, "host veth of eth0 not found"),
        ({"host_veth": link(5, VETH, kind="bridge", peer=2)}, "host veth of eth0 not found"),
        ({"host_veth": link(5, VETH, master=7, hairpin=True, peer=2)}, "is not attached to cni0"),
        ({"host_veth": link(5, VETH, master=1, hairpin=False, peer=2)}, "hairpin mode off"),
        ({"pod_addrs": frozenset()}, "address 10.42.0.5/24 not found on eth0"),
        ({"pod_routes": ()}, "route 0.0.0.0/0 via 10.42.0.1 not found"),
        ({"masq": frozenset()}, "masquerade rule for c1 (IPv4) not found"),
    ],
)
def test_each_drift_is_named(change: dict[str, Any], want: str) -> None:
    found = drifts(EXP, intact()._replace(**change))
    assert found and want in found[0].what, found


def test_route_on_another_interface_or_via_another_gateway_is_a_drift() -> None:
    routes = (
        KernelRoute(N("0.0.0.0/0"), A("10.42.0.1"), 9, 254),
        KernelRoute(N("10.42.0.0/16"), A("10.42.0.254"), 2, 254),
    )
    found = drifts(EXP, intact()._replace(pod_routes=routes))
    assert [d.what for d in found] == [
        f"route 0.0.0.0/0 via 10.42.0.1 not found in {NETNS}",
        f"route 10.42.0.0/16 via 10.42.0.1 not found in {NETNS}",
    ]


def test_every_drift_is_listed_root_cause_first() -> None:
    found = drifts(EXP, Observed())
    assert found[0] == Drift("address 10.42.0.5 is not reserved for c1/eth0")
    # no pod interface: its host end (found through it) is not looked for separately
    assert [d.what for d in found] == [
        "address 10.42.0.5 is not reserved for c1/eth0",
        "bridge cni0 not found",
        f"interface eth0 not found in {NETNS}",
        "masquerade rule for c1 (IPv4) not found",
    ]


def test_sandbox_mismatch_and_missing_pieces_of_prev_result() -> None:
    exp = plan_check(conf(), "c1", "eth0", "/run/netns/other")
    assert drifts(exp, intact())[0] == Drift(
        "interface eth0 sandbox mismatch", f"prevResult {NETNS}, CNI_NETNS /run/netns/other"
    )
    prev = dict(PREV, interfaces=PREV["interfaces"][2:])
    found = drifts(plan_check(conf(prevResult=prev), "c1", "eth0", NETNS), intact())
    assert [d.what for d in found] == [f"prevResult does not list the host veth {VETH}"]
    # without ipMasq, no rule is expected
    assert (
        drifts(
            plan_check(conf(ipMasq=False), "c1", "eth0", NETNS), intact()._replace(masq=frozenset())
        )
        == []
    )
