"""What the operator sees: ``weft ls`` rows field by field, ``weft status``'s problem and fix
lines for a table of node states (pinned in tests/unit/golden/opstate.json, reviewed by hand
when they change; ``WEFT_UPDATE_GOLDEN=1`` regenerates it), range usage and ages."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from cni.operator import state as opstate
from cni.operator.state import NodeFacts, Observed, RangeUsage, Row
from ipam.ranges import Range, RangeSet
from ipam.records import NetnsId
from ipam.subnetfile import parse_subnet_file
from tests.unit.test_opstate import BOOT, NOW, rec

GOLDEN = Path(__file__).parent / "golden" / "opstate.json"
A = ipaddress.ip_address
SEEN = NetnsId(4, 4026531840)  # the namespace a record's path names; rec() records none


def test_rows_field_by_field() -> None:
    live = Observed(A("10.42.0.2"), "c1", "eth0", rec("c1"), SEEN, True, NOW - 90)
    old = Observed(A("10.42.0.3"), "c2", "eth0", rec("c2", boot="before"), None, False, NOW)
    hl = Observed(A("10.42.0.4"), "hl", "", None, None, None, NOW + 5)  # clock went back
    gone = Observed(None, "c3", "eth0", rec("c3", netns=""), None, None, None)
    reused = Observed(A("10.42.0.5"), "c4", "eth0", rec("c4")._replace(netns_id=NetnsId(4, 1)),
                      NetnsId(4, 2), True, NOW - 5)
    orphan = Observed(None, "c5", "eth0", rec("c5"), SEEN, False, NOW - 3600, orphan=True)
    table = opstate.rows([gone, hl, old, live, reused, orphan], BOOT, NOW)
    assert table == [
        Row("10.42.0.2", "c1", "eth0", "default", "pod-c1", "/run/netns/x", True, "exists",
            "vethc1", True, "this", 90, "live", "netns /run/netns/x exists"),
        Row("10.42.0.3", "c2", "eth0", "default", "pod-c2", "/run/netns/x", False, "gone",
            "vethc2", False, "earlier", 0, "stale",
            "netns /run/netns/x is gone (recorded in an earlier boot)"),
        Row("10.42.0.4", "hl", "", "", "", "", None, "", "", None, "", None, "host-local",
            "no weft record: written by host-local (or an old id-only record)"),
        Row("10.42.0.5", "c4", "eth0", "default", "pod-c4", "/run/netns/x", True,
            "another netns", "vethc4", True, "this", 5, "stale",
            "netns /run/netns/x names another namespace than the pod's"),
        Row("-", "c3", "eth0", "default", "pod-c3", "", None, "", "vethc3", None, "this", None,
            "stale", "netns  is gone"),
        Row("-", "c5", "eth0", "default", "pod-c5", "/run/netns/x", True, "exists", "vethc5",
            False, "this", 3600, "orphan",
            "its reservation was released without weft (the reference plugin's DEL?)"),
    ]
    same_ip = [Observed(A("10.42.0.9"), c, "eth0", rec(c), SEEN, True, NOW) for c in "ba"]
    v6 = Observed(A("2001:db8::1"), "z", "eth0", rec("z"), SEEN, True, NOW)
    records_only = [Observed(None, c, "eth0", rec(c), None, None, None) for c in "yx"]
    order = [r.container_id for r in opstate.rows([*records_only, v6, *same_ip], BOOT, NOW)]
    assert order == ["a", "b", "z", "x", "y"]


def test_range_usage_counts_each_state_and_skips_records_without_an_address() -> None:
    rs = RangeSet([Range("10.42.0.0/29")])  # .2-.6 (gateway .1): 5 addresses
    other = RangeSet([Range("10.43.0.0/30")])
    rows = opstate.rows([
        Observed(A("10.42.0.2"), "l", "eth0", rec("l"), SEEN, True, NOW),
        Observed(A("10.42.0.3"), "s", "eth0", rec("s"), None, False, NOW),
        Observed(A("10.42.0.4"), "h", "", None, None, None, NOW),
        Observed(None, "r", "eth0", rec("r"), SEEN, None, None),
        Observed(A("10.43.0.2"), "o", "eth0", rec("o"), SEEN, True, NOW),
    ], BOOT, NOW)
    assert opstate.range_usage((rs, other), rows) == [
        RangeUsage("10.42.0.2-10.42.0.6", 5, 1, 1, 1, 2),
        RangeUsage("10.43.0.2-10.43.0.2", 1, 1, 0, 0, 0),
    ]


def test_human_age() -> None:
    assert [opstate.human_age(s) for s in (None, 0, 59, 60, 3599, 3600, 86399, 86400, 200000)] \
        == ["-", "0s", "59s", "1m", "59m", "1h", "23h", "1d", "2d"]


def facts(**kw: object) -> NodeFacts:
    base = NodeFacts(
        subnet_file="/run/flannel/subnet.env",
        subnet=parse_subnet_file(
            "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\n"
            "FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
        ),
        subnet_error="",
        bridge="cni0",
        bridge_exists=True,
        bridge_kind="bridge",
        bridge_addrs=("10.42.3.1/24", "fe80::1/64"),
        bridge_mtu=1450,
        want_addrs=("10.42.3.1/24",),
        want_mtu=1450,
        is_gateway=True,
        forwarding=((4, "1"),),
        usage=(RangeUsage("10.42.3.2-10.42.3.254", 253, 3, 0, 0, 250),),
        store_dir="/var/lib/cni/networks/cbr0",
        store_problems=(),
        helper_socket="/run/weft/weft.sock",
        helper_state="running",
    )
    return base._replace(**kw)


SCENARIOS: dict[str, NodeFacts] = {
    "healthy": facts(),
    "healthy-bridge-shape": facts(subnet_file=None, subnet=None),
    "no-subnet-file": facts(subnet=None, subnet_error="does not exist"),
    "bridge-is-dummy": facts(bridge_kind="dummy"),
    "bridge-kind-unknown": facts(bridge_kind=None),
    "no-bridge-yet": facts(bridge_exists=False, bridge_kind=None, bridge_addrs=()),
    "bridge-old-subnet": facts(bridge_addrs=("10.42.9.1/24", "fe80::1/64")),
    "bridge-two-old": facts(bridge_addrs=("10.42.9.1/24", "10.42.8.1/24")),
    "bridge-v6-old": facts(want_addrs=("10.42.3.1/24", "2001:db8:3::1/64"),
                           bridge_addrs=("10.42.3.1/24", "2001:db8:9::1/64", "fe80::1/64")),
    "bridge-v6-overlapping": facts(want_addrs=("10.42.3.1/24", "2001:db8:3::1/64"),
                                   bridge_addrs=("10.42.3.1/24", "2001:db8:3::9/64",
                                                 "2001:db8:4::1/64", "fe80::1/64")),
    "bridge-only-link-local": facts(want_addrs=("2001:db8:3::1/64",),
                                    bridge_addrs=("fe80::1/64",)),
    "bridge-mtu": facts(bridge_mtu=1500),
    "bridge-mtu-unknown": facts(bridge_mtu=None),
    "forwarding-off": facts(forwarding=((4, "0"), (6, "1"))),
    "forwarding-v6-unreadable": facts(forwarding=((4, "1"), (6, ""))),
    "forwarding-off-not-gateway": facts(is_gateway=False, forwarding=((4, "0"),)),
    "full": facts(usage=(RangeUsage("10.42.3.2-10.42.3.254", 253, 253, 0, 0, 0),)),
    "full-with-host-local": facts(usage=(RangeUsage("10.42.3.2-10.42.3.254", 253, 250, 0, 3, 0),)),
    "full-but-stale": facts(usage=(RangeUsage("10.42.3.2-10.42.3.254", 253, 250, 3, 0, 0),)),
    "store-problems": facts(store_problems=("10.42.3.7: not <id>\\r\\n<ifname>", "x: empty")),
    "helper-stuck": facts(helper_state="not answering"),
    "helper-off": facts(helper_state="not running"),
    "everything": facts(subnet=None, subnet_error="unreadable", bridge_kind="veth",
                        forwarding=((4, "0"),), helper_state="not answering",
                        usage=(RangeUsage("r", 1, 0, 0, 1, 0),), store_problems=("p",)),
}


def test_status_problems_match_the_reviewed_table() -> None:
    got = {name: [list(p) for p in opstate.problems(f)] for name, f in SCENARIOS.items()}
    if os.environ.get("WEFT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want), "scenarios changed: regenerate and review the table"
    wrong = {k: (want[k], got[k]) for k in want if got[k] != want[k]}
    assert not wrong, json.dumps(wrong, indent=1)[:6000]
    # the controls: a healthy node has no problem, a broken one several
    assert got["healthy"] == [] and got["healthy-bridge-shape"] == []
    assert len(got["everything"]) >= 4
