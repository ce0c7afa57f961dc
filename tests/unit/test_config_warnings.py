"""Config mistakes get a warning naming the key probably meant; keys a runtime, libcni,
k3s or a chained plugin adds never warn."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from cni.plugin.config import config_warnings, edit_distance, probable_key, shape_reason
from tests.netns import ROOT

K3S = {
    "cniVersion": "1.0.0",
    "name": "cbr0",
    "type": "weft",
    "delegate": {"hairpinMode": True, "forceAddress": True, "isDefaultGateway": True},
}


def test_k3s_and_runtime_keys_never_warn() -> None:
    conf: dict[str, Any] = dict(
        K3S,
        runtimeConfig={"portMappings": []},
        capabilities={"portMappings": True},
        prevResult={"cniVersion": "1.0.0"},
        args={"cni": {}},
        subnetFile="/run/flannel/subnet.env",
        dataDir="/var/lib/cni/flannel",
        ipam={"type": "host-local", "dataDir": "/var/lib/cni/networks"},
        logFile="/var/log/weft.log",
        logLevel="debug",
        lockTimeout=30,
        dns={"nameservers": ["10.43.0.10"]},
    )
    conf["cni.dev/valid-attachments"] = []
    conf["cni.dev/anything-new"] = 1
    assert config_warnings(conf) == []


def test_reference_bridge_shape_never_warns() -> None:
    conf = {
        "cniVersion": "1.1.0",
        "name": "mynet",
        "type": "weft",
        "bridge": "br0",
        "isGateway": True,
        "isDefaultGateway": True,
        "forceAddress": False,
        "ipMasq": True,
        "mtu": 1400,
        "hairpinMode": True,
        "promiscMode": False,
        "ipam": {
            "type": "host-local",
            "ranges": [
                [{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "gateway": "10.1.0.1"}]
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "/tmp/x",
        },
        "dns": {"nameservers": ["1.1.1.1"], "domain": "x", "search": [], "options": []},
    }
    assert config_warnings(conf) == []


@pytest.mark.parametrize(
    ("conf", "where", "meant"),
    [
        (
            dict(K3S, delegate={"isDefaultGatway": True}),
            "delegate.isDefaultGatway",
            "isDefaultGateway",
        ),
        ({"cniVersion": "1.0.0", "name": "cbr0", "subnetfile": "/x"}, "subnetfile", "subnetFile"),
        ({"cniVersion": "1.0.0", "name": "cbr0", "delegates": {}}, "delegates", "delegate"),
        (dict(K3S, ipam={"datadir": "/x"}), "ipam.datadir", "dataDir"),
        (dict(K3S, dns={"nameserver": ["1.1.1.1"]}), "dns.nameserver", "nameservers"),
        (dict(K3S, logfile="/x"), "logfile", "logFile"),
        (
            {
                "cniVersion": "1.0.0",
                "name": "n",
                "ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "rangestart": "10.0.0.5"}]]},
            },
            "ipam.ranges[0][0].rangestart",
            "rangeStart",
        ),
    ],
)
def test_typos_name_the_probable_key(conf: dict[str, Any], where: str, meant: str) -> None:
    (w,) = config_warnings(conf)
    assert f"'{where}'" in w and f"did you mean '{meant}'" in w


def test_a_key_nothing_resembles_gets_no_guess() -> None:
    (w,) = config_warnings(dict(K3S, frobnicate=1))
    assert "'frobnicate'" in w and "did you mean" not in w


def test_misplaced_and_unsupported_keys() -> None:
    ws = config_warnings(dict(K3S, isDefaultGateway=True, vlan=5))
    assert any("'isDefaultGateway' at the top level is ignored" in w for w in ws)
    assert any("'vlan'" in w and "not supported" in w for w in ws)
    ws = config_warnings(dict(K3S, ipam={"ranges": [[{"subnet": "10.0.0.0/24"}]]}))
    assert any("'ipam.ranges' is ignored in the flannel shape" in w for w in ws)


def test_shape_reason() -> None:
    assert shape_reason(K3S).startswith("flannel shape (the config has delegate)")
    assert shape_reason({"ipam": {}}).startswith("bridge shape (the config has neither")


def test_edit_distance() -> None:
    assert edit_distance("isDefaultGatway", "isDefaultGateway") == 1
    assert edit_distance("subnetfile", "subnetFile") == 0
    assert edit_distance("abc", "xyzxyz") == 3  # capped at limit + 1
    assert probable_key("mtuu", frozenset({"mtu", "bridge"})) == "mtu"
    assert probable_key("zzzzzz", frozenset({"mtu"})) is None


def test_config_module_does_not_import_difflib() -> None:
    code = "import sys, cni.plugin.config; print('difflib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    assert json.loads("1") == 1
