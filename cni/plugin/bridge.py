"""Bridge and veth: the kernel half of ADD, DEL and CHECK, over ``cni.linux.netlink``. Boundary.

``ensure_*`` helpers are idempotent: create, accept EEXIST, re-read, verify the type.
"""

from __future__ import annotations

import contextlib

from cni.linux.netlink import Exists, KernelRoute, Link, Netlink, NotFound
from cni.plugin.check import Expected, Observed
from cni.plugin.plan import AddPlan, bridge_address_conflicts
from cnispec.errors import InvalidConfig, InvalidEnv, NetlinkFailure
from cnispec.ip import IPInterface


class BridgeConflict(InvalidConfig):
    """The configured bridge name is taken by something that is not a bridge."""


def ensure_bridge(nl: Netlink, name: str, mtu: int | None, promisc: bool) -> Link:
    link = nl.link_get(name)
    if link is None:
        with contextlib.suppress(Exists):  # a concurrent creator won: re-read, verify below
            nl.bridge_add(name, mtu)
        link = nl.link_get(name)
        if link is None:
            raise NetlinkFailure(f"bridge {name} vanished right after creation")
    if link.kind != "bridge":
        raise BridgeConflict(f"{name!r} already exists but is not a bridge", f"kind={link.kind}")
    if (mtu and link.mtu != mtu) or not link.up or (promisc and not link.promisc):
        nl.link_set(
            link.ifindex,
            up=True,
            mtu=mtu if mtu and link.mtu != mtu else None,
            promisc=True if promisc else None,
        )
        # what the kernel acknowledged, without asking again: nothing else of it changed
        link = link._replace(up=True, mtu=mtu or link.mtu, promisc=link.promisc or promisc)
    return link


def ensure_bridge_addresses(
    nl: Netlink, bridge: Link, wanted: tuple[IPInterface, ...], force: bool
) -> list[IPInterface]:
    """Put the gateway address(es) on the bridge. An address in the way of one
    (``plan.bridge_address_conflicts``: another IPv4 address, e.g. a stale one after the
    node's subnet changed, or an overlapping IPv6 one) is replaced with ``forceAddress``
    and is an error without it, as in the reference bridge plugin. Returns the addresses
    replaced."""
    moved: list[IPInterface] = []
    if not wanted:
        return moved
    present = [a.address for a in nl.addrs(bridge.ifindex)]
    for want in wanted:
        if want in present:
            continue
        for have in present:
            if have in wanted or have in moved or not bridge_address_conflicts(have, want):
                continue
            if not force:
                raise InvalidConfig(
                    f"{bridge.name} already has an IP address different from {want}",
                    f"found {have}; set forceAddress to replace it",
                )
            with contextlib.suppress(NotFound):
                nl.addr_del(bridge.ifindex, have)
                moved.append(have)
        with contextlib.suppress(Exists):
            nl.addr_add(bridge.ifindex, want)
    return moved


def create_veth(
    host: Netlink, pod: Netlink, plan: AddPlan, pod_netns_fd: int, bridge: Link
) -> Link:
    """Create the pair with the pod end born inside the pod netns as ``plan.ifname``.

    Either name being taken fails the creation as a whole (EEXIST, nothing made), so which
    one is only asked then: the pod's interface (the runtime's mistake), else our host
    name (a leftover of ours, replaced). Returns the host end as created: its index, MAC
    and peer index (its master and hairpin may predate the enslaving)."""
    try:
        link = host.veth_add(plan.host_veth, plan.ifname, pod_netns_fd, plan.mtu, bridge.ifindex)
    except Exists:
        if pod.link_get(plan.ifname) is not None:
            raise InvalidEnv(
                f"interface {plan.ifname} already exists in the container's network namespace",
                "CNI_IFNAME must name a new interface",
            ) from None
        # Our deterministic host name is taken: a leftover of an ADD for this very
        # (container, ifname) that died before it could record anything. It is ours.
        stale = host.link_get(plan.host_veth)
        if stale is None or stale.kind != "veth":
            raise
        host.link_del(stale.ifindex)
        link = host.veth_add(plan.host_veth, plan.ifname, pod_netns_fd, plan.mtu, bridge.ifindex)
    if link is None:  # a kernel that does not echo the new link
        link = host.link_get(plan.host_veth)
    if link is None:
        raise NetlinkFailure(f"veth {plan.host_veth} vanished right after creation")
    if plan.hairpin:
        host.set_hairpin(link.ifindex, True)
    return link


def configure_pod(pod: Netlink, plan: AddPlan) -> Link:
    """Addresses, link up, routes on the pod interface."""
    link = pod.link_get(plan.ifname)
    if link is None:
        raise NetlinkFailure(f"{plan.ifname} not found in the container after creation")
    for a in plan.addresses:
        pod.addr_add(link.ifindex, a.address)
    pod.link_set(link.ifindex, up=True)
    for r in plan.routes:
        with contextlib.suppress(Exists):  # e.g. the kernel's own on-link subnet route
            pod.route_add(r.dst, r.gw, link.ifindex)
    return link._replace(up=True)  # acknowledged; its name, index and MAC stay as read


def delete_link(nl: Netlink, name: str, kind: str | None = "veth") -> bool:
    """Best effort: True when something was deleted, False when it was already gone.
    Only a link of ``kind`` is deleted: a stale or forged record can never take the
    bridge (or anything else that is not a veth) down with it."""
    link = nl.link_get(name)
    if link is None or (kind is not None and link.kind != kind):
        return False
    try:
        nl.link_del(link.ifindex)
    except NotFound:
        return False
    return True


# ---- CHECK ----------------------------------------------------------------------------
def observe(host: Netlink, pod: Netlink, exp: Expected) -> Observed:
    """What the kernel shows of the attachment CHECK expects (compared in ``cni.plugin.check``)."""
    pod_link = pod.link_get(exp.ifname)
    addrs: frozenset[IPInterface] = frozenset()
    routes: tuple[KernelRoute, ...] = ()
    veth: Link | None = None
    if pod_link is not None:
        addrs = frozenset(a.address for a in pod.addrs(pod_link.ifindex))
        routes = tuple(r for v in exp.route_versions for r in pod.routes(v))
        if pod_link.peer:  # the host end, by the pod end's peer index (not by name)
            veth = host.link_by_index(pod_link.peer)
    return Observed(
        bridge=host.link_get(exp.bridge),
        host_veth=veth,
        pod_link=pod_link,
        pod_addrs=addrs,
        pod_routes=routes,
    )
