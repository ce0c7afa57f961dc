from __future__ import annotations

import ipaddress

import pytest

from cnispec.errors import INVALID_CONFIG, TRY_AGAIN_LATER, InvalidConfig
from ipam.subnetfile import SubnetFile, SubnetFileIncomplete, parse_subnet_file

K3S_DEFAULT = """FLANNEL_NETWORK=10.42.0.0/16
FLANNEL_SUBNET=10.42.0.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
"""

DUAL = """FLANNEL_NETWORK=10.42.0.0/16
FLANNEL_SUBNET=10.42.0.1/24
FLANNEL_IPV6_NETWORK=2001:cafe:42::/56
FLANNEL_IPV6_SUBNET=2001:cafe:42::1/64
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
"""


def test_k3s_default() -> None:
    sf = parse_subnet_file(K3S_DEFAULT)
    assert sf == SubnetFile(
        networks=(ipaddress.IPv4Network("10.42.0.0/16"),),
        subnet=ipaddress.IPv4Interface("10.42.0.1/24"),
        ipv6_subnet=None,
        mtu=1450,
        ipmasq=True,
    )
    assert sf.subnet is not None and str(sf.subnet.network) == "10.42.0.0/24"
    assert sf.subnet is not None and sf.subnet.ip == ipaddress.IPv4Address("10.42.0.1")


def test_dual_stack() -> None:
    sf = parse_subnet_file(DUAL)
    assert sf.networks == (
        ipaddress.IPv4Network("10.42.0.0/16"),
        ipaddress.IPv6Network("2001:cafe:42::/56"),
    )
    assert sf.subnet == ipaddress.IPv4Interface("10.42.0.1/24")
    assert sf.ipv6_subnet == ipaddress.IPv6Interface("2001:cafe:42::1/64")
    assert sf.mtu == 1450
    assert sf.ipmasq is True


def test_ipv6_only() -> None:
    sf = parse_subnet_file(
        "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
        "FLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\n"
        "FLANNEL_MTU=1430\n"
        "FLANNEL_IPMASQ=false\n"
    )
    assert sf.networks == (ipaddress.IPv6Network("2001:cafe:42::/56"),)
    assert sf.subnet is None
    assert sf.ipv6_subnet == ipaddress.IPv6Interface("2001:cafe:42:3::1/64")
    assert sf.mtu == 1430
    assert sf.ipmasq is False


def test_quotes_comments_blank_lines_export_unknown_keys() -> None:
    text = (
        "# written by flannel\n"
        "\n"
        '   FLANNEL_NETWORK="10.42.0.0/16"   \n'
        "export FLANNEL_SUBNET='10.42.7.1/24'\n"
        "  # indented comment\n"
        "SOMETHING_ELSE=whatever you like\n"
        'FLANNEL_MTU="1450"\r\n'
        "export FLANNEL_IPMASQ=false\n"
    )
    sf = parse_subnet_file(text)
    assert sf.subnet == ipaddress.IPv4Interface("10.42.7.1/24")
    assert sf.networks == (ipaddress.IPv4Network("10.42.0.0/16"),)
    assert sf.mtu == 1450
    assert sf.ipmasq is False


def test_comma_separated_networks_v4_first() -> None:
    sf = parse_subnet_file(
        "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
        "FLANNEL_NETWORK=10.42.0.0/16,10.100.0.0/16\n"
        "FLANNEL_SUBNET=10.100.3.1/24\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    assert sf.networks == (
        ipaddress.IPv4Network("10.42.0.0/16"),
        ipaddress.IPv4Network("10.100.0.0/16"),
        ipaddress.IPv6Network("2001:cafe:42::/56"),
    )
    assert sf.subnet == ipaddress.IPv4Interface("10.100.3.1/24")


BASE = K3S_DEFAULT.splitlines()


def _with_line(lineno: int, line: str) -> str:
    lines = list(BASE)
    lines[lineno - 1] = line
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "lineno", "key", "fragment"),
    [
        (_with_line(3, "FLANNEL_MTU=abc"), 3, "FLANNEL_MTU", "68..65535"),
        (_with_line(3, "FLANNEL_MTU=67"), 3, "FLANNEL_MTU", "'67'"),
        (_with_line(3, "FLANNEL_MTU=65536"), 3, "FLANNEL_MTU", "65536"),
        (_with_line(3, "FLANNEL_MTU=-1450"), 3, "FLANNEL_MTU", "-1450"),
        (_with_line(3, "FLANNEL_MTU="), 3, "FLANNEL_MTU", "empty value"),
        (_with_line(4, "FLANNEL_IPMASQ=yes"), 4, "FLANNEL_IPMASQ", "true or false"),
        (_with_line(2, "FLANNEL_SUBNET=10.42.0.1"), 2, "FLANNEL_SUBNET", "address/prefix"),
        (_with_line(2, "FLANNEL_SUBNET=10.42.0.300/24"), 2, "FLANNEL_SUBNET", "10.42.0.300"),
        (_with_line(2, "FLANNEL_SUBNET=2001:db8::1/64"), 2, "FLANNEL_SUBNET", "IPv4"),
        (_with_line(2, "FLANNEL_SUBNET=10.43.0.1/24"), 2, "FLANNEL_SUBNET", "not inside"),
        (_with_line(2, 'FLANNEL_SUBNET="10.42.0.1/24'), 2, "FLANNEL_SUBNET", "quotes"),
        (_with_line(2, "FLANNEL_SUBNET=10.42.0.1/24 x"), 2, "FLANNEL_SUBNET", "whitespace"),
        (_with_line(1, "FLANNEL_NETWORK=10.42.0.1/16"), 1, "FLANNEL_NETWORK", "host bits"),
        (_with_line(1, "FLANNEL_NETWORK=10.42.0.0/16,"), 1, "FLANNEL_NETWORK", "CIDR"),
        (_with_line(1, "FLANNEL_NETWORK=fd00::/8"), 1, "FLANNEL_NETWORK", "IPv4"),
        (_with_line(3, "FLANNEL_MTU 1450"), 3, "", "KEY=VALUE"),
        (_with_line(3, "1FLANNEL_MTU=1450"), 3, "", "invalid key"),
        (_with_line(3, "FLANNEL_SUBNET=10.42.0.1/24"), 3, "FLANNEL_SUBNET", "duplicate"),
    ],
)
def test_malformed_names_file_line_key(text: str, lineno: int, key: str, fragment: str) -> None:
    with pytest.raises(InvalidConfig) as ei:
        parse_subnet_file(text, "/run/flannel/subnet.env")
    msg = str(ei.value)
    assert ei.value.code == INVALID_CONFIG
    assert f"/run/flannel/subnet.env:{lineno}: " in msg
    if key:
        assert f": {key}: " in msg
    assert fragment in msg


def test_subnet_without_matching_network_names_line() -> None:
    text = (
        "FLANNEL_MTU=1450\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_IPV6_NETWORK=fd00::/56\n"
        "FLANNEL_IPV6_SUBNET=fd00::1/64\nFLANNEL_IPMASQ=true\n"
    )
    with pytest.raises(InvalidConfig) as ei:
        parse_subnet_file(text, "s.env")
    assert "s.env:2: FLANNEL_SUBNET: " in str(ei.value)
    assert "no FLANNEL_NETWORK given" in str(ei.value)


def test_ipv6_subnet_outside_ipv6_network() -> None:
    with pytest.raises(InvalidConfig) as ei:
        parse_subnet_file(
            "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=fd00::1/64\n"
            "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        )
    assert "subnet.env:2: FLANNEL_IPV6_SUBNET: fd00::1/64 is not inside" in str(ei.value)


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        (
            "",
            "FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET, "
            "FLANNEL_MTU, FLANNEL_IPMASQ",
        ),
        ("# nothing\nOTHER=1\n", "FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET or"),
        (
            "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            "is missing FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET",
        ),
        (
            "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\n",
            "is missing FLANNEL_MTU, FLANNEL_IPMASQ",
        ),
        (
            "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_IPMASQ=true\n",
            "is missing FLANNEL_MTU",
        ),
        (
            "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\n",
            "is missing FLANNEL_IPMASQ",
        ),
        (
            "FLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            "is missing FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK",
        ),
    ],
)
def test_missing_keys_are_try_again_naming_every_key(text: str, missing: str) -> None:
    """As flannel's own plugin: every required key missing is named, and a file with gaps
    is one not (fully) written yet (code 11), never filled with defaults."""
    with pytest.raises(SubnetFileIncomplete) as ei:
        parse_subnet_file(text, "/x/subnet.env")
    assert ei.value.code == TRY_AGAIN_LATER
    assert "/x/subnet.env" in str(ei.value) and missing in str(ei.value)


def test_a_malformed_value_is_7_even_when_keys_are_missing() -> None:
    with pytest.raises(InvalidConfig, match=r"subnet.env:1: FLANNEL_MTU: "):
        parse_subnet_file("FLANNEL_MTU=abc\n")


@pytest.mark.parametrize("text", [K3S_DEFAULT, DUAL])
def test_complete_files_have_mtu_and_ipmasq(text: str) -> None:
    sf = parse_subnet_file(text)
    assert sf.mtu == 1450 and sf.ipmasq is True


def test_line_numbers_count_newlines_only() -> None:
    text = "# a\x0c comment with a form feed\nFLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=x\n"
    with pytest.raises(InvalidConfig, match=r"subnet.env:3: FLANNEL_SUBNET: "):
        parse_subnet_file(text)


def test_mtu_bounds_accepted() -> None:
    assert parse_subnet_file(_with_line(3, "FLANNEL_MTU=68")).mtu == 68
    assert parse_subnet_file(_with_line(3, "FLANNEL_MTU=65535")).mtu == 65535
