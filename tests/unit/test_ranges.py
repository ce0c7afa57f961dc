from __future__ import annotations

import ipaddress
import itertools
import sys

import pytest

from cnispec.errors import INVALID_CONFIG, InvalidConfig
from ipam.ranges import Range, RangeIter, RangeSet

A = ipaddress.ip_address


def strs(it: RangeIter, n: int | None = None) -> list[str]:
    return [str(ip) for ip in itertools.islice(it, n)]


# --------------------------------------------------------------------------- Range


def test_defaults_k3s_24() -> None:
    r = Range("10.42.0.0/24")
    assert r.subnet == ipaddress.IPv4Network("10.42.0.0/24")
    assert r.range_start == A("10.42.0.1")
    assert r.range_end == A("10.42.0.254")
    assert r.gateway == A("10.42.0.1")
    assert r.family == 4
    assert r.describe() == "10.42.0.2-10.42.0.254"
    assert r.capacity == 253
    assert Range.canonicalize("10.42.0.0/24") == r


def test_defaults_ipv6() -> None:
    r = Range("2001:cafe:42::/64")
    assert r.range_start == A("2001:cafe:42::1")
    assert r.range_end == A("2001:cafe:42:0:ffff:ffff:ffff:ffff")
    assert r.gateway == A("2001:cafe:42::1")
    assert r.family == 6
    assert r.describe() == "2001:cafe:42::2-2001:cafe:42:0:ffff:ffff:ffff:ffff"


def test_explicit_fields_and_describe_without_gateway_skip() -> None:
    r = Range(
        ipaddress.ip_network("10.42.0.0/24"),
        range_start="10.42.0.10",
        range_end=A("10.42.0.20"),
        gateway="10.42.0.254",
    )
    assert (r.range_start, r.range_end, r.gateway) == (
        A("10.42.0.10"),
        A("10.42.0.20"),
        A("10.42.0.254"),
    )
    assert r.describe() == "10.42.0.10-10.42.0.20"
    assert r.capacity == 11
    assert "10.42.0.10" in repr(r)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"subnet": "10.42.0.1/24"}, "host bits"),
        ({"subnet": "10.42.0.0"}, "not a CIDR"),
        ({"subnet": "banana/24"}, "banana"),
        ({"subnet": "10.42.0.0/31"}, "too small"),
        ({"subnet": "10.42.0.0/32"}, "too small"),
        ({"subnet": "2001:db8::/127"}, "too small"),
        ({"subnet": "2001:db8::/128"}, "too small"),
        ({"subnet": "10.42.0.0/24", "range_start": "10.42.1.5"}, "not in network"),
        ({"subnet": "10.42.0.0/24", "range_start": "10.42.0.0"}, "not in network"),
        ({"subnet": "10.42.0.0/24", "range_end": "10.42.0.255"}, "not in network"),
        ({"subnet": "10.42.0.0/24", "range_end": "2001:db8::1"}, "not in network"),
        ({"subnet": "10.42.0.0/24", "gateway": "10.43.0.1"}, "not in network"),
        ({"subnet": "10.42.0.0/24", "gateway": "nope"}, "not an IP"),
        ({"subnet": "fe80::/64", "gateway": "fe80::1%eth0"}, "not an IP"),
        (
            {"subnet": "10.42.0.0/24", "range_start": "10.42.0.9", "range_end": "10.42.0.8"},
            "after rangeEnd",
        ),
    ],
)
def test_validation_errors(kwargs: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidConfig) as ei:
        Range(**kwargs)
    assert ei.value.code == INVALID_CONFIG
    assert fragment in str(ei.value)


def test_smallest_allowed_subnets() -> None:
    r = Range("10.0.0.0/30")
    assert (str(r.range_start), str(r.range_end)) == ("10.0.0.1", "10.0.0.2")
    assert strs(RangeSet([r]).iterate()) == ["10.0.0.2"]
    r6 = Range("2001:db8::/126")
    assert strs(RangeSet([r6]).iterate()) == ["2001:db8::2", "2001:db8::3"]


def test_contains_and_overlaps() -> None:
    r = Range("10.42.0.0/24", range_start="10.42.0.10", range_end="10.42.0.20")
    assert r.contains(A("10.42.0.10")) and r.contains(A("10.42.0.20"))
    assert not r.contains(A("10.42.0.9")) and not r.contains(A("10.42.0.21"))
    assert not r.contains(A("::ffff:10.42.0.15"))
    other = Range("10.42.0.0/24", range_start="10.42.0.20", range_end="10.42.0.30")
    disjoint = Range("10.42.0.0/24", range_start="10.42.0.21", range_end="10.42.0.30")
    assert r.overlaps(other) and other.overlaps(r)
    assert not r.overlaps(disjoint)
    assert not r.overlaps(Range("2001:db8::/64"))


# --------------------------------------------------------------------------- RangeSet


def test_rangeset_validation() -> None:
    with pytest.raises(InvalidConfig, match="no ranges"):
        RangeSet([])
    with pytest.raises(InvalidConfig, match="mixed address families"):
        RangeSet([Range("10.42.0.0/24"), Range("2001:db8::/64")])
    with pytest.raises(InvalidConfig, match="overlaps"):
        RangeSet([Range("10.42.0.0/16"), Range("10.42.3.0/24")])


def test_rangeset_contains_and_describe() -> None:
    a = Range("10.42.0.0/24")
    b = Range("10.42.1.0/24", range_start="10.42.1.100", range_end="10.42.1.110")
    rs = RangeSet((a, b))
    assert rs.contains(A("10.42.0.7")) is a
    assert rs.contains(A("10.42.1.100")) is b
    assert rs.contains(A("10.42.1.99")) is None
    assert rs.contains(A("2001:db8::1")) is None
    assert rs.describe() == "10.42.0.2-10.42.0.254, 10.42.1.100-10.42.1.110"
    assert rs.family == 4
    assert rs.capacity == 253 + 11
    assert rs == RangeSet([a, b])


# --------------------------------------------------------------------------- RangeIter


def test_24_yields_253_addresses_in_order_without_gateway() -> None:
    got = strs(RangeSet([Range("10.42.0.0/24")]).iterate())
    assert len(got) == 253 == len(set(got))
    assert got[0] == "10.42.0.2" and got[-1] == "10.42.0.254"
    assert "10.42.0.1" not in got and "10.42.0.0" not in got and "10.42.0.255" not in got


def test_starts_after_last_reserved_and_wraps() -> None:
    rs = RangeSet([Range("10.42.0.0/29")])  # candidates .2-.6, gateway .1
    assert strs(rs.iterate(A("10.42.0.4"))) == [
        "10.42.0.5",
        "10.42.0.6",
        "10.42.0.2",
        "10.42.0.3",
        "10.42.0.4",
    ]
    # last reserved at range end -> wrap to start (gateway skipped)
    assert strs(rs.iterate(A("10.42.0.6"))) == [
        "10.42.0.2",
        "10.42.0.3",
        "10.42.0.4",
        "10.42.0.5",
        "10.42.0.6",
    ]
    # outside the set (or other family) -> from the first range start
    assert strs(rs.iterate(A("192.168.0.1")), 1) == ["10.42.0.2"]
    assert strs(rs.iterate(A("2001:db8::1")), 1) == ["10.42.0.2"]
    # the gateway itself as last reserved -> next one
    assert strs(rs.iterate(A("10.42.0.1")), 1) == ["10.42.0.2"]


def test_gateway_in_middle_is_skipped() -> None:
    rs = RangeSet([Range("10.0.0.0/29", gateway="10.0.0.3")])
    assert strs(rs.iterate()) == ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    assert Range("10.0.0.0/29", gateway="10.0.0.3").describe() == "10.0.0.1-10.0.0.6"


def test_multi_range_round_robin() -> None:
    a = Range("10.1.0.0/29", range_start="10.1.0.4", range_end="10.1.0.5")
    b = Range("10.2.0.0/29")  # .2-.6 (gw .1)
    c = Range("10.3.0.0/30")  # .2 (gw .1)
    rs = RangeSet([a, b, c])
    everything = strs(rs.iterate())
    assert everything == [
        "10.1.0.4",
        "10.1.0.5",
        "10.2.0.2",
        "10.2.0.3",
        "10.2.0.4",
        "10.2.0.5",
        "10.2.0.6",
        "10.3.0.2",
    ]
    from_b_end = strs(rs.iterate(A("10.2.0.6")))
    assert from_b_end == everything[7:] + everything[:7]
    from_c = strs(rs.iterate(A("10.3.0.2")))
    assert from_c == everything
    it = rs.iterate(A("10.1.0.5"))
    assert next(it) == A("10.2.0.2") and it.range is b
    assert len(strs(rs.iterate(A("10.2.0.3")))) == rs.capacity == 8


def test_each_candidate_exactly_once_from_every_start() -> None:
    rs = RangeSet(
        [Range("10.9.0.0/28", gateway="10.9.0.7"), Range("10.9.1.0/29", range_end="10.9.1.3")]
    )
    expected = set(strs(rs.iterate()))
    assert len(expected) == rs.capacity
    for start in ["10.9.0.1", "10.9.0.6", "10.9.0.7", "10.9.0.14", "10.9.1.3", "10.9.1.1"]:
        got = strs(rs.iterate(A(start)))
        assert len(got) == len(expected) and set(got) == expected


def test_ipv6_64_iterator_is_lazy() -> None:
    rs = RangeSet([Range("2001:cafe:42::/64")])
    it = rs.iterate(A("2001:cafe:42:0:ffff:ffff:ffff:fffe"))
    first = strs(it, 3)
    assert first == ["2001:cafe:42:0:ffff:ffff:ffff:ffff", "2001:cafe:42::2", "2001:cafe:42::3"]
    assert sys.getsizeof(it) < 200  # a handful of slots, no materialised list
    assert rs.capacity == 2**64 - 2  # minus network address and gateway
    assert not hasattr(it, "__dict__")
