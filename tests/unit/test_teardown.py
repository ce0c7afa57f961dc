"""The pure decisions of DEL, GC and reclaim: teardown plans, staleness, GC's sets. No root."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cni.plugin.config import parse_netconf
from cni.plugin.plan import (
    GCPlan,
    Teardown,
    host_veth_name,
    is_stale,
    orphan_records,
    plan_gc,
    plan_teardown,
)
from ipam.records import Attachment, NetnsId
from ipam.store import Reservation

A = ipaddress.ip_address
IF = ipaddress.ip_interface


def conf(ip_masq: bool) -> Any:
    return parse_netconf(
        {
            "cniVersion": "1.1.0",
            "name": "cbr0",
            "type": "weft",
            "ipMasq": ip_masq,
            "ipam": {"ranges": [[{"subnet": "10.42.0.0/24"}]]},
        },
        None,
    )


def record(cid: str = "c1", **kw: Any) -> Attachment:
    base = Attachment(
        container_id=cid,
        ifname="eth0",
        host_veth="cni0",  # forged: a teardown never acts on it
        netns="/run/netns/p1",
        boot_id="boot-1",
        ip_masq=True,
        bridge="cni0",
        ips=(IF("10.42.0.5/24"), IF("2001:db8::5/64")),
    )
    return base._replace(**kw)


def test_recorded_attachment_goes_by_its_deterministic_veth_and_recorded_families() -> None:
    t = plan_teardown(conf(False), "c1", "eth0", "/run/netns/p1", record(), [A("10.42.0.5")], True)
    assert t == Teardown(
        "c1", "eth0", host_veth_name("c1", "eth0"), "", frozenset({4, 6}), False, True
    )


def test_record_decides_masquerade_over_the_config() -> None:
    t = plan_teardown(conf(True), "c1", "eth0", "", record(ip_masq=False), [], True)
    assert t is not None and t.masq_versions == frozenset() and t.release


def test_host_local_reservation_without_record_looks_in_the_netns() -> None:
    """No record: host-local (or a crashed ADD) made it; the pod end is found by ifname in
    the netns, and masquerading follows the config for the reserved families."""
    t = plan_teardown(conf(True), "c1", "eth0", "/run/netns/p1", None, [A("10.42.0.9")], True)
    assert t is not None
    assert (t.pod_netns, t.masq_versions, t.masq_guessed, t.release) == (
        "/run/netns/p1",
        frozenset({4}),
        False,
        True,
    )
    t = plan_teardown(conf(False), "c1", "eth0", "", None, [A("2001:db8::9")], True)
    assert t is not None and t.masq_versions == frozenset()


def test_nothing_known_in_a_used_store_is_nothing_to_do() -> None:
    assert plan_teardown(conf(True), "c1", "eth0", "/run/netns/p1", None, [], True) is None


def test_wiped_store_sweeps_by_deterministic_names() -> None:
    t = plan_teardown(conf(False), "c1", "eth0", "/run/netns/p1", None, [], False)
    assert t == Teardown(
        "c1", "eth0", host_veth_name("c1", "eth0"), "/run/netns/p1", frozenset({4, 6}), True, False
    )


def test_is_stale() -> None:
    looked: list[str] = []

    def exists(path: str) -> NetnsId | None:
        looked.append(path)
        return NetnsId(4, 4026531840) if path == "/run/netns/kept" else None

    assert not is_stale(None, exists)  # nothing to judge by
    assert looked == []
    # the netns decides, whatever boot the record is from (this one included)
    assert is_stale(record(), exists)
    assert is_stale(record(boot_id=""), exists)
    assert looked == ["/run/netns/p1", "/run/netns/p1"]
    assert not is_stale(record(netns="/run/netns/kept"), exists)
    assert not is_stale(record(netns="/run/netns/kept", boot_id="boot-0"), exists)
    assert is_stale(record(netns=""), exists)


def test_gc_sets() -> None:
    reservations = [
        Reservation(A("10.42.0.2"), "keep", "eth0"),
        Reservation(A("10.42.0.3"), "gone", "eth0"),
        Reservation(A("10.42.0.4"), "keep", "net1"),  # same container, other ifname: not valid
        Reservation(A("10.42.0.5"), "legacy-gone", ""),
        Reservation(A("10.42.0.6"), "keep", ""),  # legacy of a valid container: kept
    ]
    records = [record("keep"), record("only-recorded"), record("gone")]
    gc = plan_gc({("keep", "eth0")}, reservations, records)
    assert gc == GCPlan(
        (A("10.42.0.5"),),
        (("gone", "eth0"), ("keep", "net1"), ("only-recorded", "eth0")),
    )
    assert plan_gc({("keep", "eth0")}, [], []) == GCPlan((), ())


def test_orphan_records_are_records_whose_reservation_someone_else_released() -> None:
    """The reference's DEL of a pod weft made releases the reservation and knows nothing
    of weft's record: that record (and only such a record) is an orphan."""
    gone, moved, kept, unreadable = (
        record(cid="gone"),
        record(cid="moved", ips=(IF("10.42.0.6/24"),)),
        record(cid="kept", ips=(IF("10.42.0.7/24"),)),
        record(cid="unreadable", ips=(IF("10.42.0.8/24"),)),
    )
    reservations = [
        Reservation(A("10.42.0.6"), "other", "eth0"),  # the address went to another pod
        Reservation(A("10.42.0.7"), "kept", "eth0"),
    ]
    files = {A("10.42.0.6"), A("10.42.0.7"), A("10.42.0.8")}  # .8: there, but unparseable
    found = orphan_records([gone, moved, kept, unreadable], reservations, files.__contains__)
    assert found == [("gone", "eth0"), ("moved", "eth0")]
    # host-local's legacy id-only reservation of the same container still holds it
    legacy = [Reservation(A("10.42.0.9"), "gone", "")]
    assert orphan_records([gone], legacy, lambda _: False) == []


def test_a_failing_undo_is_logged_and_neither_stops_the_rest_nor_hides_the_error() -> None:
    from cni.plugin.handlers import Undo

    class Log:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def warning(self, msg: str) -> None:
            self.lines.append(msg)

    ran: list[str] = []

    def broken() -> None:
        ran.append("broken")
        raise OSError(2, "No such file or directory", "iptables-save")

    log = Log()
    with pytest.raises(ValueError, match="the ADD's own error"), Undo(log) as undo:  # type: ignore[arg-type]
        undo.undo(ran.append, "first")
        undo.undo(broken)
        undo.undo(ran.append, "last")
        raise ValueError("the ADD's own error")
    assert ran == ["last", "broken", "first"]  # last first, and past the failing one
    assert len(log.lines) == 1 and "broken" in log.lines[0] and "iptables-save" in log.lines[0]
    moved = Undo(log)  # type: ignore[arg-type]  # pop_all() keeps the guarded undos
    moved.undo(broken)
    later = moved.pop_all()
    later.close()
    assert ran[-1] == "broken" and len(log.lines) == 2
