"""The command handlers: load → plan → apply → print.

The decisions are pure and live elsewhere (``cni.plugin.plan`` for ADD, teardown, staleness and
GC, ``cni.plugin.check`` for CHECK); a handler loads what they need, calls them and applies the
result. Every ADD side effect registers its undo on an ``ExitStack`` right after it
happens; on success the stack is dropped (``pop_all``), on any failure it unwinds, so a
failed ADD leaves no veth, no reservation and no rule. Locks (``ipam.lock``): the
attachment's own lock for the whole command, so ADD/DEL/CHECK of one attachment are
all-or-nothing and ordered; the network lock only around the store (and the bridge), so
the kernel work of different pods runs side by side.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any, NamedTuple

from cni.linux import sysctl
from cni.linux.netlink import Netlink
from cni.linux.netns import NetnsGone, entered, identity_at, identity_of_fd, open_netns
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
from cni.plugin.plan import (
    NETNS_GONE,
    NETNS_OTHER,
    Teardown,
    attachment_record,
    build_result,
    is_stale,
    netns_state,
    orphan_records,
    plan_add,
    plan_gc,
    plan_teardown,
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
    os_error,
    os_errors,
)
from cnispec.ip import IPAddress, IPInterface
from ipam.allocator import Allocation, Allocator, refuse_duplicate
from ipam.attachments import AttachmentStore
from ipam.disk import DiskStore
from ipam.lock import FileLock, attachment_lock, attachment_lock_keys, network_lock
from ipam.ranges import RangeSet
from ipam.records import Attachment, attachment_key
from ipam.store import Reservation
from ipam.subnetfile import SubnetFile, SubnetFileIncomplete, parse_subnet_file

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# Seams for the ``weft serve`` helper (cni.helper.server), unset on the exec path: the subnet file
# as the helper parsed it ahead of the request while ``path`` is still that file (else
# None), and the boot id it read once.
preparsed_subnet: Callable[[str], SubnetFile | None] | None = None
known_boot_id: str | None = None


# ---- loading ----------------------------------------------------------------------------
def _read_text(path: str) -> str:
    """A small file as text mode would read it (UTF-8, every line break made a newline),
    with one open and reads to the end instead of Python's text ``open`` (several more
    syscalls for its checks)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def read_subnet_file(path: str, required: bool) -> SubnetFile | None:
    if preparsed_subnet is not None and (ahead := preparsed_subnet(path)) is not None:
        return ahead
    try:
        text = _read_text(path)
    except FileNotFoundError:
        if required:
            raise TryAgainLater(
                "flannel has not written the subnet file yet", f"{path} does not exist"
            ) from None
        return None
    except OSError as e:
        if required:
            raise os_error(e, "reading the subnet file", path) from None
        return None
    except UnicodeDecodeError as e:
        if required:
            raise IOFailure("cannot read the subnet file", f"{path}: {e}") from None
        return None
    try:
        return parse_subnet_file(text, path)
    except (InvalidConfig, SubnetFileIncomplete):
        if required:
            raise
        return None


def load_conf(req: Request, *, need_subnet: bool) -> NetConf:
    for warning in config_warnings(req.conf):  # before parsing: a typo may be why it fails
        req.log.warning(warning)
    req.log.info(shape_reason(req.conf))
    path = subnet_file_path(req.conf)
    subnet = read_subnet_file(path, need_subnet) if path else None
    return parse_netconf(req.conf, subnet)


def boot_id() -> str:
    """One open, one read: Python's text ``open`` costs several more syscalls."""
    if known_boot_id is not None:
        return known_boot_id
    with os_errors("reading the boot id", BOOT_ID_PATH):
        fd = os.open(BOOT_ID_PATH, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 128)
        finally:
            os.close(fd)
    return data.decode("ascii").strip()


def open_pod_netlink(fd: int, path: str) -> Netlink:
    with entered(fd, path):
        return Netlink.open()


class Network(NamedTuple):
    """One network's configuration, its two stores (host-local's and weft's records) and
    its locks (``ipam.lock``: the attachment lock first, then the network lock)."""

    conf: NetConf
    store: DiskStore
    records: AttachmentStore

    @classmethod
    def of(cls, conf: NetConf) -> Network:
        store = DiskStore(conf.ipam.data_dir, conf.name)
        return cls(conf, store, AttachmentStore(store.dir))

    def lock(self) -> FileLock:
        """The network lock (host-local's ``lock`` file): around store work only."""
        return network_lock(self.store.lock_path, self.conf.lock_timeout)

    def attachment_lock(self, cid: str, ifname: str) -> FileLock:
        """The lock of one attachment: held for a whole command on it."""
        return attachment_lock(self.store.dir, attachment_key(cid, ifname), self.conf.lock_timeout)

    def locked(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` under the network lock (store work after the lock was let go)."""
        with self.lock():
            fn()

    def report_problems(self, req: Request) -> None:
        """Foreign or corrupt files in the store are reported, never trusted, never fatal."""
        for problem in self.store.problems + self.records.problems:
            req.log.warning(f"store: {problem}")


# ---- teardown shared by DEL, GC and reclaim -------------------------------------------
def plan_teardown_of(
    net: Network, cid: str, ifname: str, netns: str, reserved: list[IPAddress] | None = None
) -> Teardown | None:
    """Load what the store knows of (cid, ifname) and plan its removal (network lock held);
    ``reserved``: its addresses, when the caller listed them already."""
    record = net.records.get(cid, ifname)
    if reserved is None:
        reserved = net.store.get_by_id(cid, ifname)
    used = bool(record or reserved) or net.store.was_used()
    return plan_teardown(net.conf, cid, ifname, netns, record, reserved, used)


def apply_teardown_kernel(net: Network, t: Teardown) -> None:
    """The kernel half: veth(s) and masquerade rules (attachment lock held, network lock
    not needed). Best effort for what is already gone; raises only when something that is
    there could not be removed."""
    with Netlink.open() as host:
        bridge.delete_link(host, t.host_veth)
    if t.pod_netns:
        _delete_in_netns(t.pod_netns, t.ifname)
    if t.masq_versions:
        from cni.linux import masq  # subprocess: only when there is a rule to remove

        for version in sorted(t.masq_versions):
            try:
                masq.teardown(net.conf.name, t.container_id, {version})
            except masq.ToolMissing:
                if not t.masq_guessed:  # a recorded rule must go; a guessed one needs iptables
                    raise


def apply_teardown_store(
    net: Network, t: Teardown, reserved: list[IPAddress] | None = None
) -> None:
    """The store half, last (network lock held): while the record exists, a retried DEL or
    GC can finish the job. ``reserved``: the attachment's addresses as listed under its
    lock (``DiskStore.release_owned``), else the store is searched for them."""
    if t.release:
        if reserved is None:
            net.store.release_by_id(t.container_id, t.ifname)
        else:
            net.store.release_owned(t.container_id, t.ifname, reserved)
        net.records.delete(t.container_id, t.ifname)


def _delete_in_netns(netns: str, ifname: str) -> None:
    try:
        fd = open_netns(netns)
    except NetnsGone:
        return
    try:
        with open_pod_netlink(fd, netns) as pod:
            bridge.delete_link(pod, ifname)
    finally:
        os.close(fd)


def _record_of(net: Network, r: Reservation) -> Attachment | None:
    """weft's record of the attachment holding ``r`` (host-local's legacy id-only record
    has no ifname, hence no record: never ours to judge)."""
    return net.records.get(r.container_id, r.ifname) if r.ifname else None


Key = tuple[str, str]  # (container id, ifname)


class Collected(NamedTuple):
    released: list[Teardown]
    busy: list[Key]  # a command on it was running: left for next time
    failed: list[tuple[Teardown, str]]  # its kernel half could not be removed: kept


def _no_checkpoint(_: str) -> None:
    return None


def collect(
    net: Network,
    decide: Callable[[], list[Key]],
    *,
    keep: frozenset[Key] = frozenset(),
    own: Key | None = None,
    network_held: bool = False,
    checkpoint: Callable[[str], None] = _no_checkpoint,
) -> Collected:
    """The one teardown path of CNI GC, ``weft gc`` and ADD's reclaim, in ``ipam.lock``'s
    order. Under the network lock: ``decide`` names the attachments to tear down; the
    records whose reservations are gone (``plan.orphan_records``) join them unless in
    ``keep``; each one's lock is only *tried* (a busy one is in the middle of a command and
    is skipped); lock files of attachments that no longer exist are removed. Then the
    kernel half, outside the network lock; then the store half under it again, each torn
    down attachment's lock file last. ``own``: the attachment whose lock the caller holds
    already. ``network_held``: the caller holds the network lock throughout (reclaim, in
    the middle of an allocation: rare, and it finds little in the kernel)."""
    network: Callable[[], AbstractContextManager[object]] = (
        nullcontext if network_held else net.lock
    )
    busy: list[Key] = []
    with ExitStack() as claimed:
        with network():
            keys = decide()
            records = net.records.all()
            reservations = net.store.reservations()
            orphans = orphan_records(records, reservations, net.store.has_file)
            keys += [k for k in orphans if k not in keys and k not in keep]
            todo: list[tuple[FileLock | None, Teardown]] = []
            for cid, ifname in keys:
                lock = None
                if (cid, ifname) != own:
                    lock = net.attachment_lock(cid, ifname)
                    if not lock.try_acquire():
                        busy.append((cid, ifname))
                        continue
                    claimed.callback(lock.release)
                t = plan_teardown_of(net, cid, ifname, "")
                if t is not None:
                    todo.append((lock, t))
                elif lock is not None:  # nothing of it is left but its lock file
                    lock.remove()
            _remove_orphan_locks(net, records, reservations)
        checkpoint("gc-claimed")
        # no netns: a recorded attachment goes by its host veth, and for a foreign
        # (host-local) reservation there is no netns to look in
        done: list[tuple[FileLock | None, Teardown]] = []
        failed: list[tuple[Teardown, str]] = []
        for lock, t in todo:
            try:
                apply_teardown_kernel(net, t)
                done.append((lock, t))
            except CNIError as e:
                failed.append((t, str(e)))
        with network():
            for lock, t in done:
                apply_teardown_store(net, t)
                if lock is not None:
                    lock.remove()
    return Collected([t for _, t in done], busy, failed)


def _remove_orphan_locks(
    net: Network, records: list[Attachment], reservations: list[Reservation]
) -> None:
    """Lock files of attachments that no longer exist (a DEL that died, a failed ADD the
    runtime never DELs, a CHECK of a pod the reference then deleted): removed if nobody
    holds them (network lock held). The ones being torn down are held, so skipped here."""
    live = {attachment_key(a.container_id, a.ifname) for a in records}
    live |= {attachment_key(r.container_id, r.ifname) for r in reservations if r.ifname}
    for key in attachment_lock_keys(net.store.dir):
        if key in live:
            continue
        lock = attachment_lock(net.store.dir, key, 0)
        if lock.try_acquire():
            lock.remove()


class Reclaimer:
    """ADD's reclaim, as the allocator asks for it (one reservation at a time): the first
    question tears down every stale attachment at once through ``collect``; the rest are
    answered from that. The caller holds the network lock and ``own``'s lock."""

    def __init__(self, net: Network, current_boot: str, own: Key, log: Log) -> None:
        self.net, self.current_boot, self.own, self.log = net, current_boot, own, log
        self.freed: set[Key] | None = None

    def __call__(self, r: Reservation) -> bool:
        if self.freed is None:
            self.freed = self.reclaim(None)
        return (r.container_id, r.ifname) in self.freed

    def reclaim(self, only: Key | None) -> set[Key]:
        """Tear down the stale attachments (``plan.is_stale``) holding reservations, or
        only ``only``'s if given; the keys released."""
        net = self.net
        stale: dict[Key, Attachment] = {}

        def decide() -> list[Key]:
            for r in net.store.reservations():
                key = (r.container_id, r.ifname)
                if key in stale or (only is not None and key != only):
                    continue
                record = _record_of(net, r)
                if record is not None and is_stale(record, identity_at):
                    stale[key] = record
            return list(stale)

        done = collect(net, decide, own=self.own, network_held=True)
        for t, why in done.failed:  # left as it is; the other stale ones may make room
            self.log.warning(f"could not reclaim {t.container_id}/{t.ifname}: {why}")
        freed = {(t.container_id, t.ifname) for t in done.released}
        for key in freed & stale.keys():
            record = stale[key]
            pod = f" (pod {record.pod_namespace}/{record.pod_name})" if record.pod_name else ""
            boot = "this boot" if record.boot_id == self.current_boot else "an earlier boot"
            ips = ", ".join(str(ip.ip) for ip in record.ips)
            now = netns_state(record, identity_at(record.netns)) if record.netns else NETNS_GONE
            what = "names another namespace now" if now == NETNS_OTHER else "is gone"
            self.log.warning(
                f"reclaimed {ips} from {key[0]}/{key[1]}{pod}: its netns "
                f"{record.netns or '(none recorded)'} (recorded in {boot}) {what}, so no "
                "pod can use it"
            )
        return freed


def holdings(net: Network, rs: RangeSet) -> tuple[int, int, int]:
    """(held, stale, unjudgeable) addresses of range set ``rs``. ADD can use its capacity
    minus held plus stale (it reclaims those); CNI STATUS and the exhaustion error count
    with this, so they agree with ADD."""
    held = stale = unjudgeable = 0
    for r in net.store.reservations():
        if rs.contains(r.ip) is None:
            continue
        held += 1
        record = _record_of(net, r)
        unjudgeable += record is None
        stale += record is not None and is_stale(record, identity_at)
    return held, stale, unjudgeable


def exhaustion_details(net: Network, rs: RangeSet) -> str:
    held, stale, unjudgeable = holdings(net, rs)
    return (
        f"range set {rs.describe()}: {held} of {rs.capacity} addresses held in {net.store.dir} "
        f"({stale} stale, {unjudgeable} host-local records weft cannot judge); "
        "`weft ls` shows who holds them, `weft gc` releases the leaked ones"
    )


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
    with ExitStack() as held, ExitStack() as undo:
        pod_fd = open_netns(env.netns)
        held.callback(os.close, pod_fd)
        held.enter_context(alock := net.attachment_lock(cid, ifname))
        undo.callback(alock.remove)  # a failed ADD leaves no lock file either
        req.checkpoint("attachment-locked")
        host = held.enter_context(Netlink.open())
        pod = held.enter_context(open_pod_netlink(pod_fd, env.netns))
        current_boot = boot_id()
        with net.lock(), ExitStack() as store_undo:  # the store, and the bridge it serves
            reclaimer = Reclaimer(net, current_boot, (cid, ifname), req.log)
            _refuse_duplicate(net, cid, ifname, reclaimer)
            allocs = _allocate(net, cid, ifname, reclaimer, store_undo, requested)
            plan = plan_add(conf, cid, ifname, allocs)
            k8s = pod_ref(env.args)
            netns_id = identity_of_fd(pod_fd)
            net.records.put(attachment_record(plan, cid, env.netns, current_boot, k8s, netns_id))
            store_undo.callback(net.records.delete, cid, ifname)
            br = bridge.ensure_bridge(host, plan.bridge, plan.mtu, plan.promisc)
            _own_routes(plan.bridge, req.log)
            moved = bridge.ensure_bridge_addresses(
                host, br, plan.bridge_addresses, plan.force_address
            )
            _warn_moved(net, req.log, plan.bridge, moved, plan.bridge_addresses)
            # from here on its undo needs the network lock again; it runs last, so the
            # record outlives every kernel object it describes
            undo.callback(_undo_store, net, req, store_undo.pop_all())
        req.checkpoint("reserved")
        veth = bridge.create_veth(host, pod, plan, pod_fd, br)
        undo.callback(bridge.delete_link, host, plan.host_veth)
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

            undo.callback(masq.teardown, conf.name, cid, versions)
            for a in allocs:
                masq.setup(conf.name, cid, a.address)
        req.checkpoint("masq")
        br = host.link_get(plan.bridge) or br
        result = build_result(plan, br.mac, veth.mac, pod_link.mac, env.netns, conf.dns)
        undo.pop_all()
    net.report_problems(req)
    req.log.info(f"ADD {cid}/{ifname}: {', '.join(str(a.address) for a in allocs)}")
    return result.to_dict(conf.cni_version)


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
    undo: ExitStack,
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
            undo.callback(net.store.release_by_id, cid, ifname)
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
