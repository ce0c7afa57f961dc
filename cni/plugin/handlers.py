"""The command handlers: load → plan → apply → print.

The decisions are pure and live elsewhere (``cni.plugin.plan`` for ADD, teardown, staleness and
GC, ``cni.plugin.check`` for CHECK); a handler loads what they need, calls them and applies the
result. Every ADD side effect registers its undo on an ``ExitStack`` right after it
happens; on success the stack is dropped (``pop_all``), on any failure it unwinds, so a
failed ADD leaves no veth, no reservation and no rule. Locks (``ipam.lock``): the
attachment's own lock for the whole command, so ADD/DEL/CHECK of one attachment are
all-or-nothing and ordered; the network lock only around the store (and the bridge), so
the kernel work of different pods runs side by side. What the handlers share with CNI GC
and the operator CLI (loaders, ``Network``, teardown, reclaim, ``collect``) is
``cni.plugin.network``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from cni.linux import sysctl
from cni.linux.netlink import Netlink
from cni.linux.netns import entered, identity_of_fd, open_netns
from cni.plugin import bridge, check
from cni.plugin.config import (
    NetConf,
    assign_requested,
    config_warnings,
    parse_netconf,
    requested_ips,
    shape_reason,
    subnet_file_path,
)
from cni.plugin.network import (
    Key,
    Network,
    Reclaimer,
    apply_teardown_kernel,
    apply_teardown_store,
    boot_id,
    collect,
    exhaustion_details,
    holdings,
    open_pod_netlink,
    plan_teardown_of,
    read_subnet_file,
)
from cni.plugin.plan import (
    attachment_record,
    build_result,
    plan_add,
    plan_gc,
)
from cni.protocol.dispatch import Request
from cni.protocol.log import Log
from cni.protocol.spec import pod_ref
from cnispec.errors import (
    CheckFailed,
    CNIError,
    DuplicateAllocation,
    InvalidConfig,
    IOFailure,
    NotAvailable,
    RangeExhausted,
    TryAgainLater,
)
from cnispec.ip import IPAddress, IPInterface
from ipam.allocator import Allocation, Allocator, refuse_duplicate


def load_conf(req: Request, *, need_subnet: bool) -> NetConf:
    for warning in config_warnings(req.conf):  # before parsing: a typo may be why it fails
        req.log.warning(warning)
    req.log.info(shape_reason(req.conf))
    path = subnet_file_path(req.conf)
    subnet = read_subnet_file(path, need_subnet) if path else None
    return parse_netconf(req.conf, subnet)


# ---- ADD --------------------------------------------------------------------------------
def cmd_add(req: Request) -> dict[str, Any]:
    env, conf = req.env, load_conf(req, need_subnet=True)
    if not conf.ipam.range_sets:
        raise InvalidConfig(
            "invalid network configuration: ipam",
            f"no IP ranges configured; read as the {shape_reason(req.conf)}",
        )
    requested = requested_ips(req.conf, env.args)
    net = Network.of(conf)
    cid, ifname = env.container_id, env.ifname
    with ExitStack() as held, Undo(req.log) as undo:
        pod_fd = open_netns(env.netns)
        held.callback(os.close, pod_fd)
        held.enter_context(alock := net.attachment_lock(cid, ifname))
        undo.undo(alock.remove)  # a failed ADD leaves no lock file either
        req.checkpoint("attachment-locked")
        host = held.enter_context(Netlink.open())
        pod = held.enter_context(open_pod_netlink(pod_fd, env.netns))
        current_boot = boot_id()
        with net.lock(), Undo(req.log) as store_undo:  # the store, and the bridge it serves
            reclaimer = Reclaimer(net, current_boot, (cid, ifname), req.log)
            _refuse_duplicate(net, cid, ifname, reclaimer)
            allocs = _allocate(net, cid, ifname, reclaimer, store_undo, requested)
            plan = plan_add(conf, cid, ifname, allocs)
            k8s = pod_ref(env.args)
            netns_id = identity_of_fd(pod_fd)
            net.records.put(attachment_record(plan, cid, env.netns, current_boot, k8s, netns_id))
            store_undo.undo(net.records.delete, cid, ifname)
            br = bridge.ensure_bridge(host, plan.bridge, plan.mtu, plan.promisc)
            _own_routes(plan.bridge, req.log)
            moved = bridge.ensure_bridge_addresses(
                host, br, plan.bridge_addresses, plan.force_address
            )
            _warn_moved(net, req.log, plan.bridge, moved, plan.bridge_addresses)
            # from here on its undo needs the network lock again; it runs last, so the
            # record outlives every kernel object it describes
            undo.undo(_undo_store, net, req, store_undo.pop_all())
        req.checkpoint("reserved")
        veth = bridge.create_veth(host, pod, plan, pod_fd, br)
        undo.undo(bridge.delete_link, host, plan.host_veth)
        _own_routes(plan.host_veth, req.log)
        req.checkpoint("veth")
        versions = plan.versions
        with entered(pod_fd, env.netns):
            _pod_sysctls(plan.ifname, versions)
        pod_link = bridge.configure_pod(pod, plan)
        req.checkpoint("configured")
        if conf.is_gateway:
            _forwarding(versions)
        if plan.ip_masq:
            from cni.linux import masq  # subprocess: only with ipMasq

            undo.undo(masq.teardown, conf.name, cid, versions)
            for a in allocs:
                masq.setup(conf.name, cid, a.address)
        req.checkpoint("masq")
        br = host.link_get(plan.bridge) or br
        result = build_result(plan, br.mac, veth.mac, pod_link.mac, env.netns, conf.dns)
        undo.pop_all()
    net.report_problems(req)
    req.log.info(f"ADD {cid}/{ifname}: {', '.join(str(a.address) for a in allocs)}")
    return result.to_dict(conf.cni_version)


class Undo(ExitStack):
    """A failed ADD's undos, run last first. An undo that fails is logged and the rest
    still run: the runtime is told the ADD's own error, and what an undo could not remove
    is the DEL's (which a runtime sends after a failed ADD) or GC's to release."""

    def __init__(self, log: Log | None = None) -> None:  # pop_all() makes one with no log
        super().__init__()
        self.log = log

    def undo(self, fn: Callable[..., object], *args: object) -> None:
        log = self.log

        def guarded() -> None:
            try:
                fn(*args)
            except Exception as e:  # the ADD's own error is the one that matters
                if log is not None:
                    log.warning(f"undo {getattr(fn, '__qualname__', fn)} failed: {e}")

        self.callback(guarded)


def _undo_store(net: Network, req: Request, pending: ExitStack) -> None:
    """Release a failed ADD's reservation and record. Should the network lock not come in
    time, they stay, consistent with a kernel already cleaned: the DEL a runtime sends
    after a failed ADD (or GC) releases them, and the ADD's own error is the one reported."""
    try:
        net.locked(pending.close)
    except CNIError as e:
        req.log.warning(f"undo left the reservation and record for DEL to release: {e}")


def _refuse_duplicate(net: Network, cid: str, ifname: str, reclaimer: Reclaimer) -> None:
    """(cid, ifname) must hold nothing yet — leftovers from before a reboot are reclaimed
    first. Checked before any undo exists: a refused ADD must not free a live address."""
    held = net.store.get_by_id(cid, ifname)
    if held and (cid, ifname) in reclaimer.reclaim((cid, ifname)):
        held = net.store.get_by_id(cid, ifname)
    refuse_duplicate(held, cid, ifname)


def _allocate(
    net: Network,
    cid: str,
    ifname: str,
    reclaimer: Reclaimer,
    undo: Undo,
    requested: tuple[IPAddress, ...],
) -> list[Allocation]:
    """One address per range set: the one requested for it (``IP=`` in CNI_ARGS, the
    ``ips`` capability), else the next free one; errors worded as host-local's."""
    allocs: list[Allocation] = []
    wanted, unplaced = assign_requested(net.conf.ipam.range_sets, requested)
    for i, rs in enumerate(net.conf.ipam.range_sets):
        try:
            got = Allocator(rs, net.store, str(i)).get(cid, ifname, wanted[i], reclaim=reclaimer)
        except RangeExhausted as e:
            raise RangeExhausted(e.msg, exhaustion_details(net, rs)) from None
        except (InvalidConfig, DuplicateAllocation) as e:  # the address requested for rs
            raise type(e)(f"failed to allocate for range {i}: {e.msg}", e.details) from None
        allocs.append(got)
        if len(allocs) == 1:  # (cid, ifname) held nothing before (checked by the caller)
            undo.undo(net.store.release_by_id, cid, ifname)
    if unplaced:
        raise InvalidConfig(
            "failed to allocate all requested IPs: " + " ".join(str(ip) for ip in unplaced),
            "no range set holds them: "
            + ", ".join(rs.describe() for rs in net.conf.ipam.range_sets),
        )
    return allocs


def _pod_sysctls(ifname: str, versions: frozenset[int]) -> None:
    """Inside the pod netns: announce the new address on link-up (arp_notify) and skip
    IPv6 duplicate address detection, whose address is unique by allocation."""
    if 4 in versions:
        sysctl.write(f"net/ipv4/conf/{ifname}/arp_notify", "1")
    if 6 in versions:
        sysctl.write(f"net/ipv6/conf/{ifname}/accept_dad", "0")


def _own_routes(ifname: str, log: Log) -> None:
    """accept_ra=0 on a node-side interface weft made: weft owns its routes, a router
    advertisement on the pod network must not add any (as the reference does, even for
    IPv4-only pods). Best effort, as there: a node without IPv6 has no such sysctl.
    Written without reading it first, as the reference writes it: accept_ra is a plain
    value with no side effect on write, so writing what is there already changes nothing,
    and a write that fails is only logged either way."""
    try:
        sysctl.write(f"net/ipv6/conf/{ifname}/accept_ra", "0")
    except CNIError as e:
        log.info(f"accept_ra of {ifname} left as it is: {e}")


def _forwarding(versions: frozenset[int]) -> None:
    if 4 in versions:
        sysctl.ensure("net/ipv4/ip_forward", "1")
    if 6 in versions:
        sysctl.ensure("net/ipv6/conf/all/forwarding", "1")


def _warn_moved(
    net: Network,
    log: Log,
    bridge_name: str,
    moved: list[IPInterface],
    wanted: tuple[IPInterface, ...],
) -> None:
    """forceAddress took an old gateway off the bridge: the pods still on that subnet have
    lost their gateway. Say how many, so the operator knows what to recreate."""
    for old in moved:
        new = ", ".join(str(w) for w in wanted if w.version == old.version)
        left = sum(1 for r in net.store.reservations() if r.ip in old.network)
        log.warning(
            f"forceAddress: moved {bridge_name} from {old} to {new}; {left} "
            f"pod{'s' if left != 1 else ''} still on {old.network} lost their gateway: "
            "delete them so they are recreated (`weft ls` lists them)"
        )


# ---- DEL --------------------------------------------------------------------------------
def cmd_del(req: Request) -> None:
    env, conf = req.env, load_conf(req, need_subnet=False)
    net = Network.of(conf)
    cid, ifname = env.container_id, env.ifname
    lock = net.attachment_lock(cid, ifname)
    with lock:
        req.checkpoint("del-locked")
        with net.lock():
            reserved = net.store.get_by_id(cid, ifname)
            t = plan_teardown_of(net, cid, ifname, env.netns, reserved)
        if t is not None:
            apply_teardown_kernel(net, t)
            req.checkpoint("torn-down")
            # What (cid, ifname) holds was listed above; while its lock is held no weft
            # command adds to it (an ADD of it waits, GC and reclaim skip it), so the
            # release removes those files (each read again first) without another search.
            with net.lock():
                apply_teardown_store(net, t, reserved)
        lock.remove()  # the attachment is gone, so is its lock file
    req.log.info(f"DEL {cid}/{ifname}")
    return None


# ---- CHECK ------------------------------------------------------------------------------
def cmd_check(req: Request) -> None:
    env, conf = req.env, load_conf(req, need_subnet=True)
    exp = check.plan_check(conf, env.container_id, env.ifname, env.netns)
    net = Network.of(conf)
    with ExitStack() as held:
        pod_fd = open_netns(env.netns)
        held.callback(os.close, pod_fd)
        alock = held.enter_context(net.attachment_lock(env.container_id, env.ifname))
        with net.lock():
            reserved = frozenset(net.store.get_by_id(env.container_id, env.ifname))
            ours = net.records.get(env.container_id, env.ifname) is not None
        if not ours:
            # weft did not make this attachment (the reference did, or nobody): a lock file
            # left now would outlive it, as nothing of weft's deletes it
            held.callback(alock.remove)
        with Netlink.open() as host, open_pod_netlink(pod_fd, env.netns) as pod:
            seen = bridge.observe(host, pod, exp)
        masq_present: frozenset[int] = frozenset()
        if exp.ip_masq:
            from cni.linux import masq

            masq_present = frozenset(
                ip.address.version
                for ip in exp.prev.ips
                if masq.present(conf.name, env.container_id, ip.address)
            )
    found = check.drifts(exp, seen._replace(reserved=reserved, masq=masq_present))
    if found:
        first, rest = found[0], found[1:]
        details = "; ".join(filter(None, [first.details] + [d.what for d in rest]))
        raise CheckFailed(first.what, details)
    return None


# ---- STATUS -----------------------------------------------------------------------------
def cmd_status(req: Request) -> None:
    try:
        conf = load_conf(req, need_subnet=True)
    except (TryAgainLater, IOFailure, InvalidConfig) as e:
        raise NotAvailable(f"cannot add pods: {e.msg}", e.details) from None
    if not conf.ipam.range_sets:
        raise NotAvailable("cannot add pods: no IP ranges configured")
    net = Network.of(conf)
    if not net.store.exists():
        return None
    for rs in conf.ipam.range_sets:
        held, stale, _ = holdings(net, rs)
        if held - stale >= rs.capacity:  # ADD reclaims the stale ones: they count as free
            raise NotAvailable(
                f"cannot add pods: no IP addresses available in range set {rs.describe()}",
                exhaustion_details(net, rs),
            )
    return None


# ---- GC ---------------------------------------------------------------------------------
def cmd_gc(req: Request) -> None:
    conf = load_conf(req, need_subnet=False)
    if conf.valid_attachments is None:
        return None
    net = Network.of(conf)
    if not net.store.exists():
        return None
    valid = frozenset(conf.valid_attachments)

    def decide() -> list[Key]:
        gc = plan_gc(set(valid), net.store.reservations(), net.records.all())
        for ip in gc.release_legacy:
            net.store.release(ip)
        return list(gc.teardown)

    done = collect(net, decide, keep=valid, checkpoint=req.checkpoint)
    for cid, ifname in done.busy:
        req.log.info(f"GC skipped {cid}/{ifname}: a command on it is running")
    for t in done.released:
        req.log.info(f"GC released {t.container_id}/{t.ifname}")
    net.report_problems(req)
    if done.failed:
        errors = "; ".join(f"{t.container_id}/{t.ifname}: {e}" for t, e in done.failed)
        raise IOFailure("GC could not release every stale attachment", errors)
    return None


HANDLERS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc}
