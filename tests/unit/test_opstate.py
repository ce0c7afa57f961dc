"""The operator's decisions (cni.operator.state), without root: which rows are live, stale or
host-local, what gc releases, how full a range is, what status calls a problem."""

from __future__ import annotations

import ipaddress

from cni.operator import state as opstate
from cni.operator.state import NodeFacts, Observed, RangeUsage
from ipam.ranges import Range, RangeSet
from ipam.records import Attachment, NetnsId
from ipam.subnetfile import parse_subnet_file

BOOT = "boot-now"
NOW = 1_000_000.0


def rec(cid: str, netns: str = "/run/netns/x", boot: str = BOOT) -> Attachment:
    return Attachment(
        cid, "eth0", f"veth{cid}", netns, boot, False, "cni0", (), "default", f"pod-{cid}"
    )


def obs(
    ip: str | None,
    cid: str,
    record: Attachment | None,
    netns_exists: bool | None,
    ifname: str = "eth0",
) -> Observed:
    addr = ipaddress.ip_address(ip) if ip else None
    seen = NetnsId(4, 4026531840) if netns_exists else None  # records here carry no identity
    return Observed(addr, cid, ifname, record, seen, netns_exists, NOW - 90)


def test_live_stale_this_and_earlier_boot_and_host_local() -> None:
    table = opstate.rows(
        [
            obs("10.42.0.3", "stale-now", rec("stale-now"), False),
            obs("10.42.0.2", "live", rec("live"), True),
            obs("10.42.0.4", "stale-old", rec("stale-old", boot="boot-before"), False),
            obs("10.42.0.10", "hl", None, None),
            obs("10.42.0.5", "live-old", rec("live-old", boot="boot-before"), True),
        ],
        BOOT,
        NOW,
    )
    got = [(r.ip, r.state, r.boot) for r in table]
    assert got == [
        ("10.42.0.2", "live", "this"),
        ("10.42.0.3", "stale", "this"),
        ("10.42.0.4", "stale", "earlier"),
        ("10.42.0.5", "live", "earlier"),  # another boot, but its netns exists: live
        ("10.42.0.10", "host-local", ""),
    ]
    assert table[0].pod_namespace == "default" and table[0].pod_name == "pod-live"
    assert table[0].age_seconds == 90
    assert "earlier boot" in table[2].reason and "gone" in table[2].reason
    assert table[4].netns_exists is None and table[4].veth_present is None


def test_a_record_without_netns_is_stale_and_no_record_is_not_judged() -> None:
    (row,) = opstate.rows([obs("10.42.0.2", "c", rec("c", netns=""), None)], BOOT, NOW)
    assert row.state == "stale"
    (row,) = opstate.rows([obs("10.42.0.2", "c", None, None)], BOOT, NOW)
    assert row.state == "host-local"


def test_gc_plan_releases_stale_keeps_live_and_never_touches_host_local() -> None:
    table = opstate.rows(
        [
            obs("10.42.0.2", "live", rec("live"), True),
            obs("10.42.0.3", "gone", rec("gone"), False),
            obs("fd00::3", "gone", rec("gone"), False),  # dual stack: released once
            obs("10.42.0.4", "old", rec("old", boot="b0"), False),
            obs("10.42.0.9", "hl", None, None),
            obs(None, "orphan", rec("orphan"), False),  # record whose reservation is gone
        ],
        BOOT,
        NOW,
    )
    plan = opstate.gc_plan(table)
    assert plan.release == (("gone", "eth0"), ("old", "eth0"), ("orphan", "eth0"))
    assert [r.container_id for r in plan.unjudgeable] == ["hl"]
    assert plan.kept_live == 1


def test_a_record_whose_reservation_was_released_elsewhere_is_an_orphan_gc_removes() -> None:
    """The reference's DEL of a pod weft made: its netns may well still exist, but nothing
    holds an address for the record any more."""
    o = obs(None, "by-weft", rec("by-weft"), True)._replace(orphan=True)
    (row,) = opstate.rows([o], BOOT, NOW)
    assert row.state == "orphan" and "released" in row.reason
    assert opstate.gc_plan([row]).release == (("by-weft", "eth0"),)


def test_gc_plan_keeps_an_attachment_with_any_live_row() -> None:
    live = rec("c")
    table = opstate.rows(
        [obs("10.42.0.2", "c", live, True), obs(None, "c", live, False)], BOOT, NOW
    )
    assert opstate.gc_plan(table).release == ()


def small() -> RangeSet:
    return RangeSet((Range.canonicalize(ipaddress.ip_network("10.42.5.0/29")),))


def test_range_usage_counts_stale_as_available() -> None:
    rows = [obs(f"10.42.5.{i}", f"c{i}", rec(f"c{i}", boot="b0"), False) for i in range(2, 7)]
    (u,) = opstate.range_usage((small(),), opstate.rows(rows, BOOT, NOW))
    assert (u.capacity, u.live, u.stale, u.free, u.available) == (5, 0, 5, 0, 5)
    rows = [obs(f"10.42.5.{i}", f"c{i}", rec(f"c{i}"), True) for i in range(2, 7)]
    (u,) = opstate.range_usage((small(),), opstate.rows(rows, BOOT, NOW))
    assert (u.live, u.available) == (5, 0)


def facts(**kw: object) -> NodeFacts:
    sf = parse_subnet_file(
        "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\n"
    )
    base = dict(
        subnet_file="/run/flannel/subnet.env",
        subnet=sf,
        subnet_error="",
        bridge="cni0",
        bridge_exists=True,
        bridge_kind="bridge",
        bridge_addrs=("10.42.0.1/24",),
        bridge_mtu=1450,
        want_addrs=("10.42.0.1/24",),
        want_mtu=1450,
        is_gateway=True,
        forwarding=((4, "1"),),
        usage=(RangeUsage("10.42.0.2-10.42.0.254", 253, 3, 1, 0, 249),),
        store_dir="/var/lib/cni/networks/cbr0",
        store_problems=(),
        helper_socket="/run/weft/weft.sock",
        helper_state="not running",
    )
    base.update(kw)
    return NodeFacts(**base)  # type: ignore[arg-type]


def test_a_healthy_node_has_no_problems() -> None:
    assert opstate.problems(facts()) == []
    assert opstate.problems(facts(bridge_exists=False, bridge_addrs=(), bridge_mtu=None)) == []


def test_each_problem_says_what_to_do() -> None:
    cases = {
        "subnet file": facts(subnet=None, subnet_error="does not exist"),
        "already has an IP address different": facts(bridge_addrs=("10.42.9.1/24",)),
        "MTU is 1500": facts(bridge_mtu=1500),
        "net.ipv4.ip_forward is 0": facts(forwarding=((4, "0"),)),
        "no IP addresses available": facts(
            usage=(RangeUsage("10.42.5.2-10.42.5.6", 5, 4, 0, 1, 0),)
        ),
        "store:": facts(store_problems=("x: not an IP",)),
        "nothing answers": facts(helper_state="not answering"),
        "is a dummy link": facts(bridge_kind="dummy"),
    }
    for needle, f in cases.items():
        found = opstate.problems(f)
        assert len(found) == 1 and needle in found[0].what, (needle, found)
        assert found[0].fix
    (exhausted,) = opstate.problems(cases["no IP addresses available"])
    assert "1 host-local records" in exhausted.what and "rm /var/lib/cni" in exhausted.fix
    (moved,) = opstate.problems(cases["already has an IP address different"])
    assert "forceAddress" in moved.fix and "10.42.9.0/24" in moved.fix


def test_stale_only_range_is_healthy() -> None:
    f = facts(usage=(RangeUsage("10.42.5.2-10.42.5.6", 5, 0, 5, 0, 0),))
    assert opstate.problems(f) == []


def test_human_age() -> None:
    assert [opstate.human_age(s) for s in (None, 5, 120, 7200, 200000)] == [
        "-",
        "5s",
        "2m",
        "2h",
        "2d",
    ]
