"""Every field of weft's config, in both shapes, with the JSON type it wants: the table the
wrong-type tests walk (in-process in tests/unit, through the binary in tests/robustness).

A path is a tuple of keys and list indices into a full config (``FULL[shape]``) that sets
every section weft reads or a runtime injects: ipam, delegate, dns, prevResult,
runtimeConfig, capabilities, args, cni.dev/valid-attachments. Paths under ``prevResult``
matter to CHECK, ``cni.dev/valid-attachments`` to GC; every other path is read by ADD.
The sandbox-specific paths (dataDir, subnetFile, logFile) are placeholders the caller fills.
"""

from __future__ import annotations

import copy
from typing import Any

Path = tuple[str | int, ...]

DATA_DIR = "@dataDir"
SUBNET_FILE = "@subnetFile"
LOG_FILE = "@logFile"
BASE_ATTACHMENT = {"containerID": "fuzz-baseline-pod", "ifname": "eth0"}

# one value of each JSON type; a field gets every one that is not its own type
SAMPLES: dict[str, Any] = {
    "null": None,
    "boolean": True,
    "integer": 7,
    "number": 1.5,
    "string": "x",
    "array": [],
    "object": {},
}
ACCEPTS = {  # what a field's type admits among SAMPLES (null: "absent", always allowed)
    "string": {"string"},
    "boolean": {"boolean"},
    "integer": {"integer"},
    "number": {"integer", "number"},
    "object": {"object"},
    "array": {"array"},
}

_DNS = {
    "nameservers": ["10.43.0.10"],
    "domain": "cluster.local",
    "search": ["svc.cluster.local"],
    "options": ["ndots:5"],
}
_PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "02:00:00:00:00:01"},
        {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/var/run/netns/x"},
    ],
    "ips": [{"address": "10.42.0.9/24", "gateway": "10.42.0.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.42.0.1"}],
    "dns": dict(_DNS),
}
_COMMON: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "name": "cbr0",
    "type": "weft",
    "logLevel": "info",
    "logFile": LOG_FILE,
    "lockTimeout": 30,
    "capabilities": {"portMappings": True, "bandwidth": True},
    "runtimeConfig": {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000},
    },
    "args": {"cni": {"labels": [{"key": "app", "value": "x"}]}},
    "prevResult": _PREV,
    "cni.dev/valid-attachments": [BASE_ATTACHMENT, {"containerID": "gone", "ifname": "eth0"}],
}
_ROUTES = [{"dst": "192.168.77.0/24", "gw": "10.42.0.1"}]

FULL: dict[str, dict[str, Any]] = {
    # k3s's flannel shape, every delegate key set
    "flannel": {
        **_COMMON,
        "subnetFile": SUBNET_FILE,
        "ipam": {"type": "host-local", "dataDir": DATA_DIR, "routes": _ROUTES},
        "delegate": {
            "bridge": "cni0",
            "hairpinMode": True,
            "forceAddress": True,
            "isDefaultGateway": True,
            "isGateway": True,
            "ipMasq": False,
            "mtu": 1450,
            "promiscMode": False,
            "dns": dict(_DNS),
        },
    },
    # the reference bridge shape with host-local's ranges
    "bridge": {
        **_COMMON,
        "bridge": "cni0",
        "isGateway": True,
        "isDefaultGateway": True,
        "forceAddress": True,
        "ipMasq": False,
        "mtu": 1450,
        "hairpinMode": True,
        "promiscMode": False,
        "dns": dict(_DNS),
        "ipam": {
            "type": "host-local",
            "dataDir": DATA_DIR,
            "ranges": [[{"subnet": "10.42.0.0/24", "rangeStart": "10.42.0.100",
                         "rangeEnd": "10.42.0.200", "gateway": "10.42.0.1"}]],
            "routes": _ROUTES,
        },
    },
    # host-local's legacy single-range form
    "bridge-legacy": {
        **_COMMON,
        "bridge": "cni0",
        "isGateway": True,
        "mtu": 1450,
        "dns": dict(_DNS),
        "ipam": {
            "type": "host-local",
            "dataDir": DATA_DIR,
            "subnet": "10.42.0.0/24",
            "rangeStart": "10.42.0.100",
            "rangeEnd": "10.42.0.200",
            "gateway": "10.42.0.1",
            "routes": _ROUTES,
        },
    },
}


def _fields(prefix: Path, value: Any, kinds: dict[Path, str]) -> None:
    if isinstance(value, dict):
        kinds[prefix] = "object"
        for k, v in value.items():
            _fields((*prefix, k), v, kinds)
    elif isinstance(value, list):
        kinds[prefix] = "array"
        for i, v in enumerate(value):
            if prefix == ("cni.dev/valid-attachments",) and i == 0:
                continue  # the baseline pod's attachment stays valid (GC must not sweep it)
            _fields((*prefix, i), v, kinds)
    elif isinstance(value, bool):
        kinds[prefix] = "boolean"
    elif isinstance(value, int):
        kinds[prefix] = "number" if prefix[-1:] == ("lockTimeout",) else "integer"
    elif isinstance(value, float):
        kinds[prefix] = "number"
    else:
        kinds[prefix] = "string"


def fields(shape: str) -> dict[Path, str]:
    """Every path of FULL[shape] (the root excluded) → the JSON type weft wants there."""
    kinds: dict[Path, str] = {}
    _fields((), FULL[shape], kinds)
    kinds.pop((), None)
    return kinds


def wrong_values(kind: str) -> dict[str, Any]:
    """The SAMPLES whose type ``kind`` does not admit (null included: it reads as absent)."""
    return {t: v for t, v in SAMPLES.items() if t not in ACCEPTS[kind]}


def command_for(path: Path) -> str:
    if path[:1] == ("prevResult",):
        return "CHECK"
    if path[:1] == ("cni.dev/valid-attachments",):
        return "GC"
    return "ADD"


def build(shape: str, path: Path, value: Any, fill: dict[str, str]) -> dict[str, Any]:
    """FULL[shape] with ``value`` at ``path`` and the placeholders replaced from ``fill``."""
    conf = copy.deepcopy(FULL[shape])
    _fill(conf, fill)
    parent: Any = conf
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = copy.deepcopy(value)
    return conf


def _fill(node: Any, fill: dict[str, str]) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in list(items):
        if isinstance(v, str) and v in fill:
            node[k] = fill[v]
        elif isinstance(v, dict | list):
            _fill(v, fill)


def cases() -> list[tuple[str, Path, str, Any]]:
    """(shape, path, type name, value) for every field of every shape and every wrong type."""
    out = []
    for shape in FULL:
        for path, kind in fields(shape).items():
            for tname, value in wrong_values(kind).items():
                out.append((shape, path, tname, value))
    return out


def case_id(shape: str, path: Path) -> str:
    return shape + ":" + ".".join(str(p) for p in path)
