"""What ``cni.plugin.config`` answers, pinned for a wide table of inputs: every field of every shape
given every wrong JSON type (tests/wrongtypes.py) and given wrong *values* of the right type
(bad addresses, CIDRs, paths, ranges, routes, DNS, GC lists), and the warnings and shape
reasons a config gets. The answer is the CNI error (code, msg, details) a runtime and an
operator read, or the parsed NetConf.

The expected answers live in tests/unit/golden/config.json, reviewed by hand when they
change: regenerate with ``WEFT_UPDATE_GOLDEN=1 pytest tests/unit/test_mutants_config.py``
and read the diff. Keeps ``make mutate``'s mutants of the messages and parsed values dead.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from cni.plugin.config import config_warnings, parse_netconf, shape_reason
from cnispec.errors import CNIError
from ipam.subnetfile import SubnetFile, parse_subnet_file
from tests import wrongtypes

GOLDEN = Path(__file__).parent / "golden" / "config.json"
FILL = {wrongtypes.DATA_DIR: "/var/lib/cni/networks", wrongtypes.SUBNET_FILE: "/x/subnet.env",
        wrongtypes.LOG_FILE: "/x/weft.log"}
SUBNET_TEXT = (
    "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\n"
    "FLANNEL_IPMASQ=true\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
    "FLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\n"
)
LONG = "/x/" + "a" * 300

# (label, shape, path, value): values of the right JSON type that are still wrong, or edge
VALUES: list[tuple[str, str, tuple[str | int, ...], Any]] = [
    ("name-bad", "bridge", ("name",), "a/b"),
    ("name-empty", "bridge", ("name",), ""),
    ("version-old", "bridge", ("cniVersion",), "0.2.0"),
    ("subnet-not-cidr", "bridge", ("ipam", "ranges", 0, 0, "subnet"), "10.42.0.0"),
    ("subnet-host-bits", "bridge", ("ipam", "ranges", 0, 0, "subnet"), "10.42.0.1/24"),
    ("subnet-garbage", "bridge", ("ipam", "ranges", 0, 0, "subnet"), "nope"),
    ("subnet-missing", "bridge", ("ipam", "ranges", 0, 0), {"gateway": "10.42.0.1"}),
    ("range-not-object", "bridge", ("ipam", "ranges", 0, 0), "10.42.0.0/24"),
    ("ranges-empty", "bridge", ("ipam", "ranges"), []),
    ("rangeset-empty", "bridge", ("ipam", "ranges", 0), []),
    ("range-start-outside", "bridge", ("ipam", "ranges", 0, 0, "rangeStart"), "10.43.0.5"),
    ("range-end-outside", "bridge", ("ipam", "ranges", 0, 0, "rangeEnd"), "10.43.0.5"),
    ("range-start-garbage", "bridge", ("ipam", "ranges", 0, 0, "rangeStart"), "x"),
    ("range-end-before-start", "bridge", ("ipam", "ranges", 0, 0, "rangeEnd"), "10.42.0.50"),
    ("gateway-outside", "bridge", ("ipam", "ranges", 0, 0, "gateway"), "10.43.0.1"),
    ("gateway-garbage", "bridge", ("ipam", "ranges", 0, 0, "gateway"), "1.2.3"),
    ("two-ranges-overlap", "bridge", ("ipam", "ranges"),
     [[{"subnet": "10.42.0.0/24"}], [{"subnet": "10.42.0.0/25"}]]),
    ("two-sets", "bridge", ("ipam", "ranges"),
     [[{"subnet": "10.42.0.0/24"}], [{"subnet": "2001:db8::/64"}]]),
    ("mixed-families-in-a-set", "bridge", ("ipam", "ranges"),
     [[{"subnet": "10.42.0.0/24"}, {"subnet": "2001:db8::/64"}]]),
    ("legacy-subnet-garbage", "bridge-legacy", ("ipam", "subnet"), "x/y"),
    ("legacy-no-subnet", "bridge-legacy", ("ipam",), {"type": "host-local"}),
    ("route-dst-garbage", "bridge", ("ipam", "routes"), [{"dst": "x"}]),
    ("route-no-dst", "bridge", ("ipam", "routes"), [{"gw": "10.42.0.1"}]),
    ("route-gw-garbage", "bridge", ("ipam", "routes"), [{"dst": "0.0.0.0/0", "gw": "x"}]),
    ("route-not-object", "bridge", ("ipam", "routes"), ["0.0.0.0/0"]),
    ("route-v6", "bridge", ("ipam", "routes"), [{"dst": "::/0"}]),
    ("routes-flannel", "flannel", ("ipam", "routes"), [{"dst": "192.168.0.0/16"}]),
    ("datadir-relative", "bridge", ("ipam", "dataDir"), "var/lib/cni"),
    ("datadir-dotdot", "bridge", ("ipam", "dataDir"), "/var/lib/../cni"),
    ("datadir-dot", "bridge", ("ipam", "dataDir"), "/var/./cni"),
    ("datadir-nul", "bridge", ("ipam", "dataDir"), "/var/\0cni"),
    ("datadir-long", "bridge", ("ipam", "dataDir"), "/x" * 2001),
    ("datadir-4000", "bridge", ("ipam", "dataDir"), "/" + "a/" * 1999 + "b"),
    ("datadir-component-255", "bridge", ("ipam", "dataDir"), "/" + "c" * 255),
    ("datadir-component-256", "bridge", ("ipam", "dataDir"), "/" + "c" * 256),
    ("datadir-long-relative", "bridge", ("ipam", "dataDir"), "r" * 150),
    ("datadir-long-dotdot", "bridge", ("ipam", "dataDir"), "/" + "d" * 150 + "/.."),
    ("datadir-empty", "bridge", ("ipam", "dataDir"), ""),
    ("logfile-relative", "bridge", ("logFile",), "weft.log"),
    ("logfile-long", "bridge", ("logFile",), LONG),
    ("subnetfile-relative", "flannel", ("subnetFile",), "subnet.env"),
    ("subnetfile-empty", "flannel", ("subnetFile",), ""),
    ("mtu-small", "bridge", ("mtu",), 67),
    ("mtu-min", "bridge", ("mtu",), 68),
    ("mtu-big", "bridge", ("mtu",), 65536),
    ("mtu-delegate", "flannel", ("delegate", "mtu"), 9000),
    ("bridge-name-bad", "bridge", ("bridge",), "a b"),
    ("bridge-name-long", "bridge", ("bridge",), "b" * 16),
    ("bridge-empty", "bridge", ("bridge",), ""),
    ("lock-timeout-negative", "bridge", ("lockTimeout",), -1),
    ("lock-timeout-zero", "bridge", ("lockTimeout",), 0),
    ("lock-timeout-huge", "bridge", ("lockTimeout",), 86401),
    ("lock-timeout-max", "bridge", ("lockTimeout",), 86400),
    ("lock-timeout-float", "bridge", ("lockTimeout",), 2.5),
    ("log-level-bad", "bridge", ("logLevel",), "loud"),
    ("dns-nameserver-garbage", "bridge", ("dns", "nameservers"), ["x"]),
    ("dns-nameserver-int", "bridge", ("dns", "nameservers"), [1]),
    ("dns-search-int", "bridge", ("dns", "search"), [1]),
    ("dns-options-int", "bridge", ("dns", "options"), [1]),
    ("dns-empty", "bridge", ("dns",), {}),
    ("dns-delegate", "flannel", ("delegate", "dns"), {"nameservers": ["10.0.0.1"]}),
    ("va-not-objects", "bridge", ("cni.dev/valid-attachments",), ["x"]),
    ("va-no-ifname", "bridge", ("cni.dev/valid-attachments",), [{"containerID": "a"}]),
    ("va-no-id", "bridge", ("cni.dev/valid-attachments",), [{"ifname": "eth0"}]),
    ("va-bad-id", "bridge", ("cni.dev/valid-attachments",),
     [{"containerID": "a/b", "ifname": "eth0"}]),
    ("va-bad-ifname", "bridge", ("cni.dev/valid-attachments",),
     [{"containerID": "a", "ifname": "a/b"}]),
    ("va-empty", "bridge", ("cni.dev/valid-attachments",), []),
    ("ipmasq-flannel", "flannel", ("delegate", "ipMasq"), True),
    ("gateway-off", "bridge", ("isGateway",), False),
    ("default-gateway-off", "bridge", ("isDefaultGateway",), False),
    ("hairpin-off", "flannel", ("delegate", "hairpinMode"), False),
    ("promisc-on", "bridge", ("promiscMode",), True),
    ("force-off", "flannel", ("delegate", "forceAddress"), False),
    ("ipam-type-other", "bridge", ("ipam", "type"), "dhcp"),
    ("typo-top", "bridge", ("isDefaultGatway",), True),
    ("typo-delegate", "flannel", ("delegate", "hairpinmode"), True),
    ("typo-ipam", "bridge", ("ipam", "rangez"), []),
    ("typo-range", "bridge", ("ipam", "ranges", 0, 0, "rangestart"), "10.42.0.9"),
    ("typo-dns", "bridge", ("dns", "nameserver"), []),
    ("unknown-far", "bridge", ("zzzzzzzzzzzz",), 1),
    ("delegates", "flannel", ("delegates",), {}),
    ("subnetfile-key-case", "bridge", ("subnetfile",), "/x"),
    ("route-dst-host-bits", "bridge", ("ipam", "routes"), [{"dst": "192.168.7.1/16"}]),
    ("route-gw-other-family", "bridge", ("ipam", "routes"),
     [{"dst": "192.168.0.0/16", "gw": "2001:db8::1"}]),
    ("datadir-4000-chars", "bridge", ("ipam", "dataDir"), "/" + "d/" * 1999 + "e"),
    ("datadir-4001-chars", "bridge", ("ipam", "dataDir"), "/" + "d/" * 2000),
    ("lock-timeout-one", "bridge", ("lockTimeout",), 1),
    ("lock-timeout-half", "bridge", ("lockTimeout",), 0.5),
    ("flannel-no-gateway-keys", "flannel", ("delegate",), {"isDefaultGateway": False}),
    ("flannel-gateway-off", "flannel", ("delegate",),
     {"isDefaultGateway": False, "isGateway": False}),
]


def _set(conf: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    conf = copy.deepcopy(conf)
    parent: Any = conf
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = copy.deepcopy(value)
    return conf


def answer(conf: dict[str, Any], subnet: Any, whole: bool) -> dict[str, Any]:
    """The error, or the parsed NetConf (``whole``: its repr; else a digest of it, for the
    wrong-type table's many accepted cases)."""
    out: dict[str, Any] = {"shape": shape_reason(conf), "warnings": config_warnings(conf)}
    try:
        parsed = repr(parse_netconf(conf, subnet))
        out["netconf"] = parsed if whole else hashlib.sha256(parsed.encode()).hexdigest()[:16]
    except CNIError as e:
        out["error"] = [e.code, e.msg, e.details]
    return out


def inputs() -> dict[str, tuple[dict[str, Any], Any]]:
    table: dict[str, tuple[dict[str, Any], Any]] = {}
    subnet = parse_subnet_file(SUBNET_TEXT, "/x/subnet.env")
    for shape in sorted(wrongtypes.FULL):
        base = wrongtypes.build(shape, ("name",), "cbr0", FILL)
        table[f"{shape}:as-is"] = (base, subnet)
        if shape == "flannel":
            table["flannel:no-subnet-file"] = (base, None)
    seen: set[tuple[str, tuple[str | int, ...]]] = set()
    for shape, path, tname, value in wrongtypes.cases():
        if tname == "null" or (shape, path) in seen:
            continue  # one wrong type per field (tests/unit/test_jsondecode.py walks them all)
        seen.add((shape, path))
        table[f"{wrongtypes.case_id(shape, path)}={tname}"] = (
            wrongtypes.build(shape, path, value, FILL), subnet)
    for label, shape, path, value in VALUES:
        base = wrongtypes.build(shape, ("name",), "cbr0", FILL)
        table[label] = (_set(base, path, value), subnet)
    nameless = wrongtypes.build("bridge", ("name",), "cbr0", FILL)
    del nameless["name"]
    table["name-absent"] = (nameless, subnet)
    return table


def current() -> dict[str, Any]:
    """Computed afresh by each test: a cached answer would outlive the code that gave it
    (mutmut forks its mutant runs from a process that already ran the tests)."""
    return {label: answer(conf, subnet, "=" not in label)
            for label, (conf, subnet) in inputs().items()}


def test_config_answers_match_the_reviewed_table() -> None:
    got = current()
    if os.environ.get("WEFT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text("{\n" + ",\n".join(
            f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(got.items())
        ) + "\n}\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want), "inputs changed: regenerate and review the table"
    wrong = {k: (want[k], got[k]) for k in want if json.loads(json.dumps(got[k])) != want[k]}
    assert not wrong, json.dumps(dict(list(wrong.items())[:5]), indent=1)[:6000]
    # the control: the table holds accepted configs, refused ones of several codes, and
    # warnings, so it can tell the difference
    codes = {a["error"][0] for a in got.values() if "error" in a}
    assert len([a for a in got.values() if "netconf" in a]) > 20
    assert {1, 7} <= codes
    assert sum(1 for a in got.values() if a["warnings"]) > 5


def test_a_subnet_file_without_ipmasq_or_mtu_leaves_the_bridge_masquerading() -> None:
    """parse_subnet_file refuses a file without FLANNEL_IPMASQ or FLANNEL_MTU; a SubnetFile
    without them, built directly, gets the bridge's own masquerade and no MTU."""
    subnet = SubnetFile((ipaddress.ip_network("10.42.0.0/16"),),
                        ipaddress.IPv4Interface("10.42.3.1/24"), None, None, None)
    conf = {"cniVersion": "1.0.0", "name": "cbr0", "type": "weft", "delegate": {}}
    got = parse_netconf(conf, subnet)
    assert (got.ip_masq, got.mtu) == (True, None)
