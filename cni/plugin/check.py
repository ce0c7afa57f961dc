"""CHECK's decision: the attachment as ADD made it (prevResult, config, record) against what
the store and the kernel show, as a list of drifts. Pure: ``cni.plugin.bridge.observe`` and the
command handler collect the observation; nothing here does I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from cnispec.errors import InvalidConfig

if TYPE_CHECKING:
    from cni.linux.netlink import KernelRoute, Link
    from cni.plugin.config import NetConf
    from cni.protocol.types import Result, Route
    from cnispec.ip import IPAddress, IPInterface


class Expected(NamedTuple):
    container_id: str
    ifname: str
    netns: str
    bridge: str
    hairpin: bool
    mtu: int | None
    ip_masq: bool
    prev: Result

    @property
    def route_versions(self) -> list[int]:
        """The families whose routes the pod must hold (what to observe)."""
        return sorted({r.dst.version for r in self.prev.routes})


def plan_check(conf: NetConf, container_id: str, ifname: str, netns: str) -> Expected:
    if conf.prev_result is None:
        raise InvalidConfig(
            "invalid network configuration: prevResult", "CHECK requires prevResult"
        )
    return Expected(
        container_id,
        ifname,
        netns,
        conf.bridge,
        conf.hairpin_mode,
        conf.mtu,
        conf.ip_masq,
        conf.prev_result,
    )


class Observed(NamedTuple):
    """What is there. Kernel fields come from ``cni.plugin.bridge.observe``; addresses and routes
    are the pod interface's (empty when it is missing). The host veth is the link the pod
    interface names as its peer, whatever it is called: that is how the reference finds it,
    so a pod either plugin made is checked alike."""

    bridge: Link | None = None
    host_veth: Link | None = None
    pod_link: Link | None = None
    pod_addrs: frozenset[IPInterface] = frozenset()
    pod_routes: tuple[KernelRoute, ...] = ()
    reserved: frozenset[IPAddress] = frozenset()  # the store's addresses of the attachment
    masq: frozenset[int] = frozenset()  # families with the masquerade rule in place


class Drift(NamedTuple):
    what: str
    details: str = ""


def _route_present(want: Route, have: tuple[KernelRoute, ...], oif: int) -> bool:
    for r in have:
        if r.dst != want.dst or (r.oif is not None and r.oif != oif):
            continue
        if want.gw is None or r.gateway == want.gw:
            return True
    return False


def drifts(exp: Expected, obs: Observed) -> list[Drift]:
    """Every way the attachment differs from what ADD made; [] when it is intact. Ordered
    from the store outwards, so the first one names the root cause."""
    out: list[Drift] = []
    prev, ifname, owner = exp.prev, exp.ifname, f"{exp.container_id}/{exp.ifname}"
    out += [
        Drift(f"address {ip.address.ip} is not reserved for {owner}")
        for ip in prev.ips
        if ip.address.ip not in obs.reserved
    ]
    if obs.bridge is None or obs.bridge.kind != "bridge":
        out.append(Drift(f"bridge {exp.bridge} not found"))
    want_pod = next((i for i in prev.interfaces if i.sandbox and i.name == ifname), None)
    if want_pod is None:
        out.append(Drift(f"prevResult has no interface {ifname} with a sandbox"))
    elif want_pod.sandbox != exp.netns:
        out.append(
            Drift(
                f"interface {ifname} sandbox mismatch",
                f"prevResult {want_pod.sandbox}, CNI_NETNS {exp.netns}",
            )
        )
    pod = obs.pod_link
    if pod is None:
        out.append(Drift(f"interface {ifname} not found in {exp.netns}"))
    else:
        if want_pod is not None and want_pod.mac and pod.mac.lower() != want_pod.mac.lower():
            out.append(
                Drift(f"interface {ifname} MAC changed", f"want {want_pod.mac}, have {pod.mac}")
            )
        if exp.mtu and pod.mtu != exp.mtu:
            out.append(Drift(f"interface {ifname} MTU is {pod.mtu}, want {exp.mtu}"))
        if not pod.up:
            out.append(Drift(f"interface {ifname} is down"))
    if pod is not None:
        out += _host_veth_drifts(exp, obs, pod)
        out += [
            Drift(f"address {ip.address} not found on {ifname}")
            for ip in prev.ips
            if ip.address not in obs.pod_addrs
        ]
        for r in prev.routes:
            if not _route_present(r, obs.pod_routes, pod.ifindex):
                via = f" via {r.gw}" if r.gw else ""
                out.append(Drift(f"route {r.dst}{via} not found in {exp.netns}"))
    if exp.ip_masq:
        for version in sorted({ip.address.version for ip in prev.ips} - obs.masq):
            out.append(Drift(f"masquerade rule for {exp.container_id} (IPv{version}) not found"))
    return out


def _host_veth_drifts(exp: Expected, obs: Observed, pod: Link) -> list[Drift]:
    veth = obs.host_veth
    if veth is None or veth.kind != "veth" or veth.peer != pod.ifindex:
        return [Drift(f"host veth of {exp.ifname} not found", f"no veth is the peer of {pod.name}")]
    out: list[Drift] = []
    # Only this one host interface: later plugins of a chain add interfaces of their own
    # (bandwidth's ifb device) to the result, and those are theirs to check.
    if not any(i.name == veth.name and not i.sandbox for i in exp.prev.interfaces):
        out.append(Drift(f"prevResult does not list the host veth {veth.name}"))
    if obs.bridge is None or veth.master != obs.bridge.ifindex:
        out.append(Drift(f"host veth {veth.name} is not attached to {exp.bridge}"))
    if exp.hairpin and not veth.hairpin:
        out.append(Drift(f"host veth {veth.name} has hairpin mode off"))
    return out
