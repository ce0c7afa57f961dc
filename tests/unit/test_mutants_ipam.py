"""The allocator's and the ranges' answers written out by hand: the exact CNI error (msg and
details) of every refusal, what a requested address gets, and the reprs and hashes the
records and logs show."""

from __future__ import annotations

import ipaddress

import pytest

from cnispec.errors import DuplicateAllocation, InvalidConfig
from ipam.allocator import Allocation, Allocator, refuse_duplicate
from ipam.ranges import Range, RangeSet, parse_ip
from ipam.store import Reservation
from tests.unit.test_allocator import FakeStore

A = ipaddress.ip_address
IF = ipaddress.ip_interface


def errs(fn: object, *args: object) -> tuple[str, str]:
    with pytest.raises(InvalidConfig) as ei:
        fn(*args)  # type: ignore[operator]
    return ei.value.msg, ei.value.details


def test_parse_ip_refusals_name_what_and_why() -> None:
    assert errs(parse_ip, "10.0.0.256") == ("invalid address", "'10.0.0.256' is not an IP address")
    assert errs(parse_ip, "fe80::1%eth0", "gw") == (
        "invalid gw", "'fe80::1%eth0' is not an IP address")
    assert errs(parse_ip, 7, "gw") == ("invalid gw", "7 is not an IP address")
    scoped = ipaddress.IPv6Address("fe80::1%eth0")
    assert errs(parse_ip, scoped) == ("invalid address", "fe80::1%eth0: zone index not allowed")
    assert parse_ip("10.0.0.1") == A("10.0.0.1") and parse_ip(A("::1")) == A("::1")


def test_requested_ip_answers() -> None:
    store = FakeStore()
    rs = RangeSet([Range("10.9.0.0/24", gateway="10.9.0.1")])
    alloc = Allocator(rs, store, "0")
    assert alloc.get("c1", "eth0", "10.9.0.50") == Allocation(IF("10.9.0.50/24"), A("10.9.0.1"))
    assert store.last == {"0": A("10.9.0.50")}
    # host-local's words; its range set text is each range's configured start, gateway
    # included (its RangeSet.String)
    assert errs(alloc.get, "c2", "eth0", "10.9.1.5") == (
        "10.9.1.5 not in range set 10.9.0.1-10.9.0.254", "")
    assert errs(alloc.get, "c2", "eth0", "10.9.0.1") == (
        "requested ip 10.9.0.1 is subnet's gateway", "")
    assert errs(alloc.get, "c2", "eth0", "x") == (
        "invalid requested IP", "'x' is not an IP address")
    with pytest.raises(DuplicateAllocation) as ei:
        alloc.get("c2", "eth0", "10.9.0.50")
    assert (ei.value.msg, ei.value.details) == (
        "requested IP address 10.9.0.50 is not available in range set 10.9.0.1-10.9.0.254", "")


def test_a_reclaimed_requested_address_is_reserved_in_the_allocators_range() -> None:
    store = FakeStore()
    rs = RangeSet([Range("10.9.0.0/24", gateway="10.9.0.1")])
    Allocator(rs, store, "1").get("dead", "eth0", "10.9.0.50")
    got = Allocator(rs, store, "0").get("new", "eth0", "10.9.0.50", lambda r: True)
    assert got == Allocation(IF("10.9.0.50/24"), A("10.9.0.1"))
    assert store.by_ip == {A("10.9.0.50"): ("new", "eth0")}
    assert store.last == {"0": A("10.9.0.50"), "1": A("10.9.0.50")}


def test_host_local_text_joins_each_ranges_start_and_end_with_commas() -> None:
    rs = RangeSet([Range("10.9.0.0/24"), Range("10.9.1.0/24", range_start="10.9.1.10")])
    assert rs.host_local_text() == "10.9.0.1-10.9.0.254,10.9.1.10-10.9.1.254"


def test_refuse_duplicate_says_run_del_first() -> None:
    refuse_duplicate([], "c1", "eth0")
    with pytest.raises(DuplicateAllocation) as ei:
        refuse_duplicate([A("10.9.0.5"), A("10.9.0.6")], "c1", "eth0")
    assert (ei.value.msg, ei.value.details) == (
        "10.9.0.5 has been allocated to c1/eth0, duplicate allocation is not allowed",
        "run DEL first",
    )


def test_reclaim_reports_whether_it_freed_anything() -> None:
    store = FakeStore()
    rs = RangeSet([Range("10.9.0.0/30")])  # one usable address: .2 (.1 is the gateway)
    alloc = Allocator(rs, store, "0")
    alloc.get("old", "eth0")
    seen: list[Reservation] = []
    assert alloc._reclaim(lambda r: seen.append(r) or False) is False
    assert seen == [Reservation(A("10.9.0.2"), "old", "eth0")]
    assert alloc._reclaim(lambda r: True) is True and store.by_ip == {}


def test_reprs_and_hashes() -> None:
    a = Allocation(IF("10.9.0.5/24"), A("10.9.0.1"))
    assert repr(a) == (
        "Allocation(address=IPv4Interface('10.9.0.5/24'), gateway=IPv4Address('10.9.0.1'))")
    r = Range("10.9.0.0/24", range_start="10.9.0.10", range_end="10.9.0.20", gateway="10.9.0.1")
    assert repr(r) == ("Range(subnet='10.9.0.0/24', range_start='10.9.0.10', "
                       "range_end='10.9.0.20', gateway='10.9.0.1')")
    same = Range("10.9.0.0/24", range_start="10.9.0.10", range_end="10.9.0.20", gateway="10.9.0.1")
    assert hash(r) == hash(same) and len({r, same}) == 1
    assert hash(r) != hash(Range("10.9.0.0/24", gateway="10.9.0.1"))
    assert list(RangeSet([Range("10.9.0.0/30")])) == [A("10.9.0.2")]


def test_describe_skips_a_gateway_at_the_start_unless_it_is_the_only_address() -> None:
    assert Range("10.9.0.0/24", range_start="10.9.0.1", gateway="10.9.0.1").describe() == (
        "10.9.0.2-10.9.0.254")
    one = Range("10.9.0.0/24", range_start="10.9.0.7", range_end="10.9.0.7", gateway="10.9.0.7")
    assert one.describe() == "10.9.0.7-10.9.0.7"


def test_range_and_range_set_refusals_word_for_word() -> None:
    def refused(*args: object) -> tuple[str, str]:
        with pytest.raises(InvalidConfig) as ei:
            Range(*args)  # type: ignore[arg-type]
        return ei.value.msg, ei.value.details

    assert refused("x") == ("invalid subnet", "'x' is not a CIDR network")
    assert refused("10.0.0.0/31") == (
        "invalid subnet", "network 10.0.0.0/31 too small to allocate from")
    assert refused("10.0.0.1/24") == (
        "invalid subnet", "'10.0.0.1/24': 10.0.0.1/24 has host bits set")
    assert refused("10.0.0.0/24", "10.0.0.50", "10.0.0.40") == (
        "invalid range", "rangeStart 10.0.0.50 is after rangeEnd 10.0.0.40")
    assert refused("10.0.0.0/24", "10.1.0.5") == (
        "invalid rangeStart", "10.1.0.5 not in network 10.0.0.0/24")
    assert refused("10.0.0.0/24", None, "10.1.0.5") == (
        "invalid rangeEnd", "10.1.0.5 not in network 10.0.0.0/24")
    assert refused("10.0.0.0/24", None, None, "10.1.0.1") == (
        "invalid gateway", "10.1.0.1 not in network 10.0.0.0/24")
    assert refused("10.0.0.0/24", "x") == ("invalid rangeStart", "'x' is not an IP address")

    def set_refused(ranges: list[object]) -> tuple[str, str]:
        with pytest.raises(InvalidConfig) as ei:
            RangeSet(ranges)  # type: ignore[arg-type]
        return ei.value.msg, ei.value.details

    assert set_refused([]) == ("invalid range set", "no ranges given")
    assert set_refused(["x"]) == ("invalid range set", "'x' is not a Range")
    assert set_refused([Range("10.0.0.0/24"), Range("2001:db8::/64")]) == (
        "invalid range set",
        "mixed address families: 10.0.0.2-10.0.0.254 and 2001:db8::2-2001:db8::ffff:ffff:ffff:ffff")
    assert set_refused([Range("10.0.0.0/24"), Range("10.0.0.0/25")]) == (
        "invalid range set", "range 10.0.0.2-10.0.0.126 overlaps range 10.0.0.2-10.0.0.254")


def test_canonicalize_keeps_every_field_and_range_set_repr_hash() -> None:
    r = Range.canonicalize("10.0.0.0/24", "10.0.0.10", "10.0.0.20", "10.0.0.9")
    assert (str(r.range_start), str(r.range_end), str(r.gateway)) == (
        "10.0.0.10", "10.0.0.20", "10.0.0.9")
    rs = RangeSet([Range("10.0.0.0/30")])
    assert repr(rs) == ("RangeSet([Range(subnet='10.0.0.0/30', range_start='10.0.0.1', "
                        "range_end='10.0.0.2', gateway='10.0.0.1')])")
    assert hash(rs) == hash(RangeSet([Range("10.0.0.0/30")])) and len({rs, RangeSet(
        [Range("10.0.0.0/30")])}) == 1
    assert hash(rs) != hash(RangeSet([Range("10.0.1.0/30")]))
