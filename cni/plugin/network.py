"""One network's state on a node, shared by the handlers, CNI GC and the operator CLI: the
loaders (subnet file, boot id), ``Network`` (its stores and locks), the teardown both
halves of DEL, GC and reclaim apply, the one GC path (``collect``), ADD's reclaim and the
holdings STATUS and the exhaustion error count with."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import NamedTuple

from cni.linux import sysctl
from cni.linux.netlink import Netlink
from cni.linux.netns import NetnsGone, entered, identity_at, open_netns
from cni.plugin import bridge
from cni.plugin.config import (
    NetConf,
)
from cni.plugin.plan import (
    NETNS_GONE,
    NETNS_OTHER,
    Teardown,
    is_stale,
    netns_state,
    orphan_records,
    plan_teardown,
)
from cni.protocol.dispatch import Request
from cni.protocol.log import Log
from cnispec.errors import (
    CNIError,
    InvalidConfig,
    IOFailure,
    TryAgainLater,
    os_error,
)
from cnispec.ip import IPAddress
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
def as_text(data: bytes) -> str:
    """File bytes as text mode reads them: UTF-8 (strict), every line break a newline."""
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _read_text(path: str) -> str:
    """A small file as text mode would read it (``as_text``), with one open and reads to
    the end instead of Python's text ``open`` (several more syscalls for its checks)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return as_text(b"".join(chunks))


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


def boot_id() -> str:
    if known_boot_id is not None:
        return known_boot_id
    return sysctl.read_path(BOOT_ID_PATH, "reading the boot id")


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
