"""Config + allocations → the plan of what ADD puts in the kernel. Pure."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from cni.config import NetConf
from cni.digest import sha256_hex
from cni.spec import PodRef
from cni.types import DNS, Interface, IPAddress, IPConfig, IPInterface, Result, Route
from ipam.attachments import Attachment

DEFAULT_V4 = ipaddress.ip_network("0.0.0.0/0")
DEFAULT_V6 = ipaddress.ip_network("::/0")


def host_veth_name(container_id: str, ifname: str) -> str:
    """Deterministic host-side veth name (15 chars), so DEL and crash recovery find it."""
    digest = sha256_hex(f"{container_id}\0{ifname}".encode())
    return "veth" + digest[:11]


def masq_chain(network: str, container_id: str) -> str:
    """Per-container masquerade chain, like the reference's CNI-<hash> (28 chars max)."""
    return "WEFT-" + sha256_hex(f"{network}\0{container_id}".encode())[:20]


def masq_comment(network: str, container_id: str) -> str:
    return f"name: {network} id: {container_id}"


class Allocated(NamedTuple):
    address: IPInterface
    gateway: IPAddress


class AddPlan(NamedTuple):
    bridge: str
    mtu: int | None
    host_veth: str
    ifname: str
    addresses: tuple[Allocated, ...]
    bridge_addresses: tuple[IPInterface, ...]  # gateway/prefix on the bridge (isGateway)
    routes: tuple[Route, ...]  # as installed in the pod (and reported): every gw filled in
    hairpin: bool
    promisc: bool
    force_address: bool
    ip_masq: bool


def plan_add(conf: NetConf, container_id: str, ifname: str, allocs: list[Allocated]) -> AddPlan:
    gateways = {a.address.version: a.gateway for a in allocs}
    routes: list[Route] = []
    for r in conf.ipam.routes:
        gw = r.gw if r.gw is not None else gateways.get(r.dst.version)
        if r.dst.version in gateways:
            routes.append(Route(r.dst, gw))
    if conf.is_default_gateway:
        for version, gw in gateways.items():
            dst = DEFAULT_V4 if version == 4 else DEFAULT_V6
            routes = [r for r in routes if r.dst != dst]
            routes.append(Route(dst, gw))
    bridge_addrs: tuple[IPInterface, ...] = ()
    if conf.is_gateway:
        bridge_addrs = tuple(
            ipaddress.ip_interface(f"{a.gateway}/{a.address.network.prefixlen}") for a in allocs
        )
    return AddPlan(
        bridge=conf.bridge,
        mtu=conf.mtu,
        host_veth=host_veth_name(container_id, ifname),
        ifname=ifname,
        addresses=tuple(allocs),
        bridge_addresses=bridge_addrs,
        routes=tuple(routes),
        hairpin=conf.hairpin_mode,
        promisc=conf.promisc_mode,
        force_address=conf.force_address,
        ip_masq=conf.ip_masq,
    )


def build_result(
    plan: AddPlan,
    bridge_mac: str,
    host_mac: str,
    pod_mac: str,
    netns: str,
    dns: DNS,
) -> Result:
    """interfaces = [bridge, host veth, pod interface]; ips point at the pod interface (2)."""
    mtu = plan.mtu or 0
    interfaces = (
        Interface(plan.bridge, bridge_mac, "", mtu),
        Interface(plan.host_veth, host_mac, "", mtu),
        Interface(plan.ifname, pod_mac, netns, mtu),
    )
    ips = tuple(IPConfig(a.address, a.gateway, 2) for a in plan.addresses)
    return Result(interfaces, ips, plan.routes, dns)


def attachment_record(
    plan: AddPlan, container_id: str, netns: str, boot_id: str, pod: PodRef
) -> Attachment:
    """What DEL, GC and reboot recovery will need to undo this ADD."""
    return Attachment(
        container_id=container_id,
        ifname=plan.ifname,
        host_veth=plan.host_veth,
        netns=netns,
        boot_id=boot_id,
        ip_masq=plan.ip_masq,
        bridge=plan.bridge,
        ips=tuple(a.address for a in plan.addresses),
        pod_namespace=pod.namespace,
        pod_name=pod.name,
    )
