"""The decisions of every command, without I/O: what ADD puts in the kernel, what DEL, GC
and reclaim take down, which attachments are stale, which ones GC collects. Pure: values
in (config, records, reservations, what the caller observed), plans out; the command
handlers (``cni.plugin.handlers``) load, call these, and apply the result.

Public API (also what operator tooling builds on):

* ``plan_add(conf, container_id, ifname, allocations) -> AddPlan`` and ``build_result``;
* ``attachment_record(plan, container_id, netns, boot_id, pod) -> Attachment``;
* ``plan_teardown(conf, container_id, ifname, netns, record, reserved, store_used)
  -> Teardown | None``: what removing one attachment takes, None for nothing;
* ``netns_state(record, seen) -> str``: what the record's netns path names now (the
  namespace ADD recorded, another one, nothing);
* ``is_stale(record, netns_seen) -> bool``: may this attachment be
  reclaimed (its pod cannot exist any more)? The caller tears it down;
* ``plan_gc(valid, reservations, records) -> GCPlan``: what a CNI GC collects;
* ``bridge_address_conflicts(have, want) -> bool``: which bridge addresses a new gateway
  address replaces (forceAddress) or is refused for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import NamedTuple

from cni.plugin.config import NetConf
from cni.protocol.spec import PodRef
from cni.protocol.types import DNS, Interface, IPConfig, Result, Route
from cnispec.digest import sha256_hex, sha512_hex
from cnispec.ip import IPAddress, IPInterface
from ipam.allocator import Allocation
from ipam.records import Attachment, NetnsId
from ipam.store import Reservation

DEFAULT_V4 = ipaddress.ip_network("0.0.0.0/0")
DEFAULT_V6 = ipaddress.ip_network("::/0")


def host_veth_name(container_id: str, ifname: str) -> str:
    """Deterministic host-side veth name (15 chars), so DEL and crash recovery find it."""
    digest = sha256_hex(f"{container_id}\0{ifname}".encode())
    return "veth" + digest[:11]


def masq_chain(network: str, container_id: str) -> str:
    """Per-container masquerade chain, named as the reference bridge plugin names it
    (``CNI-`` + sha512 of network name and container id, 28 characters): weft and the
    reference then remove each other's rules, whichever DELs a pod."""
    return ("CNI-" + sha512_hex(f"{network}{container_id}".encode()))[:28]


def masq_comment(network: str, container_id: str) -> str:
    """The reference's rule comment. Both names match ``cnispec.rules.ID_PATTERN``, so
    quoting them needs no escapes (the reference quotes with Go's %q)."""
    return f'name: "{network}" id: "{container_id}"'


class AddPlan(NamedTuple):
    bridge: str
    mtu: int | None
    host_veth: str
    ifname: str
    addresses: tuple[Allocation, ...]
    bridge_addresses: tuple[IPInterface, ...]  # gateway/prefix on the bridge (isGateway)
    routes: tuple[Route, ...]  # as installed in the pod (and reported): every gw filled in
    hairpin: bool
    promisc: bool
    force_address: bool
    ip_masq: bool

    @property
    def versions(self) -> frozenset[int]:
        """The address families the pod gets."""
        return frozenset(a.address.version for a in self.addresses)


def plan_add(conf: NetConf, container_id: str, ifname: str, allocs: list[Allocation]) -> AddPlan:
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
    plan: AddPlan,
    container_id: str,
    netns: str,
    boot_id: str,
    pod: PodRef,
    netns_id: NetnsId | None = None,
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
        netns_id=netns_id,
    )


def bridge_address_conflicts(have: IPInterface, want: IPInterface) -> bool:
    """Does ``have``, already on the bridge, stand in the way of gateway ``want`` (replaced
    under forceAddress, an error without it)? As the reference's ``ensureAddr``: any other
    IPv4 address does (a bridge serves one IPv4 subnet); an IPv6 address only when its
    subnet overlaps ``want``'s (a bridge may carry several IPv6 prefixes: SLAAC, ULA, ...)."""
    if have == want or have.version != want.version:
        return False
    return want.version == 4 or have.network.overlaps(want.network)


# ---- teardown: DEL, GC and reclaim -------------------------------------------------------
class Teardown(NamedTuple):
    """What removing one attachment takes, in this order: the host veth (which takes its
    pod end with it), the pod interface where only the netns can tell, the masquerade
    rules, then the store's reservations and record."""

    container_id: str
    ifname: str
    host_veth: str  # always the deterministic name: a record is data, never trusted to name it
    pod_netns: str  # also delete ``ifname`` in this netns ("" when the host veth is enough)
    masq_versions: frozenset[int]
    masq_guessed: bool  # versions guessed, not recorded: no iptables at all means no rule
    release: bool  # the store holds something of it


def plan_teardown(
    conf: NetConf,
    container_id: str,
    ifname: str,
    netns: str,
    record: Attachment | None,
    reserved: list[IPAddress],
    store_used: bool,
) -> Teardown | None:
    """Plan the removal of (container_id, ifname) from its record and reservations.

    * recorded or reserved: the host veth by name; the pod end also inside ``netns`` when
      there is no record (host-local made the reservation: the veth may not be ours); the
      masquerade rules of every family it used, if the record (else the config) says so;
    * neither, in a store that was never used (wiped, or a fresh data dir): whatever the
      deterministic names can still find, rules of both families included;
    * neither, in a used store: nothing to do (None) — a DEL repeated or for nothing.
    """
    host_veth = host_veth_name(container_id, ifname)
    if record is None and not reserved:
        if store_used:
            return None
        return Teardown(container_id, ifname, host_veth, netns, frozenset({4, 6}), True, False)
    versions = {ip.version for ip in reserved} | (record.versions if record else set())
    masq = record.ip_masq if record is not None else conf.ip_masq
    return Teardown(
        container_id,
        ifname,
        host_veth,
        netns if record is None else "",
        frozenset(versions if masq else ()),
        False,
        True,
    )


NETNS_SAME = "exists"  # the path names the namespace ADD recorded (or, unrecorded, any)
NETNS_GONE = "gone"
NETNS_OTHER = "another netns"  # the path names a namespace other than the one ADD recorded


def netns_state(record: Attachment, seen: NetnsId | None) -> str:
    """What ``record.netns`` names now, given ``seen``, the identity of the namespace the
    path names (None: it names none). A record without an identity (written before weft
    recorded one) is judged by the path alone."""
    if seen is None:
        return NETNS_GONE
    if record.netns_id is not None and seen != record.netns_id:
        return NETNS_OTHER
    return NETNS_SAME


def is_stale(record: Attachment | None, netns_seen: Callable[[str], NetnsId | None]) -> bool:
    """An attachment whose recorded netns is gone, in this boot or an earlier one, or
    whose path now names another namespace (a reused pid or netns name): its pod cannot
    exist, so ADD may reclaim its address and ``weft gc`` releases it. ``netns_seen``
    gives the identity of the namespace a path names, None when it names none.

    Without a record (host-local's reservation, or one whose record is corrupt) there is
    nothing to judge by: not stale. A netns path that still names the recorded namespace
    keeps it, whatever boot it was recorded in (a runtime may keep one across a reboot)."""
    if record is None:
        return False
    if not record.netns:
        return True
    return netns_state(record, netns_seen(record.netns)) != NETNS_SAME


class GCPlan(NamedTuple):
    """What a CNI GC collects: host-local's legacy id-only reservations (no ifname to
    tear down by) of containers not valid any more, released directly; and every
    attachment not in the runtime's valid list, torn down."""

    release_legacy: tuple[IPAddress, ...]
    teardown: tuple[tuple[str, str], ...]  # (container id, ifname), sorted


def plan_gc(
    valid: set[tuple[str, str]], reservations: list[Reservation], records: list[Attachment]
) -> GCPlan:
    owners = {(r.container_id, r.ifname) for r in reservations if r.ifname}
    owners |= {(a.container_id, a.ifname) for a in records}
    valid_ids = {cid for cid, _ in valid}
    legacy = tuple(r.ip for r in reservations if not r.ifname and r.container_id not in valid_ids)
    return GCPlan(legacy, tuple(sorted(owners - valid)))


def orphan_records(
    records: list[Attachment],
    reservations: list[Reservation],
    reservation_file_exists: Callable[[IPAddress], bool],
) -> list[tuple[str, str]]:
    """weft's records of attachments whose reservations are gone, as (container id, ifname):
    released by someone who knows nothing of ``.weft/`` (the reference's DEL of a pod weft
    made). Nothing holds an address for them any more, so the record, its lock file and
    whatever it names in the kernel go. A record with an address whose file is there but
    could not be read is not one: that reservation may still be its own."""
    held = {(r.container_id, r.ifname) for r in reservations}
    held_ids = {r.container_id for r in reservations if not r.ifname}  # legacy id-only
    owned = {r.ip for r in reservations}
    return [
        (a.container_id, a.ifname)
        for a in records
        if (a.container_id, a.ifname) not in held
        and a.container_id not in held_ids
        and all(ip.ip in owned or not reservation_file_exists(ip.ip) for ip in a.ips)
    ]
