from __future__ import annotations

import ipaddress

import pytest

from cnispec.errors import (
    DUPLICATE_ALLOCATION,
    RANGE_EXHAUSTED,
    DuplicateAllocation,
    InvalidConfig,
    RangeExhausted,
)
from cnispec.ip import IPAddress
from ipam.allocator import Allocation, Allocator, refuse_duplicate
from ipam.ranges import Range, RangeSet
from ipam.store import Reservation, Store

A = ipaddress.ip_address


class FakeStore:
    """In-memory Store with host-local semantics; counts calls."""

    def __init__(self) -> None:
        self.by_ip: dict[IPAddress, tuple[str, str]] = {}
        self.last: dict[str, IPAddress] = {}
        self.reserve_calls = 0
        self.reservations_calls = 0

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool:
        self.reserve_calls += 1
        if ip in self.by_ip:
            return False
        self.by_ip[ip] = (container_id, ifname)
        self.last[range_id] = ip
        return True

    def last_reserved_ip(self, range_id: str) -> IPAddress | None:
        return self.last.get(range_id)

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        return [ip for ip, who in self.by_ip.items() if who == (container_id, ifname)]

    def release(self, ip: IPAddress) -> None:
        self.by_ip.pop(ip, None)

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        gone = self.get_by_id(container_id, ifname)
        for ip in gone:
            del self.by_ip[ip]
        return gone

    def reservations(self) -> list[Reservation]:
        self.reservations_calls += 1
        return [Reservation(ip, c, i) for ip, (c, i) in self.by_ip.items()]


def make(subnet: str = "10.42.0.0/29", **kw: str) -> tuple[Allocator, FakeStore]:
    store = FakeStore()
    fake: Store = store  # FakeStore satisfies the protocol (checked by mypy)
    return Allocator(RangeSet([Range(subnet, **kw)]), fake, "0"), store


def test_first_allocation_and_result_shape() -> None:
    alloc, store = make("10.42.0.0/24")
    got = alloc.get("c1", "eth0")
    assert got == Allocation(ipaddress.ip_interface("10.42.0.2/24"), A("10.42.0.1"))
    assert store.by_ip == {A("10.42.0.2"): ("c1", "eth0")}
    assert store.last == {"0": A("10.42.0.2")}


def test_round_robin_from_last_reserved_not_lowest_free() -> None:
    alloc, store = make()
    assert str(alloc.get("c1", "eth0").address.ip) == "10.42.0.2"
    assert str(alloc.get("c2", "eth0").address.ip) == "10.42.0.3"
    alloc.release("c1", "eth0")  # .2 free again, but we continue after .3
    assert str(alloc.get("c3", "eth0").address.ip) == "10.42.0.4"
    store.last["0"] = A("10.42.0.6")  # wrap around; .2 is free, .3 taken
    assert str(alloc.get("c4", "eth0").address.ip) == "10.42.0.2"
    assert str(alloc.get("c5", "eth0").address.ip) == "10.42.0.5"


def test_exhaustion_exact_message_on_29() -> None:
    alloc, _ = make()
    got = {str(alloc.get(f"c{i}", "eth0").address.ip) for i in range(5)}
    assert got == {"10.42.0.2", "10.42.0.3", "10.42.0.4", "10.42.0.5", "10.42.0.6"}
    with pytest.raises(RangeExhausted) as ei:
        alloc.get("c99", "eth0")
    assert str(ei.value) == "no IP addresses available in range 10.42.0.2-10.42.0.6"
    assert ei.value.code == RANGE_EXHAUSTED


def test_exhaustion_message_for_range_set() -> None:
    rs = RangeSet([Range("10.1.0.0/30"), Range("10.2.0.0/30")])
    alloc = Allocator(rs, FakeStore(), "0")
    alloc.get("a", "eth0")
    alloc.get("b", "eth0")
    with pytest.raises(RangeExhausted) as ei:
        alloc.get("c", "eth0")
    assert str(ei.value) == (
        "no IP addresses available in range set: 10.1.0.2-10.1.0.2, 10.2.0.2-10.2.0.2"
    )


def test_requested_ip() -> None:
    alloc, store = make()
    got = alloc.get("c1", "eth0", requested_ip="10.42.0.5")
    assert got.address == ipaddress.ip_interface("10.42.0.5/29")
    assert store.by_ip[A("10.42.0.5")] == ("c1", "eth0")
    with pytest.raises(DuplicateAllocation, match="10.42.0.5 is not available"):
        alloc.get("c2", "eth0", requested_ip=A("10.42.0.5"))
    with pytest.raises(InvalidConfig, match="gateway"):
        alloc.get("c2", "eth0", requested_ip="10.42.0.1")
    with pytest.raises(InvalidConfig, match="not in range set 10.42.0.1-10.42.0.6"):
        alloc.get("c2", "eth0", requested_ip="10.42.0.7")
    with pytest.raises(InvalidConfig, match="not an IP"):
        alloc.get("c2", "eth0", requested_ip="10.42.0.x")
    assert set(store.by_ip) == {A("10.42.0.5")}


def test_duplicate_allocation_refused() -> None:
    refuse_duplicate([], "c1", "eth0")
    with pytest.raises(DuplicateAllocation) as ei:
        refuse_duplicate([A("10.42.0.2")], "c1", "eth0")
    assert ei.value.code == DUPLICATE_ALLOCATION
    assert ei.value.msg == (
        "10.42.0.2 has been allocated to c1/eth0, duplicate allocation is not allowed"
    )


def test_release() -> None:
    alloc, store = make()
    alloc.get("c1", "eth0")
    alloc.get("c2", "eth0")
    assert alloc.release("c1", "eth0") == [A("10.42.0.2")]
    assert alloc.release("c1", "eth0") == []
    assert set(store.by_ip) == {A("10.42.0.3")}


def test_reclaim_frees_exactly_what_it_approves() -> None:
    alloc, store = make()
    for i in range(5):
        alloc.get(f"c{i}", "eth0")
    offered: list[Reservation] = []

    def reclaim(r: Reservation) -> bool:
        offered.append(r)
        return r.container_id in ("c1", "c3")

    store.by_ip[A("192.168.1.1")] = ("outside", "eth0")  # not in this range set
    got = alloc.get("new", "eth0", reclaim=reclaim)
    assert {r.container_id for r in offered} == {"c0", "c1", "c2", "c3", "c4"}
    assert str(got.address.ip) in ("10.42.0.3", "10.42.0.5")
    owners = {who[0] for who in store.by_ip.values()}
    assert owners == {"c0", "c2", "c4", "new", "outside"}
    # next get takes the other freed address without any reclaim
    assert str(alloc.get("new2", "eth0").address.ip) in ("10.42.0.3", "10.42.0.5")


def test_reclaim_approving_nothing_still_exhausted() -> None:
    alloc, store = make()
    for i in range(5):
        alloc.get(f"c{i}", "eth0")
    before = store.reserve_calls
    with pytest.raises(RangeExhausted, match="in range 10.42.0.2-10.42.0.6$"):
        alloc.get("new", "eth0", reclaim=lambda r: False)
    assert store.reserve_calls - before == 5  # one walk only, no retry without frees
    assert len(store.by_ip) == 5


def test_normal_path_never_lists_reservations_and_probes_linearly() -> None:
    alloc, store = make("10.42.0.0/24")
    for i in range(253):
        alloc.get(f"c{i}", "eth0", reclaim=lambda r: False)
    assert store.reservations_calls == 0
    assert store.reserve_calls == 253  # round robin: each get() hits a free address first
    alloc.release("c7", "eth0")
    store.last["0"] = A("10.42.0.2")  # worst case: walk almost the whole range
    before = store.reserve_calls
    assert str(alloc.get("x", "eth0").address.ip) == "10.42.0.9"
    assert store.reserve_calls - before == 7
    assert store.reservations_calls == 0


def test_ipv6_allocation() -> None:
    alloc, _ = make("2001:cafe:42::/64")
    got = alloc.get("c1", "eth0")
    assert got.address == ipaddress.ip_interface("2001:cafe:42::2/64")
    assert got.gateway == A("2001:cafe:42::1")
