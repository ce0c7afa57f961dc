"""What the operator subcommands decide: which attachments are live or stale, what ``gc``
releases, how full each range is, what is wrong with the node. Pure: observations in
(``Observed``, ``NodeFacts``), decisions out; ``cni.operator.commands`` does the I/O.

The staleness rule is the one ADD's reclaim applies (``cni.plugin.plan.is_stale``), so ``weft ls``,
``weft gc``, ``weft status``, CNI STATUS and ADD agree on what an address is worth:

* **live** -- weft recorded the attachment and its netns path still names the namespace
  ADD recorded (for a record from before weft recorded one: the path still exists);
* **stale** -- weft recorded it and the namespace is gone (in this boot or an earlier
  one), or its path now names another namespace (a reused pid or netns name): no pod can
  be using the address, so ADD may reclaim it and ``gc`` releases it;
* **host-local** -- a reservation weft has no record of (written by the reference
  host-local, or by a legacy id-only record): weft cannot tell whether its pod exists, so
  it never touches it and says how to remove it by hand;
* **orphan** -- a record whose reservation someone else released (the reference's DEL of a
  pod weft made: ``cni.plugin.plan.orphan_records``): it holds no address, and ``gc`` removes it
  with its lock file and whatever it names in the kernel.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from cni.plugin.plan import NETNS_OTHER, bridge_address_conflicts, is_stale, netns_state
from cnispec.ip import IPAddress
from ipam.ranges import RangeSet
from ipam.records import Attachment, NetnsId
from ipam.subnetfile import SubnetFile

LIVE = "live"
STALE = "stale"
HOST_LOCAL = "host-local"
ORPHAN = "orphan"
THIS_BOOT = "this"
EARLIER_BOOT = "earlier"


class Observed(NamedTuple):
    """One address (or one record without a reservation) as found on the node."""

    ip: IPAddress | None  # None: a record whose reservation is already gone
    container_id: str
    ifname: str  # "" for host-local's legacy id-only reservation
    record: Attachment | None
    netns_seen: NetnsId | None  # the namespace the record's netns path names (None: none)
    veth_present: bool | None
    since: float | None  # mtime of the reservation (or record) file
    orphan: bool = False  # a record whose reservation was released (``plan.orphan_records``)


class Row(NamedTuple):
    """One line of ``weft ls``."""

    ip: str
    container_id: str
    ifname: str
    pod_namespace: str
    pod_name: str
    netns: str
    netns_exists: bool | None
    netns_state: str  # plan.NETNS_*: "exists", "gone", "another netns"; "" without a netns
    host_veth: str
    veth_present: bool | None
    boot: str  # THIS_BOOT, EARLIER_BOOT or "" (no record)
    age_seconds: int | None
    state: str  # LIVE, STALE, HOST_LOCAL or ORPHAN
    reason: str


def judge(o: Observed, current_boot: str, now: float) -> Row:
    rec = o.record
    if rec is None:
        state, boot = HOST_LOCAL, ""
        reason = "no weft record: written by host-local (or an old id-only record)"
    else:
        boot = THIS_BOOT if rec.boot_id == current_boot else EARLIER_BOOT
        seen = o.netns_seen
        if o.orphan:
            state = ORPHAN
            reason = "its reservation was released without weft (the reference plugin's DEL?)"
        elif is_stale(rec, lambda _: seen):
            state = STALE
            if rec.netns and netns_state(rec, seen) == NETNS_OTHER:
                reason = f"netns {rec.netns} names another namespace than the pod's"
            else:
                reason = f"netns {rec.netns} is gone"
            reason += " (recorded in an earlier boot)" if boot == EARLIER_BOOT else ""
        else:
            state, reason = LIVE, f"netns {rec.netns} exists"
    age = int(now - o.since) if o.since is not None and now >= o.since else None
    return Row(
        ip=str(o.ip) if o.ip is not None else "-",
        container_id=o.container_id,
        ifname=o.ifname,
        pod_namespace=rec.pod_namespace if rec else "",
        pod_name=rec.pod_name if rec else "",
        netns=rec.netns if rec else "",
        netns_exists=o.netns_seen is not None if rec and rec.netns else None,
        netns_state=netns_state(rec, o.netns_seen) if rec and rec.netns else "",
        host_veth=rec.host_veth if rec else "",
        veth_present=o.veth_present if rec else None,
        boot=boot,
        age_seconds=age,
        state=state,
        reason=reason,
    )


def rows(observed: list[Observed], current_boot: str, now: float) -> list[Row]:
    """``weft ls``: one row per address, sorted by address (records without one last)."""
    out = [judge(o, current_boot, now) for o in observed]

    def key(r: Row) -> tuple[int, int, str, str]:
        if r.ip == "-":
            return (1, 0, "", r.container_id)
        a = ipaddress.ip_address(r.ip)
        return (0, a.version, f"{int(a):040d}", r.container_id)

    return sorted(out, key=key)


class GcPlan(NamedTuple):
    release: tuple[tuple[str, str], ...]  # (container id, ifname), each once
    unjudgeable: tuple[Row, ...]  # host-local records: listed, never touched
    kept_live: int


def gc_plan(table: list[Row]) -> GcPlan:
    """Release every stale attachment and every orphan record, keep every live one, leave
    host-local ones alone. An attachment with one live row is never released, whatever its
    other rows say."""
    live = {(r.container_id, r.ifname) for r in table if r.state == LIVE}
    release: list[tuple[str, str]] = []
    for r in table:
        owner = (r.container_id, r.ifname)
        if r.state in (STALE, ORPHAN) and owner not in live and owner not in release:
            release.append(owner)
    return GcPlan(
        tuple(release),
        tuple(r for r in table if r.state == HOST_LOCAL),
        len(live),
    )


class RangeUsage(NamedTuple):
    range_set: str
    capacity: int
    live: int
    stale: int
    unjudgeable: int
    free: int

    @property
    def available(self) -> int:
        """What ADD can hand out: free addresses plus the ones its reclaim frees."""
        return self.free + self.stale


def range_usage(range_sets: tuple[RangeSet, ...], table: list[Row]) -> list[RangeUsage]:
    out = []
    for rs in range_sets:
        counts = {LIVE: 0, STALE: 0, HOST_LOCAL: 0}
        for r in table:
            if r.ip == "-":
                continue
            if rs.contains(ipaddress.ip_address(r.ip)) is not None:
                counts[r.state] += 1
        held = sum(counts.values())
        out.append(
            RangeUsage(
                rs.describe(),
                rs.capacity,
                counts[LIVE],
                counts[STALE],
                counts[HOST_LOCAL],
                max(0, rs.capacity - held),
            )
        )
    return out


class NodeFacts(NamedTuple):
    """What ``weft status`` observed."""

    subnet_file: str | None  # None: the bridge shape reads no subnet file
    subnet: SubnetFile | None
    subnet_error: str  # why the subnet file could not be read ("" when it was)
    bridge: str
    bridge_exists: bool
    bridge_kind: str | None
    bridge_addrs: tuple[str, ...]  # "a.b.c.d/nn"
    bridge_mtu: int | None
    want_addrs: tuple[str, ...]  # the gateways the config puts on the bridge
    want_mtu: int | None
    is_gateway: bool
    forwarding: tuple[tuple[int, str], ...]  # (4, "1"), (6, "0")
    usage: tuple[RangeUsage, ...]
    store_dir: str
    store_problems: tuple[str, ...]
    helper_socket: str
    helper_state: str  # "not running", "running", "not answering"


class Problem(NamedTuple):
    what: str
    fix: str


def _net(iface: str) -> str:
    return str(ipaddress.ip_interface(iface).network)


def problems(f: NodeFacts) -> list[Problem]:
    """Everything that stops (or will stop) a pod from getting a working network."""
    out: list[Problem] = []
    if f.subnet_file is not None and f.subnet is None:
        out.append(
            Problem(
                f"subnet file {f.subnet_file}: {f.subnet_error}",
                "ADD answers 'try again later' until flannel writes it: check that flannel "
                "(k3s's embedded flannel) is running and look at the k3s agent log",
            )
        )
    if f.bridge_exists and f.bridge_kind != "bridge":
        out.append(
            Problem(
                f"{f.bridge} exists but is a {f.bridge_kind or 'non-bridge'} link",
                f"remove it (ip link del {f.bridge}) or set another 'bridge' name",
            )
        )
    elif f.bridge_exists:
        for want in f.want_addrs:
            if want in f.bridge_addrs:
                continue
            w = ipaddress.ip_interface(want)
            other = [
                a for a in f.bridge_addrs if bridge_address_conflicts(ipaddress.ip_interface(a), w)
            ]
            if other:
                out.append(
                    Problem(
                        f"{f.bridge} has {', '.join(other)} but the subnet is {want} "
                        "('cni0 already has an IP address different from ...')",
                        "the node's pod subnet changed: with forceAddress (k3s's default) the "
                        f"next ADD moves {f.bridge} to {want}; without it, run "
                        f"`ip addr del {other[0]} dev {f.bridge}`; pods still on "
                        f"{_net(other[0])} lose their gateway: delete them so they are recreated",
                    )
                )
        if f.want_mtu and f.bridge_mtu and f.bridge_mtu != f.want_mtu:
            out.append(
                Problem(
                    f"{f.bridge} MTU is {f.bridge_mtu}, the config/subnet file says {f.want_mtu}",
                    "the next ADD sets the bridge's MTU; pods created before keep theirs "
                    "until they are recreated",
                )
            )
    if f.is_gateway:
        for version, value in f.forwarding:
            if value != "1":
                key = "net.ipv4.ip_forward" if version == 4 else "net.ipv6.conf.all.forwarding"
                out.append(
                    Problem(
                        f"{key} is {value or 'unreadable'}: pods cannot reach beyond the node",
                        f"`sysctl -w {key}=1` (the next ADD sets it too); find what turned "
                        "it off (a sysctl.d file, a firewall service)",
                    )
                )
    for u in f.usage:
        if u.available == 0:
            why = f"{u.live} live pods"
            if u.unjudgeable:
                why += f", {u.unjudgeable} host-local records weft cannot judge"
            out.append(
                Problem(
                    f"no IP addresses available in range set {u.range_set}: {why} hold all "
                    f"{u.capacity}",
                    "delete pods, or give the node a larger pod CIDR; `weft ls` shows who holds "
                    "what"
                    + (
                        "; remove a host-local record you know is dead with "
                        f"`rm {f.store_dir}/<ip>`"
                        if u.unjudgeable
                        else ""
                    ),
                )
            )
    for p in f.store_problems:
        out.append(
            Problem(
                f"store: {p}",
                "weft ignores this file; remove it if nothing else owns it",
            )
        )
    if f.helper_state == "not answering":
        out.append(
            Problem(
                f"helper socket {f.helper_socket} exists but nothing answers on it",
                "restart the weft helper service, or remove the stale socket",
            )
        )
    return out


def human_age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
