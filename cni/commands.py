"""The command handlers: load → plan → apply → print.

Every side effect registers its undo on an ``ExitStack`` right after it happens; on
success the stack is dropped (``pop_all``), on any failure it unwinds, so a failed ADD
leaves no veth, no reservation and no rule. One ``FileLock`` per command, held for the
whole command, makes ADD/DEL/CHECK/GC of one network mutually exclusive on the node (a
concurrent ADD and DEL of the same container end fully there or fully gone).
"""

from __future__ import annotations

import contextlib
import os
from contextlib import ExitStack
from typing import Any

from cni import bridge, sysctl
from cni.config import NetConf, config_warnings, parse_netconf, shape_reason, subnet_file_path
from cni.dispatch import Request
from cni.errors import (
    CheckFailed,
    CNIError,
    DuplicateAllocation,
    InvalidConfig,
    IOFailure,
    NotAvailable,
    RangeExhausted,
    TryAgainLater,
)
from cni.log import Log
from cni.netlink import Netlink
from cni.netns import NetnsGone, entered, open_netns
from cni.plan import Allocated, attachment_record, build_result, host_veth_name, plan_add
from cni.spec import pod_ref
from cni.stale import RECLAIMABLE, UNJUDGEABLE, judge
from cni.types import IPInterface
from ipam.allocator import Allocator
from ipam.attachments import Attachment, AttachmentStore
from ipam.disk import DiskStore
from ipam.lock import FileLock
from ipam.ranges import RangeSet
from ipam.store import Reservation
from ipam.subnetfile import SubnetFile, parse_subnet_file

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


# ---- loading ----------------------------------------------------------------------------
def read_subnet_file(path: str, required: bool) -> SubnetFile | None:
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            text = f.read()
    except FileNotFoundError:
        if required:
            raise TryAgainLater(
                "flannel has not written the subnet file yet", f"{path} does not exist"
            ) from None
        return None
    except (OSError, UnicodeDecodeError) as e:
        if required:
            raise IOFailure("cannot read the subnet file", f"{path}: {e}") from None
        return None
    try:
        return parse_subnet_file(text, path)
    except InvalidConfig:
        if required:
            raise
        return None


def load_conf(req: Request, *, need_subnet: bool) -> NetConf:
    for warning in config_warnings(req.conf):  # before parsing: a typo may be why it fails
        req.log.warning(warning)
    req.log.info(shape_reason(req.conf))
    path = subnet_file_path(req.conf)
    subnet = read_subnet_file(path, need_subnet) if path else None
    conf = parse_netconf(req.conf, subnet)
    req.log.configure(conf.log_file, conf.log_level)
    return conf


def boot_id() -> str:
    with open(BOOT_ID_PATH, encoding="ascii") as f:
        return f.read().strip()


def open_pod_netlink(fd: int, path: str) -> Netlink:
    with entered(fd, path):
        return Netlink.open()


# ---- teardown shared by DEL, GC and reclaim -------------------------------------------
def teardown(
    store: DiskStore,
    records: AttachmentStore,
    conf: NetConf,
    container_id: str,
    ifname: str,
    netns: str,
    host: Netlink | None,
) -> None:
    """Remove one attachment: host veth (which takes the pod end with it), masquerade rule,
    reservation(s), record. Best effort for what is already gone; raises only when
    something that is there could not be removed."""
    record = records.get(container_id, ifname)
    reserved = store.get_by_id(container_id, ifname)
    if record is None and not reserved:
        return
    nl = host or Netlink.open()
    try:
        bridge.delete_link(nl, host_veth_name(container_id, ifname))  # = the record's hostVeth
        if record is None and netns:  # a reservation host-local made: find the pod end
            _delete_in_netns(netns, ifname)
    finally:
        if host is None:
            nl.close()
    versions: set[int] = {ip.version for ip in reserved}
    if record is not None:
        versions |= record.versions
    masq_versions = versions if (record.ip_masq if record else conf.ip_masq) else set()
    if masq_versions:
        from cni import masq  # subprocess: only when there is a rule to remove

        masq.teardown(conf.name, container_id, masq_versions)
    store.release_by_id(container_id, ifname)
    records.delete(container_id, ifname)


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


def _judge(records: AttachmentStore, r: Reservation) -> tuple[str, Attachment | None]:
    """cni.stale's rule applied to one reservation (host-local's legacy id-only record has
    no ifname, hence no weft record: never ours to judge)."""
    record = records.get(r.container_id, r.ifname) if r.ifname else None
    exists = record is not None and bool(record.netns) and os.path.exists(record.netns)
    return judge(record, exists), record


def _stale(
    store: DiskStore,
    records: AttachmentStore,
    conf: NetConf,
    current_boot: str,
    r: Reservation,
    log: Log,
) -> bool:
    """Reclaim an attachment whose recorded netns is gone, in this boot or an earlier one:
    no pod can use its address any more."""
    verdict, record = _judge(records, r)
    if verdict != RECLAIMABLE or record is None:
        return False
    teardown(store, records, conf, r.container_id, r.ifname, "", None)
    pod = f" (pod {record.pod_namespace}/{record.pod_name})" if record.pod_name else ""
    boot = "this boot" if record.boot_id == current_boot else "an earlier boot"
    log.warning(
        f"reclaimed {r.ip} from {r.container_id}/{r.ifname}{pod}: its netns {record.netns} "
        f"(recorded in {boot}) is gone, so no pod can use it"
    )
    return True


def _holdings(store: DiskStore, records: AttachmentStore, rs: RangeSet) -> tuple[int, int, int]:
    """(held, reclaimable, unjudgeable) addresses of range set ``rs``: what ADD could use
    is its capacity minus held plus reclaimable. CNI STATUS and the exhaustion error both
    count with this."""
    held = stale = unjudgeable = 0
    for r in store.reservations():
        if rs.contains(r.ip) is None:
            continue
        held += 1
        verdict, _ = _judge(records, r)
        stale += verdict == RECLAIMABLE
        unjudgeable += verdict == UNJUDGEABLE
    return held, stale, unjudgeable


def _exhaustion_details(store: DiskStore, records: AttachmentStore, rs: RangeSet) -> str:
    held, stale, unjudgeable = _holdings(store, records, rs)
    return (
        f"range set {rs.describe()}: {held} of {rs.capacity} addresses held in {store.dir} "
        f"({stale} stale, {unjudgeable} host-local records weft cannot judge); "
        "`weft ls` shows who holds them, `weft gc` releases the leaked ones"
    )


def _report_problems(store: DiskStore, records: AttachmentStore, req: Request) -> None:
    """Foreign or corrupt files in the store are reported, never trusted, never fatal."""
    for problem in store.problems + records.problems:
        req.log.warning(f"store: {problem}")


# ---- ADD --------------------------------------------------------------------------------
def cmd_add(req: Request) -> dict[str, Any]:
    env, conf = req.env, load_conf(req, need_subnet=True)
    if not conf.ipam.range_sets:
        raise InvalidConfig(
            "invalid network configuration: ipam",
            f"no IP ranges configured; read as the {shape_reason(req.conf)}",
        )
    store = DiskStore(conf.ipam.data_dir, conf.name)
    records = AttachmentStore(store.dir)
    with ExitStack() as held, ExitStack() as undo:
        pod_fd = open_netns(env.netns)
        held.callback(os.close, pod_fd)
        held.enter_context(FileLock(store.lock_path, conf.lock_timeout))
        host = held.enter_context(Netlink.open())
        pod = held.enter_context(open_pod_netlink(pod_fd, env.netns))
        current_boot = boot_id()
        _refuse_duplicate(store, records, conf, env.container_id, env.ifname, current_boot, req.log)
        allocs = _allocate(
            store, records, conf, env.container_id, env.ifname, current_boot, undo, req.log
        )
        plan = plan_add(conf, env.container_id, env.ifname, allocs)
        k8s = pod_ref(env.args)
        records.put(attachment_record(plan, env.container_id, env.netns, current_boot, k8s))
        undo.callback(records.delete, env.container_id, env.ifname)
        req.checkpoint("reserved")
        br = bridge.ensure_bridge(host, plan.bridge, plan.mtu, plan.promisc)
        moved = bridge.ensure_bridge_addresses(host, br, plan.bridge_addresses, plan.force_address)
        _warn_moved(store, req.log, plan.bridge, moved, plan.bridge_addresses)
        veth = bridge.create_veth(host, pod, plan, pod_fd, br)
        undo.callback(bridge.delete_link, host, plan.host_veth)
        req.checkpoint("veth")
        versions: set[int] = {a.address.version for a in allocs}
        with entered(pod_fd, env.netns):
            _pod_sysctls(plan.ifname, versions)
        pod_link = bridge.configure_pod(pod, plan)
        req.checkpoint("configured")
        if conf.is_gateway:
            _forwarding(versions)
        if plan.ip_masq:
            from cni import masq  # subprocess: only with ipMasq

            undo.callback(masq.teardown, conf.name, env.container_id, versions)
            for a in allocs:
                masq.setup(conf.name, env.container_id, a.address)
        req.checkpoint("masq")
        br = host.link_get(plan.bridge) or br
        result = build_result(plan, br.mac, veth.mac, pod_link.mac, env.netns, conf.dns)
        undo.pop_all()
    _report_problems(store, records, req)
    req.log.info(
        f"ADD {env.container_id}/{env.ifname}: {', '.join(str(a.address) for a in allocs)}"
    )
    return result.to_dict(conf.cni_version)


def _refuse_duplicate(
    store: DiskStore,
    records: AttachmentStore,
    conf: NetConf,
    cid: str,
    ifname: str,
    current_boot: str,
    log: Log,
) -> None:
    """(cid, ifname) must hold nothing yet — leftovers from before a reboot are reclaimed
    first. Checked before any undo exists: a refused ADD must not free a live address."""
    held = store.get_by_id(cid, ifname)
    stale = [
        _stale(store, records, conf, current_boot, Reservation(ip, cid, ifname), log) for ip in held
    ]
    if any(stale):
        held = store.get_by_id(cid, ifname)
    if held:
        raise DuplicateAllocation(
            f"{held[0]} has been allocated to {cid}/{ifname}, duplicate allocation is not allowed",
            "run DEL first",
        )


def _allocate(
    store: DiskStore,
    records: AttachmentStore,
    conf: NetConf,
    cid: str,
    ifname: str,
    current_boot: str,
    undo: ExitStack,
    log: Log,
) -> list[Allocated]:
    allocs: list[Allocated] = []
    for i, rs in enumerate(conf.ipam.range_sets):
        try:
            got = Allocator(rs, store, str(i)).get(
                cid, ifname, reclaim=lambda r: _stale(store, records, conf, current_boot, r, log)
            )
        except RangeExhausted as e:
            raise RangeExhausted(e.msg, _exhaustion_details(store, records, rs)) from None
        if not allocs:  # (cid, ifname) held nothing before (checked by the caller)
            undo.callback(store.release_by_id, cid, ifname)
        allocs.append(Allocated(got.address, got.gateway))
    return allocs


def _pod_sysctls(ifname: str, versions: set[int]) -> None:
    """Inside the pod netns: announce the new address on link-up (arp_notify) and skip
    IPv6 duplicate address detection, whose address is unique by allocation."""
    if 4 in versions:
        sysctl.write(f"net/ipv4/conf/{ifname}/arp_notify", "1")
    if 6 in versions:
        sysctl.write(f"net/ipv6/conf/{ifname}/accept_dad", "0")


def _forwarding(versions: set[int]) -> None:
    if 4 in versions:
        sysctl.ensure("net/ipv4/ip_forward", "1")
    if 6 in versions:
        sysctl.ensure("net/ipv6/conf/all/forwarding", "1")


def _warn_moved(
    store: DiskStore,
    log: Log,
    bridge_name: str,
    moved: list[IPInterface],
    wanted: tuple[IPInterface, ...],
) -> None:
    """forceAddress took an old gateway off the bridge: the pods still on that subnet have
    lost their gateway. Say how many, so the operator knows what to recreate."""
    for old in moved:
        new = ", ".join(str(w) for w in wanted if w.version == old.version)
        left = sum(1 for r in store.reservations() if r.ip in old.network)
        log.warning(
            f"forceAddress: moved {bridge_name} from {old} to {new}; {left} "
            f"pod{'s' if left != 1 else ''} still on {old.network} lost their gateway: "
            "delete them so they are recreated (`weft ls` lists them)"
        )


# ---- DEL --------------------------------------------------------------------------------
def cmd_del(req: Request) -> None:
    env, conf = req.env, load_conf(req, need_subnet=False)
    store = DiskStore(conf.ipam.data_dir, conf.name)
    records = AttachmentStore(store.dir)
    with FileLock(store.lock_path, conf.lock_timeout):
        if records.get(env.container_id, env.ifname) or store.get_by_id(
            env.container_id, env.ifname
        ):
            teardown(store, records, conf, env.container_id, env.ifname, env.netns, None)
        elif not store.was_used():
            _sweep_unrecorded(conf, env.container_id, env.ifname, env.netns)
    req.log.info(f"DEL {env.container_id}/{env.ifname}")
    return None


def _sweep_unrecorded(conf: NetConf, container_id: str, ifname: str, netns: str) -> None:
    """The store was wiped (or never written): remove what the deterministic names can
    still find — host veth, the pod's ifname, the masquerade chain."""
    with Netlink.open() as host:
        bridge.delete_link(host, host_veth_name(container_id, ifname))
    if netns:
        _delete_in_netns(netns, ifname)
    from cni import masq

    for version in (4, 6):
        with contextlib.suppress(masq.ToolMissing):  # no iptables for it: no rule either
            masq.teardown(conf.name, container_id, {version})


# ---- CHECK ------------------------------------------------------------------------------
def cmd_check(req: Request) -> None:
    env, conf = req.env, load_conf(req, need_subnet=True)
    prev = conf.prev_result
    if prev is None:
        raise InvalidConfig(
            "invalid network configuration: prevResult", "CHECK requires prevResult"
        )
    store = DiskStore(conf.ipam.data_dir, conf.name)
    pod_fd = open_netns(env.netns)
    try:
        with FileLock(store.lock_path, conf.lock_timeout):
            reserved = set(store.get_by_id(env.container_id, env.ifname))
            for ip in prev.ips:
                if ip.address.ip not in reserved:
                    owner = f"{env.container_id}/{env.ifname}"
                    raise CheckFailed(f"address {ip.address.ip} is not reserved for {owner}")
            with Netlink.open() as host, open_pod_netlink(pod_fd, env.netns) as pod:
                record = AttachmentStore(store.dir).get(env.container_id, env.ifname)
                host_veth = (
                    record.host_veth if record else host_veth_name(env.container_id, env.ifname)
                )
                bridge.check_attachment(
                    host,
                    pod,
                    prev,
                    conf.bridge,
                    host_veth,
                    env.ifname,
                    env.netns,
                    conf.hairpin_mode,
                    conf.mtu,
                )
            if conf.ip_masq:
                from cni import masq

                for version in {ip.address.version for ip in prev.ips}:
                    if not masq.present(conf.name, env.container_id, version):
                        raise CheckFailed(
                            f"masquerade rule for {env.container_id} (IPv{version}) not found"
                        )
    finally:
        os.close(pod_fd)
    return None


# ---- STATUS -----------------------------------------------------------------------------
def cmd_status(req: Request) -> None:
    try:
        conf = load_conf(req, need_subnet=True)
    except (TryAgainLater, IOFailure, InvalidConfig) as e:
        raise NotAvailable(f"cannot add pods: {e.msg}", e.details) from None
    if not conf.ipam.range_sets:
        raise NotAvailable("cannot add pods: no IP ranges configured")
    store = DiskStore(conf.ipam.data_dir, conf.name)
    if not store.exists():
        return None
    records = AttachmentStore(store.dir)
    for rs in conf.ipam.range_sets:
        held, stale, _ = _holdings(store, records, rs)
        if held - stale >= rs.capacity:  # ADD reclaims the stale ones: they count as free
            raise NotAvailable(
                f"cannot add pods: no IP addresses available in range set {rs.describe()}",
                _exhaustion_details(store, records, rs),
            )
    return None


# ---- GC ---------------------------------------------------------------------------------
def cmd_gc(req: Request) -> None:
    conf = load_conf(req, need_subnet=False)
    if conf.valid_attachments is None:
        return None
    valid = set(conf.valid_attachments)
    store = DiskStore(conf.ipam.data_dir, conf.name)
    records = AttachmentStore(store.dir)
    if not store.exists():
        return None
    with FileLock(store.lock_path, conf.lock_timeout), Netlink.open() as host:
        reservations = store.reservations()
        owners = {(r.container_id, r.ifname) for r in reservations if r.ifname}
        owners |= {(a.container_id, a.ifname) for a in records.all()}
        valid_ids = {cid for cid, _ in valid}
        errors: list[str] = []
        for r in reservations:  # host-local's legacy id-only records match any ifname
            if not r.ifname and r.container_id not in valid_ids:
                store.release(r.ip)
        for cid, ifname in sorted(owners - valid):
            try:
                # no netns: a recorded attachment goes by its host veth, and for a foreign
                # (host-local) reservation GC has no netns to look in
                teardown(store, records, conf, cid, ifname, "", host)
                req.log.info(f"GC released {cid}/{ifname}")
            except CNIError as e:
                errors.append(f"{cid}/{ifname}: {e}")
        _report_problems(store, records, req)
        if errors:
            raise IOFailure("GC could not release every stale attachment", "; ".join(errors))
    return None


HANDLERS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc}
