"""Which addresses already on the bridge stand in the way of a new gateway address: the
reference's ensureAddr rule, as a pure decision (ADD and ``weft status`` both use it)."""

from __future__ import annotations

import ipaddress

import pytest

from cni.operator import state as opstate
from cni.plugin.plan import bridge_address_conflicts
from tests.unit.test_opstate import facts


def conflicts(have: str, want: str) -> bool:
    return bridge_address_conflicts(ipaddress.ip_interface(have), ipaddress.ip_interface(want))


@pytest.mark.parametrize(
    ("have", "want", "expected"),
    [
        ("10.42.0.1/24", "10.42.0.1/24", False),  # the same: nothing to do
        ("10.42.9.1/24", "10.42.0.1/24", True),  # any other IPv4 address
        ("192.168.1.1/16", "10.42.0.1/24", True),
        ("169.254.3.1/16", "10.42.0.1/24", True),
        ("2001:cafe:42::1/64", "10.42.0.1/24", False),  # another family
        ("2001:cafe:42::99/64", "2001:cafe:42::1/64", True),  # same prefix
        ("2001:cafe:42::1/56", "2001:cafe:42::1/64", True),  # contains the new one
        ("2001:cafe:42::5/128", "2001:cafe:42::1/64", True),  # inside the new one
        ("fd99::1/64", "2001:cafe:42::1/64", False),  # another prefix: left alone
        ("2001:cafe:43::1/64", "2001:cafe:42::1/64", False),
        ("fe80::1/64", "2001:cafe:42::1/64", False),
    ],
)
def test_ipv4_always_ipv6_only_when_overlapping(have: str, want: str, expected: bool) -> None:
    assert conflicts(have, want) is expected


def test_status_reports_only_what_add_would_refuse() -> None:
    dual = ("10.42.0.1/24", "2001:cafe:42::1/64")
    ok = facts(bridge_addrs=(*dual, "fd99::1/64"), want_addrs=dual)
    assert opstate.problems(ok) == []
    # the gateway not there yet, another prefix is: the next ADD adds it beside that one
    first = facts(bridge_addrs=("10.42.0.1/24", "fd99::1/64"), want_addrs=dual)
    assert opstate.problems(first) == []
    bad = facts(bridge_addrs=("10.42.0.1/24", "2001:cafe:42::9/64"), want_addrs=dual)
    [p] = opstate.problems(bad)
    assert "cni0 has 2001:cafe:42::9/64 but the subnet is 2001:cafe:42::1/64" in p.what
