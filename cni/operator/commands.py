"""``weft ls``, ``weft status``, ``weft gc``: the operator's side of the binary (boundary).

A person at a root shell on the node runs these (no CNI_COMMAND). They read the same
config the runtime gives weft -- by default the first conflist (by name, as libcni orders
them) with a ``weft`` plugin in k3s's ``/var/lib/rancher/k3s/agent/etc/cni/net.d``, then
``/etc/cni/net.d`` (``WEFT_CONF_DIRS`` overrides the list; ``--conf FILE`` names one) --
observe the store, the netns paths and the links, and hand the observations to the pure
decisions in ``cni.operator.state``. ``--json`` output comes from ``cni.operator.jsonout``
(pydantic), imported only then: pydantic never loads on the CNI exec path.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import TYPE_CHECKING, NamedTuple, TextIO

from cni.helper import protocol as helperproto
from cni.operator import state as opstate
from cni.operator.discovery import Loaded, OperatorError, load
from cni.operator.state import Observed, Row
from cni.plugin.config import NetConf, is_flannel_shape
from cni.plugin.plan import orphan_records
from cnispec.errors import CNIError
from ipam.attachments import AttachmentStore
from ipam.disk import DiskStore
from ipam.records import Attachment, NetnsId

if TYPE_CHECKING:
    from cni.plugin.network import Network

class UsageError(Exception):
    """Wrong subcommand line: exit 2 with the usage on stderr."""


# ---- argument parsing (no argparse: it is not in the frozen bundle) --------------------
class Options(NamedTuple):
    conf: str | None
    json: bool
    dry_run: bool


def parse_options(argv: list[str], allowed: frozenset[str]) -> Options:
    conf: str | None = None
    flags: set[str] = set()
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--conf" or a.startswith("--conf="):
            if "--conf" not in allowed:
                raise UsageError(f"unknown option {a}")
            value = a.partition("=")[2] if "=" in a else (args.pop(0) if args else "")
            if not value:
                raise UsageError("--conf needs a file")
            conf = value
        elif a in allowed:
            flags.add(a)
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a}")
        else:
            raise UsageError(f"unexpected argument {a!r}")
    return Options(conf, "--json" in flags, "--dry-run" in flags)


# ---- observing the node -------------------------------------------------------------------
def _mtime(path: str) -> float | None:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


def observe(store: DiskStore, attachments: AttachmentStore) -> list[Observed]:
    """Every reservation, plus every record whose reservation is gone."""
    from cni.linux.netlink import Netlink
    from cni.linux.netns import identity_at

    all_records = attachments.all()
    reservations = store.reservations()
    orphans = set(orphan_records(all_records, reservations, store.has_file))
    records = {(a.container_id, a.ifname): a for a in all_records}
    seen: set[tuple[str, str]] = set()
    out: list[Observed] = []
    with Netlink.open() as host:

        def veth(rec: Attachment | None) -> bool | None:
            if rec is None or not rec.host_veth:
                return None
            return host.link_get(rec.host_veth) is not None

        def netns(rec: Attachment | None) -> NetnsId | None:
            return identity_at(rec.netns) if rec and rec.netns else None

        for r in reservations:
            rec = records.get((r.container_id, r.ifname)) if r.ifname else None
            seen.add((r.container_id, r.ifname))
            since = _mtime(os.path.join(store.dir, str(r.ip)))
            out.append(Observed(r.ip, r.container_id, r.ifname, rec, netns(rec), veth(rec), since))
        for key, rec in records.items():
            if key not in seen:
                out.append(
                    Observed(
                        None,
                        rec.container_id,
                        rec.ifname,
                        rec,
                        netns(rec),
                        veth(rec),
                        None,
                        key in orphans,
                    )
                )
    return out


def network(conf: NetConf) -> Network:
    from cni.plugin.network import Network

    return Network.of(conf)


def judged(net: Network) -> list[Row]:
    from cni.plugin.network import boot_id

    return opstate.rows(observe(net.store, net.records), boot_id(), time.time())


def problems_of(net: Network) -> list[str]:
    return net.store.problems + net.records.problems


def _table(loaded: Loaded) -> tuple[Network, list[Row]]:
    net = network(loaded.conf)
    return net, judged(net) if net.store.exists() else []


# ---- weft ls ------------------------------------------------------------------------------
def _yn(v: bool | None, yes: str, no: str) -> str:
    return "-" if v is None else (yes if v else no)


def _pod(r: Row) -> str:
    return f"{r.pod_namespace}/{r.pod_name}" if r.pod_namespace or r.pod_name else "-"


def format_rows(table: list[Row]) -> str:
    head = ("IP", "CONTAINER", "IFNAME", "POD", "NETNS", "VETH", "BOOT", "AGE", "STATE")
    lines = [head]
    for r in table:
        lines.append(
            (
                r.ip,
                r.container_id[:13],
                r.ifname or "-",
                _pod(r),
                f"{r.netns} ({r.netns_state})" if r.netns else "-",
                f"{r.host_veth} ({_yn(r.veth_present, 'present', 'gone')})" if r.host_veth else "-",
                r.boot or "-",
                opstate.human_age(r.age_seconds),
                r.state,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in lines
    )


def cmd_ls(argv: list[str], out: TextIO, err: TextIO) -> int:
    options = parse_options(argv, frozenset({"--conf", "--json"}))
    loaded = load(options.conf)
    net, table = _table(loaded)
    if options.json:
        from cni.operator import jsonout as opjson

        out.write(opjson.ls_json(loaded.path, net.store.dir, table) + "\n")
        return 0
    out.write(f"# network {loaded.conf.name}, store {net.store.dir}, config {loaded.path}\n")
    out.write(format_rows(table))
    for p in problems_of(net):
        err.write(f"weft ls: store: {p}\n")
    return 0


# ---- weft status --------------------------------------------------------------------------
def _forwarding(conf: NetConf) -> tuple[tuple[int, str], ...]:
    from cni.linux import sysctl

    versions = sorted({rs.family for rs in conf.ipam.range_sets})
    out = []
    for v in versions:
        key = "net/ipv4/ip_forward" if v == 4 else "net/ipv6/conf/all/forwarding"
        try:
            out.append((v, sysctl.read(key)))
        except OSError:
            out.append((v, ""))
    return tuple(out)


def helper_state(path: str) -> tuple[str, str]:
    """("not running" | "running" | "not answering", what runs it)."""
    if not os.path.exists(path):
        return "not running", ""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(1.0)
        s.connect(path)
        pid, _, _ = helperproto.peer_credentials(s)
    except OSError:
        return "not answering", ""
    finally:
        s.close()
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return "running", f"pid {pid}"
    if os.path.basename(exe) == "systemd":  # socket activation: systemd holds the socket
        return "running", f"socket-activated by systemd (pid {pid}); the helper starts on demand"
    built = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))
    return "running", f"pid {pid}, {exe} (built {built})"


def facts(loaded: Loaded, net: Network, table: list[Row]) -> opstate.NodeFacts:
    from cni.linux.netlink import Netlink

    conf = loaded.conf
    # what ADD puts on the bridge (cni.plugin.plan): each range set's first range's gateway
    want = (
        tuple(
            f"{rs.ranges[0].gateway}/{rs.ranges[0].subnet.prefixlen}" for rs in conf.ipam.range_sets
        )
        if conf.is_gateway
        else ()
    )
    with Netlink.open() as nl:
        link = nl.link_get(conf.bridge)
        found = nl.addrs(link.ifindex) if link else []
        addrs = tuple(str(a.address) for a in found if not a.address.ip.is_link_local)
    # the socket the exec path would use (WEFT_SOCKET); "off" there: no helper at all
    sock = helperproto.socket_path() or helperproto.DISABLED
    state, _ = helper_state(sock) if sock != helperproto.DISABLED else ("not running", "")
    return opstate.NodeFacts(
        subnet_file=loaded.subnet_file,
        subnet=loaded.subnet,
        subnet_error=loaded.subnet_error,
        bridge=conf.bridge,
        bridge_exists=link is not None,
        bridge_kind=link.kind if link else None,
        bridge_addrs=addrs,
        bridge_mtu=link.mtu if link else None,
        want_addrs=want,
        want_mtu=conf.mtu,
        is_gateway=conf.is_gateway,
        forwarding=_forwarding(conf),
        usage=tuple(opstate.range_usage(conf.ipam.range_sets, table)),
        store_dir=net.store.dir,
        store_problems=tuple(problems_of(net)),
        helper_socket=sock,
        helper_state=state,
    )


def _subnet_line(loaded: Loaded) -> str:
    if loaded.subnet_file is None:
        return "subnet file: none (bridge shape: ranges from the config's ipam)"
    sf = loaded.subnet
    if sf is None:
        return f"subnet file {loaded.subnet_file}: {loaded.subnet_error}"
    parts = [f"FLANNEL_NETWORK={','.join(str(n) for n in sf.networks if n.version == 4)}"]
    if sf.subnet:
        parts.append(f"FLANNEL_SUBNET={sf.subnet}")
    if sf.ipv6_subnet:
        parts.append(f"FLANNEL_IPV6_SUBNET={sf.ipv6_subnet}")
    parts.append(f"FLANNEL_MTU={sf.mtu if sf.mtu is not None else '-'}")
    parts.append(f"FLANNEL_IPMASQ={str(sf.ipmasq).lower() if sf.ipmasq is not None else '-'}")
    return f"subnet file {loaded.subnet_file}: {' '.join(parts)}"


def cmd_status(argv: list[str], out: TextIO, err: TextIO) -> int:
    options = parse_options(argv, frozenset({"--conf", "--json"}))
    loaded = load(options.conf)
    net, table = _table(loaded)
    f = facts(loaded, net, table)
    found = opstate.problems(f)
    sock = f.helper_socket
    _, helper_build = helper_state(sock) if f.helper_state == "running" else ("", "")
    if options.json:
        from cni.operator import jsonout as opjson

        out.write(opjson.status_json(loaded.path, f, found, helper_build) + "\n")
        return 1 if found else 0
    shape = "flannel" if is_flannel_shape(loaded.obj) else "bridge"
    w = out.write
    w(f"config      {loaded.path} (network {loaded.conf.name}, {shape} shape)\n")
    w(f"{_subnet_line(loaded)}\n")
    if f.bridge_exists:
        w(
            f"bridge      {f.bridge}: {', '.join(f.bridge_addrs) or 'no address'}, "
            f"mtu {f.bridge_mtu} (want {', '.join(f.want_addrs) or 'no address'}, "
            f"mtu {f.want_mtu or 'any'})\n"
        )
    else:
        w(f"bridge      {f.bridge}: does not exist yet (the first ADD creates it)\n")
    for version, value in f.forwarding:
        key = "ip_forward" if version == 4 else "ipv6 forwarding"
        w(f"{key:<11} {value or 'unreadable'}\n")
    for u in f.usage:
        w(
            f"range       {u.range_set}: {u.capacity} addresses, {u.live} live, {u.stale} stale "
            f"(reclaimable), {u.unjudgeable} host-local, {u.free} free -> {u.available} "
            "available to ADD\n"
        )
    w(f"store       {net.store.dir}\n")
    helper = f.helper_state + (f": {helper_build}" if helper_build else "")
    w(f"helper      {sock}: {helper}\n")
    if not found:
        w("status      ok\n")
        return 0
    w(f"status      {len(found)} problem(s)\n")
    for p in found:
        w(f"problem: {p.what}\n   fix: {p.fix}\n")
    return 1


# ---- weft gc ------------------------------------------------------------------------------
def _collect(
    net: Network,
) -> tuple[list[Row], opstate.GcPlan, list[Row], list[tuple[Row, str]], list[Row]]:
    """Release what ``gc_plan`` says through the plugin's one teardown path
    (``cni.plugin.network.collect``: the lock order, the orphan sweep), decided on the table
    read under the network lock."""
    from cni.plugin.network import collect

    decided: list[tuple[list[Row], opstate.GcPlan]] = []

    def decide() -> list[tuple[str, str]]:
        table = judged(net)
        plan = opstate.gc_plan(table)
        decided.append((table, plan))
        return list(plan.release)

    done = collect(net, decide)
    table, plan = decided[0]

    def rows(cid: str, ifname: str) -> list[Row]:
        return [r for r in table if (r.container_id, r.ifname) == (cid, ifname)]

    released = [r for t in done.released for r in rows(t.container_id, t.ifname)]
    failed = [(r, e) for t, e in done.failed for r in rows(t.container_id, t.ifname)]
    busy = [r for key in done.busy for r in rows(*key)]
    return table, plan, released, failed, busy


def cmd_gc(argv: list[str], out: TextIO, err: TextIO) -> int:
    options = parse_options(argv, frozenset({"--conf", "--dry-run", "--json"}))
    loaded = load(options.conf)
    conf = loaded.conf
    net = network(conf)
    if not net.store.exists():
        if options.json:
            from cni.operator import jsonout as opjson

            out.write(opjson.gc_json(net.store.dir, options.dry_run, [], [], (), 0) + "\n")
        else:
            out.write(f"nothing to do: {net.store.dir} does not exist\n")
        return 0
    released: list[Row] = []
    failed: list[tuple[Row, str]] = []
    busy: list[Row] = []
    if options.dry_run:  # no lock at all: a dry run must not even create a lock file
        table = judged(net)
        plan = opstate.gc_plan(table)
        released = [r for r in table if (r.container_id, r.ifname) in plan.release]
    else:
        table, plan, released, failed, busy = _collect(net)
    if options.json:
        from cni.operator import jsonout as opjson

        out.write(
            opjson.gc_json(
                net.store.dir,
                options.dry_run,
                released,
                failed + [(r, "skipped: a CNI command on it is running") for r in busy],
                plan.unjudgeable,
                plan.kept_live,
            )
            + "\n"
        )
        return 1 if failed else 0
    verb = "would release" if options.dry_run else "released"
    for r in released:
        out.write(
            f"{verb} {r.ip} {r.container_id}/{r.ifname} pod {_pod(r)} veth {r.host_veth or '-'}: "
            f"{r.reason}\n"
        )
    for r, why in failed:
        out.write(f"FAILED {r.ip} {r.container_id}/{r.ifname}: {why}\n")
    for r in busy:
        out.write(
            f"skipped {r.ip} {r.container_id}/{r.ifname}: a CNI command on it is running; "
            "run weft gc again\n"
        )
    for r in plan.unjudgeable:
        out.write(
            f"not touched {r.ip} held by {r.container_id}{'/' + r.ifname if r.ifname else ''}: "
            f"{r.reason}. If you know that container is gone: "
            f"flock {net.store.lock_path} rm {net.store.dir}/{r.ip}\n"
        )
    out.write(
        f"{len(released)} {verb}, {plan.kept_live} live kept, "
        f"{len(plan.unjudgeable)} host-local not touched"
        + (f", {len(failed)} failed" if failed else "")
        + "\n"
    )
    return 1 if failed else 0


def _run(name: str, argv: list[str]) -> int:
    handler = {"ls": cmd_ls, "status": cmd_status, "gc": cmd_gc}[name]
    try:
        return handler(argv, sys.stdout, sys.stderr)
    except (OperatorError, CNIError) as e:
        sys.stderr.write(f"weft {name}: {e}\n")
        return 1


# Entries for cni.operator.cli's subcommand table: func(argv) -> exit code.
def ls(argv: list[str]) -> int:
    return _run("ls", argv)


def status(argv: list[str]) -> int:
    return _run("status", argv)


def gc(argv: list[str]) -> int:
    return _run("gc", argv)
