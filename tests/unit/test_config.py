"""Config parsing of both shapes (golden cases), no root."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from cni.plugin.config import parse_netconf, subnet_file_path
from cni.protocol.jsondecode import decode_object as decode
from cnispec.errors import DecodeFailure, IncompatibleVersion, InvalidConfig
from ipam.subnetfile import parse_subnet_file

K3S = """FLANNEL_NETWORK=10.42.0.0/16
FLANNEL_SUBNET=10.42.3.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
"""
DUAL = K3S + "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\n"
V6 = (
    "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
    "FLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
)

# The member of k3s's stock conflist, as libcni hands it to the plugin.
K3S_MEMBER: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "cbr0",
    "type": "weft",
    "delegate": {"hairpinMode": True, "forceAddress": True, "isDefaultGateway": True},
}


def flannel(text: str = K3S, **extra: Any) -> Any:
    obj = dict(K3S_MEMBER, **extra)
    return parse_netconf(obj, parse_subnet_file(text, "/run/flannel/subnet.env"))


def test_k3s_member_golden() -> None:
    c = flannel()
    assert (c.name, c.bridge, c.mtu) == ("cbr0", "cni0", 1450)
    assert c.is_gateway and c.is_default_gateway and c.force_address and c.hairpin_mode
    assert c.ip_masq is False  # FLANNEL_IPMASQ=true: flannel masquerades, so the bridge doesn't
    assert subnet_file_path(K3S_MEMBER) == "/run/flannel/subnet.env"
    assert c.ipam.data_dir == "/var/lib/cni/networks"
    [rs] = c.ipam.range_sets
    assert rs.describe() == "10.42.3.2-10.42.3.254"
    assert [str(r.dst) for r in c.ipam.routes] == ["10.42.0.0/16"]


def test_flannel_ipmasq_false_turns_bridge_masq_on() -> None:
    assert flannel(K3S.replace("IPMASQ=true", "IPMASQ=false")).ip_masq is True


def test_delegate_overrides_subnet_file() -> None:
    c = flannel(delegate={"mtu": 1400, "ipMasq": True, "bridge": "br9", "hairpinMode": False})
    assert (c.mtu, c.ip_masq, c.bridge, c.hairpin_mode) == (1400, True, "br9", False)


def test_flannel_ipam_section_sets_data_dir_and_extra_routes() -> None:
    c = flannel(ipam={"dataDir": "/tmp/x", "routes": [{"dst": "192.168.0.0/16"}]})
    assert c.ipam.data_dir == "/tmp/x"
    assert [str(r.dst) for r in c.ipam.routes] == ["192.168.0.0/16", "10.42.0.0/16"]


def test_ipv6_only_and_dual_stack() -> None:
    c = flannel(V6)
    [rs] = c.ipam.range_sets
    assert rs.family == 6 and c.mtu == 1430
    c = flannel(DUAL)
    assert [rs.family for rs in c.ipam.range_sets] == [4, 6]
    assert [str(r.dst) for r in c.ipam.routes] == ["10.42.0.0/16", "2001:cafe:42::/56"]


def test_flannel_shape_without_subnet_file_still_parses_for_del() -> None:
    c = parse_netconf(dict(K3S_MEMBER), None)
    assert c.ipam.range_sets == ()
    assert subnet_file_path(K3S_MEMBER) == "/run/flannel/subnet.env"
    assert subnet_file_path({"subnetFile": "/x/s.env"}) == "/x/s.env"


def test_reference_bridge_shape() -> None:
    obj = {
        "cniVersion": "0.4.0",
        "name": "mynet",
        "type": "weft",
        "bridge": "br0",
        "isGateway": True,
        "ipMasq": True,
        "mtu": 9000,
        "ipam": {
            "type": "host-local",
            "ranges": [
                [{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20"}]
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dataDir": "/tmp/d",
        },
        "dns": {"nameservers": ["10.43.0.10"], "search": ["svc.cluster.local"]},
        "runtimeConfig": {"portMappings": []},
        "capabilities": {"portMappings": True},
    }
    c = parse_netconf(obj, None)
    assert c.bridge == "br0" and c.mtu == 9000 and c.ip_masq
    assert c.ipam.range_sets[0].describe() == "10.1.0.10-10.1.0.20"
    assert c.ipam.routes[0].gw == ipaddress.ip_address("10.1.0.1")
    assert c.dns.nameservers == ("10.43.0.10",)


def test_legacy_host_local_subnet_form() -> None:
    obj = {
        "cniVersion": "1.0.0",
        "name": "n",
        "ipam": {"type": "host-local", "subnet": "10.9.0.0/28"},
    }
    assert parse_netconf(obj, None).ipam.range_sets[0].describe() == "10.9.0.2-10.9.0.14"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"delegate": {"hairpinMode": "yes"}}, "delegate.hairpinMode"),
        ({"delegate": {"mtu": "1450"}}, "delegate.mtu"),
        ({"delegate": {"mtu": 10}}, "delegate.mtu"),
        ({"delegate": {"hairpinMode": True, "promiscMode": True}}, "delegate.hairpinMode"),
        ({"delegate": {"bridge": "a/b"}}, "delegate.bridge"),
        ({"ipam": {"dataDir": "relative"}}, "ipam.dataDir"),
        ({"ipam": {"type": "dhcp"}}, "ipam.type"),
        ({"name": "../etc"}, "name"),
        ({"logLevel": "loud"}, "logLevel"),
        ({"ipam": {"routes": [{"dst": "nope"}]}}, "ipam.routes[0].dst"),
    ],
)
def test_bad_config_is_code_7_naming_the_field(patch: dict[str, Any], field: str) -> None:
    obj = dict(K3S_MEMBER)
    obj.update(patch)
    with pytest.raises(InvalidConfig) as e:
        parse_netconf(obj, parse_subnet_file(K3S))
    assert e.value.code == 7
    assert field in str(e.value)


def test_unsupported_version_is_code_1() -> None:
    with pytest.raises(IncompatibleVersion) as e:
        parse_netconf(dict(K3S_MEMBER, cniVersion="0.2.0"), None)
    assert e.value.code == 1


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"\xff\xfe", b'"x"'])
def test_decode_failure_is_code_6(raw: bytes) -> None:
    with pytest.raises(DecodeFailure) as e:
        decode(raw)
    assert e.value.code == 6


def test_overlapping_range_sets_refused() -> None:
    obj = {
        "cniVersion": "1.0.0",
        "name": "n",
        "ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]},
    }
    with pytest.raises(InvalidConfig):
        parse_netconf(obj, None)


def test_valid_attachments_and_prev_result() -> None:
    prev = {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.42.3.2/24", "gateway": "10.42.3.1", "interface": 2}],
    }
    c = flannel(
        **{
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
            "prevResult": prev,
        }
    )
    assert c.valid_attachments == (("a", "eth0"),)
    assert c.prev_result is not None and str(c.prev_result.ips[0].address) == "10.42.3.2/24"
    json.dumps(prev)


@pytest.mark.parametrize(
    "data_dir", ["relative/x", "/a/../b", "/a/./b", "/a/" + "d" * 256, "/a\0b"]
)
def test_data_dir_must_be_a_plain_absolute_path(data_dir: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        flannel(ipam={"dataDir": data_dir})
    assert "ipam.dataDir" in str(e.value)
