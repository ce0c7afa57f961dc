"""Spec plumbing and result conversion per version, no root."""

from __future__ import annotations

import ipaddress

import pytest

from cni.protocol.spec import SUPPORTED_VERSIONS, parse_cni_args, read_env
from cni.protocol.types import DNS, Interface, IPConfig, Result, Route, result_from_dict
from cnispec.errors import InvalidConfig, InvalidEnv
from cnispec.rules import interface_name_problem, is_valid_id


def env(**kw: str) -> dict[str, str]:
    base = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "abc",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    base.update(kw)
    return base


def test_read_env_ok_and_cni_args() -> None:
    e = read_env(env(CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=x").get)
    assert e.command == "ADD" and e.args["K8S_POD_NAMESPACE"] == "kube-system"


@pytest.mark.parametrize(
    "patch",
    [
        {"CNI_CONTAINERID": ""},
        {"CNI_CONTAINERID": "-bad"},
        {"CNI_CONTAINERID": "../x"},
        {"CNI_CONTAINERID": "a/b"},
        {"CNI_IFNAME": ""},
        {"CNI_IFNAME": "x" * 16},
        {"CNI_IFNAME": "a:b"},
        {"CNI_IFNAME": "a b"},
        {"CNI_IFNAME": ".."},
        {"CNI_NETNS": ""},
        {"CNI_PATH": ""},
        {"CNI_COMMAND": "FROB"},
        {"CNI_ARGS": "novalue"},
    ],
)
def test_bad_env_is_code_4(patch: dict[str, str]) -> None:
    with pytest.raises(InvalidEnv) as e:
        read_env(env(**patch).get)
    assert e.value.code == 4


def test_del_allows_empty_netns() -> None:
    assert read_env(env(CNI_COMMAND="DEL", CNI_NETNS="").get).netns == ""


def test_id_and_ifname_rules() -> None:
    assert is_valid_id("a.b-c_d9") and not is_valid_id(".a") and not is_valid_id("a\0")
    assert interface_name_problem("eth0") is None
    assert interface_name_problem("x" * 15) is None
    assert parse_cni_args("") == {}


RESULT = Result(
    interfaces=(
        Interface("cni0", "aa:bb:cc:dd:ee:ff"),
        Interface("vethx", "11:22:33:44:55:66"),
        Interface("eth0", "22:33:44:55:66:77", "/run/netns/p", 1450),
    ),
    ips=(
        IPConfig(ipaddress.ip_interface("10.42.0.2/24"), ipaddress.ip_address("10.42.0.1"), 2),
        IPConfig(ipaddress.ip_interface("2001:db8::2/64"), ipaddress.ip_address("2001:db8::1"), 2),
    ),
    routes=(
        Route(ipaddress.ip_network("10.42.0.0/16"), ipaddress.ip_address("10.42.0.1")),
        Route(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.42.0.1")),
    ),
    dns=DNS(nameservers=("10.43.0.10",)),
)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_result_is_emitted_in_exactly_the_requested_version(version: str) -> None:
    d = RESULT.to_dict(version)
    assert d["cniVersion"] == version
    legacy = version.startswith("0.")
    assert all(("version" in ip) == legacy for ip in d["ips"])
    if legacy:
        assert [ip["version"] for ip in d["ips"]] == ["4", "6"]
    assert d["ips"][0] == {
        **({"version": "4"} if legacy else {}),
        "address": "10.42.0.2/24",
        "gateway": "10.42.0.1",
        "interface": 2,
    }
    assert d["interfaces"][2]["sandbox"] == "/run/netns/p"
    assert ("mtu" in d["interfaces"][2]) == (version == "1.1.0")
    assert d["dns"] == {"nameservers": ["10.43.0.10"]}
    # and it parses back to the same model (prevResult of any version)
    back = result_from_dict(d)
    assert back.ips == RESULT.ips and back.routes == RESULT.routes


def test_prev_result_garbage_is_code_7() -> None:
    with pytest.raises(InvalidConfig):
        result_from_dict({"ips": [{"address": "nope"}]})
    with pytest.raises(InvalidConfig):
        result_from_dict({"ips": "x"})
