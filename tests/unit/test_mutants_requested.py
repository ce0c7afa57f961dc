"""Requested addresses (``IP=`` in CNI_ARGS, the ``ips`` capability): the errors as a runtime
reads them, each (code, msg, details) written out here by hand, with the value quoted and cut
at 100 characters so a huge value cannot flood the error; and the allocator's answer when
the requested address is held by a record no reservation lists."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cni.plugin.config import requested_ips
from cnispec.errors import CNIError, DuplicateAllocation
from cnispec.ip import IPAddress
from ipam.allocator import Allocator
from ipam.ranges import Range, RangeSet
from ipam.store import Reservation
from tests.unit.test_allocator import FakeStore

A = ipaddress.ip_address


def error_of(obj: dict[str, Any], cni_args: dict[str, str]) -> tuple[int, str, str]:
    with pytest.raises(CNIError) as ei:
        requested_ips(obj, cni_args)
    return ei.value.code, ei.value.msg, ei.value.details


def test_an_unreadable_cni_args_ip_names_cni_args_and_quotes_100_characters() -> None:
    assert error_of({}, {"IP": "bogus"}) == (
        4, "invalid CNI_ARGS", "IP='bogus': cannot understand ip")
    long = "1" * 150
    assert error_of({}, {"IP": long}) == (
        4, "invalid CNI_ARGS", "IP='" + "1" * 100 + "': cannot understand ip")


def test_an_ips_capability_that_is_not_a_list_says_expected_array() -> None:
    assert error_of({"runtimeConfig": {"ips": "10.42.0.5"}}, {}) == (
        7, "invalid network configuration: runtimeConfig.ips", "expected array")


def test_an_unreadable_ips_entry_names_its_index_and_quotes_100_characters() -> None:
    obj = {"runtimeConfig": {"ips": ["10.42.0.5", "nope"]}}
    assert error_of(obj, {}) == (
        7, "invalid network configuration: runtimeConfig.ips[1]", "'nope': cannot understand ip")
    obj = {"runtimeConfig": {"ips": ["2" * 150]}}
    assert error_of(obj, {}) == (
        7, "invalid network configuration: runtimeConfig.ips[0]",
        "'" + "2" * 100 + "': cannot understand ip")
    # a value of another JSON type is quoted as text
    assert error_of({"runtimeConfig": {"ips": [5]}}, {}) == (
        7, "invalid network configuration: runtimeConfig.ips[0]", "'5': cannot understand ip")


class UnreadableHolderStore(FakeStore):
    """A store where 10.9.0.50's record exists but is invalid (a file on disk with content
    that is not ``<id>\\r\\n<ifname>``): reserving it fails, and no reservation lists it."""

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool:
        if ip == A("10.9.0.50"):
            self.reserve_calls += 1
            return False
        return super().reserve(container_id, ifname, ip, range_id)


def test_a_requested_address_whose_holder_is_unreadable_is_not_available() -> None:
    store = UnreadableHolderStore()
    rs = RangeSet([Range("10.9.0.0/24")])
    offered: list[Reservation] = []

    def reclaim(r: Reservation) -> bool:
        offered.append(r)
        return True

    with pytest.raises(DuplicateAllocation) as ei:
        Allocator(rs, store, "0").get("new", "eth0", "10.9.0.50", reclaim)
    assert (ei.value.code, ei.value.msg) == (
        105, "requested IP address 10.9.0.50 is not available in range set 10.9.0.1-10.9.0.254")
    assert offered == [] and store.by_ip == {}
