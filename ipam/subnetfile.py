"""Parser for flannel's subnet file (``/run/flannel/subnet.env``).  Pure: takes the text.

Flannel writes shell-style ``KEY=VALUE`` lines::

    FLANNEL_NETWORK=10.42.0.0/16
    FLANNEL_SUBNET=10.42.0.1/24
    FLANNEL_IPV6_NETWORK=2001:cafe:42::/56
    FLANNEL_IPV6_SUBNET=2001:cafe:42::1/64
    FLANNEL_MTU=1450
    FLANNEL_IPMASQ=true

flannel's own CNI plugin refuses a file that lacks a network, a subnet, ``FLANNEL_MTU`` or
``FLANNEL_IPMASQ``, naming every key missing; so does this parser (:class:`SubnetFileIncomplete`,
code 11, as for a file not written yet: flanneld writes them all, so a gap means a file still
being written or one not written by flanneld, and filling it with a default would give pods
the wrong MTU or masquerading).

Accepted syntax: blank lines, ``#`` comment lines, an optional ``export`` prefix, optional
matching single or double quotes around the value.  Unknown keys are ignored (their value is
not interpreted).  Everything else that is malformed raises :class:`cnispec.errors.InvalidConfig`
whose text names the file, the line number and the key.  A known key given twice is refused
(shell would silently take the last one; for a file that decides pod addresses that is more
likely a bug than intent).

Kept cheap to import: ``ipaddress`` + ``typing`` only (no ``re``, no ``dataclasses``, which
pulls in ``inspect`` and costs ~7 ms of start-up; ``SubnetFile`` is a tuple subclass).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from cnispec.errors import InvalidConfig, TryAgainLater
from cnispec.ip import IPInterface, IPNetwork
from cnispec.rules import mtu_problem

IPv4If = ipaddress.IPv4Interface
IPv6If = ipaddress.IPv6Interface

_KEY_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_KEY_REST = _KEY_FIRST + "0123456789"
_KNOWN = (
    "FLANNEL_NETWORK",
    "FLANNEL_SUBNET",
    "FLANNEL_IPV6_NETWORK",
    "FLANNEL_IPV6_SUBNET",
    "FLANNEL_MTU",
    "FLANNEL_IPMASQ",
)


class SubnetFile(NamedTuple):
    """The parsed subnet file."""

    networks: tuple[IPNetwork, ...]  # every FLANNEL_NETWORK and FLANNEL_IPV6_NETWORK, v4 first
    subnet: IPv4If | None  # FLANNEL_SUBNET: the gateway address with the node subnet's prefix
    ipv6_subnet: IPv6If | None  # FLANNEL_IPV6_SUBNET
    mtu: int | None
    ipmasq: bool | None



class SubnetFileIncomplete(TryAgainLater):
    """A key flannel's CNI plugin requires is missing from the subnet file."""


def missing_keys(present: set[str] | dict[str, str]) -> list[str]:
    """The keys flannel's CNI plugin requires that ``present`` lacks, in its order; a
    family-pair counts as present when either of its keys is."""
    out: list[str] = []
    for keys in (
        ("FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"),
        ("FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"),
        ("FLANNEL_MTU",),
        ("FLANNEL_IPMASQ",),
    ):
        if not any(k in present for k in keys):
            out.append(" or ".join(keys))
    return out


def _bad(path: str, lineno: int, key: str, why: str) -> InvalidConfig:
    where = f"{path}:{lineno}: {key}: " if key else f"{path}:{lineno}: "
    return InvalidConfig("invalid flannel subnet file", where + why)


def _unquote(raw: str) -> str | None:
    """Strip one pair of matching quotes; None when the quoting is broken."""
    if raw[:1] in ("'", '"'):
        q = raw[0]
        if len(raw) < 2 or raw[-1] != q or q in raw[1:-1]:
            return None
        return raw[1:-1]
    if raw[-1:] in ("'", '"'):
        return None
    return raw


def _has_space(s: str) -> bool:
    return any(c.isspace() for c in s)


def _parse_networks(value: str, version: int, path: str, lineno: int, key: str) -> list[IPNetwork]:
    out: list[IPNetwork] = []
    for item in value.split(","):
        item = item.strip()
        if not item or "/" not in item:
            raise _bad(path, lineno, key, f"expected a CIDR network (list), got {value!r}")
        try:
            net = ipaddress.ip_network(item, strict=True)
        except ValueError as e:
            raise _bad(path, lineno, key, f"invalid network {item!r}: {e}") from None
        if net.version != version:
            raise _bad(path, lineno, key, f"{item} is not an IPv{version} network")
        out.append(net)
    return out


def _parse_interface(
    value: str, version: int, path: str, lineno: int, key: str
) -> IPInterface:
    if "/" not in value or "," in value or "%" in value:
        raise _bad(path, lineno, key, f"expected address/prefix, got {value!r}")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError as e:
        raise _bad(path, lineno, key, f"invalid address/prefix {value!r}: {e}") from None
    if iface.version != version:
        raise _bad(path, lineno, key, f"{value} is not an IPv{version} address/prefix")
    return iface


def parse_subnet_file(text: str, path: str = "subnet.env") -> SubnetFile:
    """Parse the subnet file text; ``path`` is used in error messages only."""
    seen: dict[str, int] = {}
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): \f, \v, ...
        s = line.strip()
        if not s or s[0] == "#":
            continue
        if s.startswith("export") and s[6:7].isspace():
            s = s[6:].lstrip()
        key, eq, raw = s.partition("=")
        if not eq:
            raise _bad(path, lineno, "", f"expected KEY=VALUE, got {line.strip()!r}")
        if not key or key[0] not in _KEY_FIRST or key.strip(_KEY_REST) or not key.isascii():
            raise _bad(path, lineno, "", f"invalid key {key!r}")
        if key not in _KNOWN:
            continue
        if key in seen:
            raise _bad(path, lineno, key, f"duplicate key (first set on line {seen[key]})")
        seen[key] = lineno
        value = _unquote(raw.strip())
        if value is None:
            raise _bad(path, lineno, key, f"unbalanced quotes in {raw.strip()!r}")
        value = value.strip()
        if not value:
            raise _bad(path, lineno, key, "empty value")
        if _has_space(value) and key not in ("FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"):
            raise _bad(path, lineno, key, f"unexpected whitespace in {value!r}")
        values[key] = value

    v4nets: list[IPNetwork] = []
    v6nets: list[IPNetwork] = []
    if "FLANNEL_NETWORK" in values:
        k = "FLANNEL_NETWORK"
        v4nets = _parse_networks(values[k], 4, path, seen[k], k)
    if "FLANNEL_IPV6_NETWORK" in values:
        k = "FLANNEL_IPV6_NETWORK"
        v6nets = _parse_networks(values[k], 6, path, seen[k], k)

    subnet: ipaddress.IPv4Interface | None = None
    ipv6_subnet: ipaddress.IPv6Interface | None = None
    if "FLANNEL_SUBNET" in values:
        k = "FLANNEL_SUBNET"
        iface = _parse_interface(values[k], 4, path, seen[k], k)
        assert isinstance(iface, ipaddress.IPv4Interface)
        subnet = iface
    if "FLANNEL_IPV6_SUBNET" in values:
        k = "FLANNEL_IPV6_SUBNET"
        iface6 = _parse_interface(values[k], 6, path, seen[k], k)
        assert isinstance(iface6, ipaddress.IPv6Interface)
        ipv6_subnet = iface6

    mtu: int | None = None
    if "FLANNEL_MTU" in values:
        k = "FLANNEL_MTU"
        v = values[k]
        if not (v.isascii() and v.isdigit()) or mtu_problem(int(v)):
            raise _bad(path, seen[k], k, str(mtu_problem(v)))
        mtu = int(v)

    ipmasq: bool | None = None
    if "FLANNEL_IPMASQ" in values:
        k = "FLANNEL_IPMASQ"
        v = values[k].lower()
        if v not in ("true", "false"):
            raise _bad(path, seen[k], k, f"expected true or false, got {values[k]!r}")
        ipmasq = v == "true"

    missing = missing_keys(values)
    if missing:
        raise SubnetFileIncomplete(
            "flannel's subnet file is incomplete", f"{path} is missing {', '.join(missing)}"
        )
    if subnet is not None:
        k = "FLANNEL_SUBNET"
        _check_within(subnet, v4nets, "FLANNEL_NETWORK", path, seen[k], k)
    if ipv6_subnet is not None:
        k = "FLANNEL_IPV6_SUBNET"
        _check_within(ipv6_subnet, v6nets, "FLANNEL_IPV6_NETWORK", path, seen[k], k)

    return SubnetFile(tuple(v4nets + v6nets), subnet, ipv6_subnet, mtu, ipmasq)


def _check_within(
    iface: IPInterface,
    nets: list[IPNetwork],
    netkey: str,
    path: str,
    lineno: int,
    key: str,
) -> None:
    sub = iface.network
    for net in nets:
        if sub.version == net.version and sub.subnet_of(net):  # type: ignore[arg-type]
            return
    have = ", ".join(str(n) for n in nets) if nets else f"no {netkey} given"
    raise _bad(path, lineno, key, f"{iface} is not inside {netkey} ({have})")
