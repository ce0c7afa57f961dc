"""Bridge and veth: the kernel half of ADD, DEL and CHECK, over ``cni.netlink``.

``ensure_*`` helpers are idempotent: create, accept EEXIST, re-read, verify the type.
"""

from __future__ import annotations

import contextlib

from cni.errors import CheckFailed, InvalidConfig, InvalidEnv, NetlinkFailure
from cni.netlink import Exists, Link, LinkNotFound, Netlink
from cni.netlink import Route as NlRoute
from cni.plan import AddPlan
from cni.types import IPInterface, Result, Route


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
        link = nl.link_get(name) or link
    return link


def ensure_bridge_addresses(
    nl: Netlink, bridge: Link, wanted: tuple[IPInterface, ...], force: bool
) -> list[IPInterface]:
    """Put the gateway address(es) on the bridge. Another address of the same family (a
    stale one after the node's subnet changed) is replaced with ``forceAddress`` and is an
    error without it, as in the reference bridge plugin. Returns the addresses replaced."""
    moved: list[IPInterface] = []
    if not wanted:
        return moved
    present = [a.address for a in nl.addrs(bridge.ifindex)]
    for want in wanted:
        if want in present:
            continue
        for have in present:
            if have.version != want.version or have.ip.is_link_local or have in wanted:
                continue
            if not force:
                raise InvalidConfig(
                    f"{bridge.name} already has an IP address different from {want}",
                    f"found {have}; set forceAddress to replace it",
                )
            with contextlib.suppress(LinkNotFound):
                nl.addr_del(bridge.ifindex, have)
                moved.append(have)
        with contextlib.suppress(Exists):
            nl.addr_add(bridge.ifindex, want)
    return moved


def create_veth(
    host: Netlink, pod: Netlink, plan: AddPlan, pod_netns_fd: int, bridge: Link
) -> Link:
    """Create the pair with the pod end born inside the pod netns as ``plan.ifname``."""
    if pod.link_get(plan.ifname) is not None:
        raise InvalidEnv(
            f"interface {plan.ifname} already exists in the container's network namespace",
            "CNI_IFNAME must name a new interface",
        )
    try:
        host.veth_add(plan.host_veth, plan.ifname, pod_netns_fd, plan.mtu, bridge.ifindex)
    except Exists:
        # Our deterministic host name is taken: a leftover of an ADD for this very
        # (container, ifname) that died before it could record anything. It is ours.
        stale = host.link_get(plan.host_veth)
        if stale is None or stale.kind != "veth":
            raise
        host.link_del(stale.ifindex)
        host.veth_add(plan.host_veth, plan.ifname, pod_netns_fd, plan.mtu, bridge.ifindex)
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
    return pod.link_get(plan.ifname) or link


def delete_link(nl: Netlink, name: str, kind: str | None = "veth") -> bool:
    """Best effort: True when something was deleted, False when it was already gone.
    Only a link of ``kind`` is deleted: a stale or forged record can never take the
    bridge (or anything else that is not a veth) down with it."""
    link = nl.link_get(name)
    if link is None or (kind is not None and link.kind != kind):
        return False
    try:
        nl.link_del(link.ifindex)
    except LinkNotFound:
        return False
    return True


# ---- CHECK ----------------------------------------------------------------------------
def _route_present(want: Route, have: list[NlRoute], oif: int) -> bool:
    for r in have:
        if r.dst != want.dst or (r.oif is not None and r.oif != oif):
            continue
        if want.gw is None or r.gateway == want.gw:
            return True
    return False


def check_attachment(
    host: Netlink,
    pod: Netlink,
    prev: Result,
    bridge_name: str,
    host_veth: str,
    ifname: str,
    netns: str,
    hairpin: bool,
    mtu: int | None,
) -> None:
    """Compare prevResult and config with the kernel; raise CheckFailed naming the drift."""
    bridge = host.link_get(bridge_name)
    if bridge is None or bridge.kind != "bridge":
        raise CheckFailed(f"bridge {bridge_name} not found")
    pod_ifaces = [i for i in prev.interfaces if i.sandbox]
    if not any(i.name == ifname for i in pod_ifaces):
        raise CheckFailed(f"prevResult has no interface {ifname} with a sandbox")
    want_pod = next(i for i in pod_ifaces if i.name == ifname)
    if want_pod.sandbox != netns:
        raise CheckFailed(
            f"interface {ifname} sandbox mismatch",
            f"prevResult {want_pod.sandbox}, CNI_NETNS {netns}",
        )
    pod_link = pod.link_get(ifname)
    if pod_link is None:
        raise CheckFailed(f"interface {ifname} not found in {netns}")
    if want_pod.mac and pod_link.mac.lower() != want_pod.mac.lower():
        raise CheckFailed(
            f"interface {ifname} MAC changed", f"want {want_pod.mac}, have {pod_link.mac}"
        )
    if mtu and pod_link.mtu != mtu:
        raise CheckFailed(f"interface {ifname} MTU is {pod_link.mtu}, want {mtu}")
    if not pod_link.up:
        raise CheckFailed(f"interface {ifname} is down")
    # Only our own host veth: later plugins of a chain add interfaces of their own
    # (bandwidth's ifb device) to the result, and those are theirs to check.
    if not any(i.name == host_veth for i in prev.interfaces):
        raise CheckFailed(f"prevResult does not list the host veth {host_veth}")
    hl = host.link_get(host_veth)
    if hl is None:
        raise CheckFailed(f"host veth {host_veth} not found")
    if hl.master != bridge.ifindex:
        raise CheckFailed(f"host veth {host_veth} is not attached to {bridge_name}")
    if hairpin and not hl.hairpin:
        raise CheckFailed(f"host veth {host_veth} has hairpin mode off")
    have_addrs = {a.address for a in pod.addrs(pod_link.ifindex)}
    for ip in prev.ips:
        if ip.address not in have_addrs:
            raise CheckFailed(f"address {ip.address} not found on {ifname}")
    for version in sorted({r.dst.version for r in prev.routes}):
        have = pod.routes(version)
        for r in prev.routes:
            if r.dst.version == version and not _route_present(r, have, pod_link.ifindex):
                via = f" via {r.gw}" if r.gw else ""
                raise CheckFailed(f"route {r.dst}{via} not found in {netns}")
