"""CNI result model and its conversion to and from every supported spec version. Pure."""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from cnispec.errors import DecodeFailure, InvalidConfig
from cnispec.ip import IPAddress, IPInterface, IPNetwork


class Interface(NamedTuple):
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int = 0


class IPConfig(NamedTuple):
    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None


class Route(NamedTuple):
    dst: IPNetwork
    gw: IPAddress | None = None


class DNS(NamedTuple):
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out


class Result(NamedTuple):
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = DNS()

    def to_dict(self, version: str) -> dict[str, Any]:
        """The result as ``version`` of the spec prints it (0.3.x/0.4.0 carry ips[].version)."""
        legacy = version.startswith("0.")
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            ifaces = []
            for i in self.interfaces:
                d: dict[str, Any] = {"name": i.name}
                if i.mac:
                    d["mac"] = i.mac
                if i.mtu and version == "1.1.0":
                    d["mtu"] = i.mtu
                if i.sandbox:
                    d["sandbox"] = i.sandbox
                ifaces.append(d)
            out["interfaces"] = ifaces
        if self.ips:
            ips = []
            for ip in self.ips:
                d = {}
                if legacy:
                    d["version"] = str(ip.address.version)
                d["address"] = str(ip.address)
                if ip.gateway is not None:
                    d["gateway"] = str(ip.gateway)
                if ip.interface is not None:
                    d["interface"] = ip.interface
                ips.append(d)
            out["ips"] = ips
        if self.routes:
            out["routes"] = [
                {"dst": str(r.dst), **({"gw": str(r.gw)} if r.gw is not None else {})}
                for r in self.routes
            ]
        out["dns"] = self.dns.to_dict()
        return out


def _want(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    v = obj.get(key)
    if v is not None and not isinstance(v, kind):
        raise InvalidConfig("invalid prevResult", f"{where}.{key}: expected {kind.__name__}")
    return v


def result_from_dict(obj: object) -> Result:
    """Parse a prevResult of any supported version (0.3.0 … 1.1.0)."""
    if not isinstance(obj, dict):
        raise DecodeFailure("invalid prevResult", "expected a JSON object")
    try:
        ifaces = tuple(
            Interface(
                name=str(_want(i, "name", str, "interfaces") or ""),
                mac=str(_want(i, "mac", str, "interfaces") or ""),
                sandbox=str(_want(i, "sandbox", str, "interfaces") or ""),
                mtu=int(_want(i, "mtu", int, "interfaces") or 0),
            )
            for i in (_want(obj, "interfaces", list, "prevResult") or [])
        )
        ips = []
        for ip in _want(obj, "ips", list, "prevResult") or []:
            gw = _want(ip, "gateway", str, "ips")
            idx = _want(ip, "interface", int, "ips")
            ips.append(
                IPConfig(
                    address=ipaddress.ip_interface(str(ip["address"])),
                    gateway=ipaddress.ip_address(gw) if gw else None,
                    interface=idx,
                )
            )
        routes = []
        for r in _want(obj, "routes", list, "prevResult") or []:
            gw = _want(r, "gw", str, "routes")
            routes.append(
                Route(
                    ipaddress.ip_network(str(r["dst"]), strict=False),
                    ipaddress.ip_address(gw) if gw else None,
                )
            )
        dns_obj = _want(obj, "dns", dict, "prevResult") or {}
        dns = DNS(
            nameservers=tuple(dns_obj.get("nameservers") or ()),
            domain=str(dns_obj.get("domain") or ""),
            search=tuple(dns_obj.get("search") or ()),
            options=tuple(dns_obj.get("options") or ()),
        )
    except InvalidConfig:
        raise
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise InvalidConfig("invalid prevResult", f"{type(e).__name__}: {e}") from None
    return Result(ifaces, tuple(ips), tuple(routes), dns)
