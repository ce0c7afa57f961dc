"""An address the runtime asks for (``IP=`` in CNI_ARGS, the ``ips`` capability), read and
placed as host-local does. Pure: config and allocator over a fake store, no root."""

from __future__ import annotations

import ipaddress

import pytest

from cni.plugin.config import assign_requested, requested_ips
from cnispec.errors import (
    INVALID_CONFIG,
    INVALID_ENV,
    DuplicateAllocation,
    InvalidConfig,
    InvalidEnv,
)
from ipam.ranges import Range, RangeSet
from ipam.store import Reservation
from tests.unit.test_allocator import make

A = ipaddress.ip_address
V4 = RangeSet([Range("10.42.0.0/24")])
V6 = RangeSet([Range("2001:cafe:42::/64")])


def test_cni_args_first_then_the_ips_capability_each_once() -> None:
    conf = {"runtimeConfig": {"ips": ["10.42.0.88/24", "2001:cafe:42::9", "10.42.0.77"]}}
    got = requested_ips(conf, {"IgnoreUnknown": "1", "IP": "10.42.0.77"})
    assert got == (A("10.42.0.77"), A("10.42.0.88"), A("2001:cafe:42::9"))
    assert requested_ips({}, {}) == ()
    assert requested_ips({"runtimeConfig": "junk"}, {}) == ()  # not ours to refuse
    assert requested_ips({"runtimeConfig": {"portMappings": []}}, {"K8S_POD_NAME": "x"}) == ()


@pytest.mark.parametrize("value", ["bogus", "10.42.0.5/24", "", "fe80::1%eth0"])
def test_an_unreadable_cni_args_ip_is_code_4(value: str) -> None:
    with pytest.raises(InvalidEnv) as ei:
        requested_ips({}, {"IP": value})
    assert ei.value.code == INVALID_ENV and "cannot understand ip" in ei.value.details


@pytest.mark.parametrize("ips", ["10.42.0.5", [5], ["10.42.0.x"], [None], ["fe80::1%eth0"]])
def test_an_unreadable_ips_capability_is_code_7(ips: object) -> None:
    with pytest.raises(InvalidConfig) as ei:
        requested_ips({"runtimeConfig": {"ips": ips}}, {})
    assert ei.value.code == INVALID_CONFIG and "runtimeConfig.ips" in ei.value.msg


def test_each_range_set_takes_one_requested_address_the_rest_is_left_over() -> None:
    per_set, left = assign_requested((V4, V6), (A("2001:cafe:42::9"), A("10.42.0.77")))
    assert per_set == (A("10.42.0.77"), A("2001:cafe:42::9")) and left == ()
    per_set, left = assign_requested((V4, V6), (A("10.42.0.77"), A("10.42.0.78"), A("10.43.0.5")))
    assert per_set == (A("10.42.0.77"), None) and left == (A("10.42.0.78"), A("10.43.0.5"))
    assert assign_requested((V4,), ()) == ((None,), ())


def test_a_requested_address_held_by_a_dead_attachment_is_taken_back() -> None:
    alloc, store = make("10.42.0.0/29")
    alloc.get("dead", "eth0", requested_ip="10.42.0.5")
    offered: list[Reservation] = []

    def reclaim(r: Reservation) -> bool:
        offered.append(r)
        return r.container_id == "dead"

    got = alloc.get("new", "eth0", requested_ip="10.42.0.5", reclaim=reclaim)
    assert str(got.address) == "10.42.0.5/29" and store.by_ip[A("10.42.0.5")] == ("new", "eth0")
    assert offered == [Reservation(A("10.42.0.5"), "dead", "eth0")]
    with pytest.raises(DuplicateAllocation) as ei:  # a live holder keeps it
        alloc.get("third", "eth0", requested_ip="10.42.0.5", reclaim=reclaim)
    assert ei.value.msg == (
        "requested IP address 10.42.0.5 is not available in range set 10.42.0.1-10.42.0.6"
    )
    assert store.by_ip[A("10.42.0.5")] == ("new", "eth0")


def test_gateway_is_refused_in_host_locals_words() -> None:
    alloc, store = make("10.42.0.0/29")
    with pytest.raises(InvalidConfig) as ei:
        alloc.get("c", "eth0", requested_ip="10.42.0.1")
    assert ei.value.msg == "requested ip 10.42.0.1 is subnet's gateway" and store.by_ip == {}
