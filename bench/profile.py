"""One helper ADD and one helper DEL, phase by phase, timed from outside: ``make profile``.

The frozen bundle (``make build``) serves N ADD/DEL pairs on a sandbox node through a
``weft serve`` helper; both the helper (with every child it forks) and each client run under
``strace -ttt -T``, and the phases of each request are read off the syscalls: the client's
start-up (exec to its socket), connect and handshake (to the GO with its descriptors), the
helper's hand-over of the connection to its spare child (forked ahead of the request), the
child's reading of the request, opening the client's namespaces, setns
(mount, net) and chroot, the wait for the GO, then the request itself: every open of the
subnet file, every lock, every store write, fsync, rename and removal, every netlink request
(by message type), every sysctl, every iptables exec, and the reply (the result on stdout,
the status to the client). A phase runs from its first syscall to the next phase's first
syscall, so the Python between two syscalls counts for the phase it follows; the gap between
the GO and the first file or socket the request touches is the config parse and plan.

strace stops the traced process at every syscall: every figure is inflated by that, about
evenly per syscall, so the table shows where the time goes and in which order of size, not
the untraced latency (``make bench`` measures that). Prints one table per command (median
over the N requests, ms) and writes it to ``bench/results/profile.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.netns import Node, cni_env, delete_netns, new_netns  # noqa: E402

LINE = re.compile(r"^(\d+\.\d+) (\w+)\((.*)\) += (-?\w+)(?: [^<]*)?(?: <(\d+\.\d+)>)?$")
IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")


class Call(NamedTuple):
    t: float  # start, seconds since the epoch
    name: str
    args: str
    ret: str
    dur: float  # time in the syscall

    @property
    def end(self) -> float:
        return self.t + self.dur


def calls(path: Path) -> list[Call]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if m:
            t, name, args, ret, dur = m.groups()
            out.append(Call(float(t), name, args, ret, float(dur or 0)))
        elif " execve(" in line or "exit_group(" in line or "+++ exited" in line:
            t = line.split(" ", 1)[0]
            with_dur = re.search(r"<(\d+\.\d+)>$", line)
            name = "exit_group" if "exit_group" in line or "+++" in line else "execve"
            out.append(Call(float(t), name, line, "", float(with_dur.group(1)) if with_dur else 0))
    return out


class Phase(NamedTuple):
    label: str
    ms: float
    syscalls: int = 0  # how many the phase made: strace's cost grows with them


def first_path(args: str) -> str:
    m = re.search(r'"([^"]*)"', args)
    return m.group(1) if m else ""


def fd_of(args: str) -> str:
    return args.split(",", 1)[0].strip()


NLMSG = {0x10: "RTM_NEWLINK", 0x11: "RTM_DELLINK", 0x12: "RTM_GETLINK", 0x13: "RTM_SETLINK",
         0x14: "RTM_NEWADDR", 0x15: "RTM_DELADDR", 0x16: "RTM_GETADDR", 0x18: "RTM_NEWROUTE",
         0x19: "RTM_DELROUTE", 0x1A: "RTM_GETROUTE", 0x1C: "RTM_NEWNEIGH", 0x1E: "RTM_GETNEIGH"}


def short(path: str, cid: str) -> str:
    """A store or lock path's last two parts without what varies per request (container id,
    address, temp name, hashed lock name)."""
    name = "/".join(path.rstrip("/").split("/")[-2:])
    name = re.sub(r"\.tmp-\d+-[0-9a-f]+", ".tmp", name.replace(cid, "<cid>"))
    name = re.sub(r"[0-9a-f]{32,}", "<hash>", name)
    return IPV4.sub("<ip>", name)


def netlink_label(args: str) -> str:
    m = re.search(r"nlmsg_type=(0x[0-9a-f]+|\w+)", args)
    kind = m.group(1) if m else "?"
    if kind.startswith("0x"):
        kind = NLMSG.get(int(kind, 16), kind)
    flags = re.search(r"nlmsg_flags=([^,]+)", args)
    dump = " (dump)" if flags and ("0x300" in flags.group(1) or "DUMP" in flags.group(1)) else ""
    return f"netlink {kind}{dump}"


class Child:
    """Labels the syscalls of a request's child with phases (None: the phase goes on)."""

    def __init__(self, node: Node, cid: str) -> None:
        self.node, self.cid = node, cid
        self.fds: dict[str, str] = {}  # fd -> path, or "netlink"

    def label(self, c: Call, before_go: bool) -> str | None:
        data = str(self.node.data_dir)
        if c.name in ("openat", "open"):
            path = first_path(c.args)
            if c.ret.isdigit():
                self.fds[c.ret] = path
            if re.match(r"/proc/\d+/(ns/|root$)", path):
                return "child: open the client's namespaces"
            if path == str(self.node.subnet_file):
                return "subnet file"
            if path == "/proc/sys/kernel/random/boot_id":
                return "boot id read (for the record)"
            if path.startswith("/proc/sys/"):
                how = "read" if "O_RDONLY" in c.args else "write"
                key = re.sub(r"veth[0-9a-f]+", "<veth>", path[len("/proc/sys/"):])
                return f"sysctl {how} {key}"
            if path.startswith(data):
                if "lock" in path.rsplit("/", 2)[-2:][0] or path.endswith("/lock"):
                    return f"lock open {short(path, self.cid)}"
                kind = "store write" if "O_CREAT" in c.args else "store read"
                return f"{kind} {short(path, self.cid)}"
            return None
        if c.name == "setns":
            ns = "mnt" if "CLONE_NEWNS" in c.args else "net"
            return f"child: setns {ns} (the client's)" if before_go else f"setns {ns} (pod/back)"
        if c.name == "chroot":
            return "child: chroot"
        if c.name == "flock":
            what = "unlock" if "LOCK_UN" in c.args else "lock"
            return f"{what} {short(self.fds.get(fd_of(c.args), '?'), self.cid)}"
        if c.name in ("fsync", "fdatasync"):
            return f"fsync {short(self.fds.get(fd_of(c.args), '?'), self.cid)}"
        if c.name in ("rename", "renameat", "renameat2", "link", "linkat"):
            paths = re.findall(r'"([^"]*)"', c.args)
            return f"store {c.name} {short(paths[-1] if paths else '?', self.cid)}"
        if c.name in ("unlink", "unlinkat", "rmdir") and first_path(c.args).startswith(data):
            if ".tmp-" in first_path(c.args):
                return None  # the temp name of a link() just done
            return f"store remove {short(first_path(c.args), self.cid)}"
        if c.name == "getdents64":
            return f"store list {short(self.fds.get(fd_of(c.args), '?'), self.cid)}"
        if c.name == "socket" and "AF_NETLINK" in c.args:
            self.fds[c.ret] = "netlink"
            return "netlink socket"
        if c.name in ("sendto", "sendmsg") and self.fds.get(fd_of(c.args)) == "netlink":
            return netlink_label(c.args)
        if c.name in ("clone", "clone3", "vfork", "fork"):
            return "exec (fork + wait)"
        if c.name == "write" and fd_of(c.args) == "1":
            return "reply: result to stdout"
        return None


def child_phases(cs: list[Call], node: Node, cid: str) -> list[Phase]:
    """The phases of one request's child, from its first syscall to its exit."""
    ch = Child(node, cid)
    taken = re.search(r"SCM_RIGHTS, cmsg_data=\[(\d+)", cs[0].args)  # the hand-over
    conn = taken.group(1) if taken else next(fd_of(c.args) for c in cs if c.name == "recvmsg")
    marks: list[tuple[float, str]] = [(cs[0].end, "child: set up, read the request")]
    counts = [0]
    accepted = go = False
    for c in cs:
        counts[-1] += 1
        on_conn = fd_of(c.args) == conn and c.name in ("sendto", "sendmsg", "recvmsg")
        if c.name == "exit_group":
            break
        lab: str | None
        if on_conn and not accepted and c.name != "recvmsg":
            accepted, lab = True, "child: accept, wait for the GO"
        elif on_conn and accepted and not go and "SCM_RIGHTS" in c.args:
            go = True
            marks.append((c.end, "config parse + plan (Python, no syscalls)"))
            counts.append(0)
            continue
        elif on_conn and go:
            lab = "reply: status to the client"
        else:
            lab = ch.label(c, not go)
        if lab is not None and lab != marks[-1][1]:
            counts[-1] -= 1
            marks.append((c.t, lab))
            counts.append(1)
    end = next((c.t for c in cs if c.name == "exit_group"), cs[-1].end)
    marks.append((end, "<end>"))
    return [Phase(a[1], (b[0] - a[0]) * 1000, n)
            for a, b, n in zip(marks, marks[1:], counts, strict=False)]


def client_phases(cs: list[Call]) -> tuple[list[Phase], float, float]:
    """Client start-up, connect + handshake, the wait for the status; and the times the GO was
    sent and the status received (the request's span in the helper)."""
    t0 = cs[0].t
    sock = next(c for c in cs if c.name == "socket" and "AF_UNIX" in c.args)
    go = next(c for c in cs if c.name == "sendmsg" and "SCM_RIGHTS" in c.args)
    status = next(c for c in cs if c.t > go.t and c.name in ("recvfrom", "recvmsg", "read")
                  and fd_of(c.args) == fd_of(go.args))
    end = next((c.t for c in cs if c.name == "exit_group"), cs[-1].end)

    def n(a: float, b: float) -> int:
        return sum(1 for c in cs if a <= c.t < b)

    phases = [
        Phase("client start-up (exec to its socket)", (sock.t - t0) * 1000, n(t0, sock.t)),
        Phase("connect + handshake (to the GO sent)", (go.end - sock.t) * 1000,
              n(sock.t, go.end)),
        Phase("request in the helper (GO to status)", (status.end - go.end) * 1000,
              n(go.end, status.end)),
        Phase("client exit (status to exit)", (end - status.end) * 1000, n(status.end, end)),
    ]
    return phases, go.end, status.end


def numbered(phases: list[Phase]) -> list[Phase]:
    """Repeated labels within one request get #2, #3, ...; consecutive ones are summed."""
    merged: list[Phase] = []
    for p in phases:
        if merged and merged[-1].label == p.label:
            merged[-1] = Phase(p.label, merged[-1].ms + p.ms, merged[-1].syscalls + p.syscalls)
        else:
            merged.append(p)
    seen: dict[str, int] = {}
    out = []
    for p in merged:
        seen[p.label] = seen.get(p.label, 0) + 1
        k = seen[p.label]
        out.append(p._replace(label=p.label if k == 1 else f"{p.label} #{k}"))
    return out


class Row(NamedTuple):
    label: str
    ms: float  # median
    syscalls: float  # median
    seen: int  # in how many requests


def median_table(runs: list[list[Phase]]) -> list[Row]:
    order: list[str] = []
    values: dict[str, list[Phase]] = {}
    for run in runs:
        for p in run:
            if p.label not in values:
                order.append(p.label)
                values[p.label] = []
            values[p.label].append(p)
    return [Row(k, statistics.median(p.ms for p in values[k]),
                statistics.median(p.syscalls for p in values[k]), len(values[k])) for k in order]


class Profiled(NamedTuple):
    client: list[Phase]
    handover: float  # the helper's sendmsg of the connection to its spare child, ms
    accept_to_handover: float
    child: list[Phase]


class Untraced(NamedTuple):
    wall: float  # ms, the client's exec to exit as this script sees it (nsenter included)
    helper: float  # ms, the helper's own figure (accept to the child reaped)


Results = dict[str, list[Profiled]]
Plain = dict[str, list[Untraced]]


def serve(plugin: str, n: int, work: Path, traced: bool) -> tuple[Results, Plain]:
    """N ADD/DEL pairs (after one warm-up pair) through a helper on a sandbox node."""
    strace = shutil.which("strace")
    if strace is None:
        raise SystemExit("profile: strace not found (make deps installs it)")
    trace_argv = [strace, "-ff", "-ttt", "-T", "-s", "256", "-o"]
    ns = new_netns("wprof")
    node = Node(ns, work / "node")
    node.tmp.mkdir(parents=True)
    node.write_subnet()
    sock = work / "run" / "weft.sock"
    log = work / "serve.log"
    with open(log, "wb") as err:
        helper = subprocess.Popen(
            [*(trace_argv + [str(work / "helper")] if traced else []), plugin, "serve",
             "--socket", str(sock)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    traced_out: Results = {"ADD": [], "DEL": []}
    plain: Plain = {"ADD": [], "DEL": []}
    helper_ms = re.compile(r"request command=(\w+) container=(\S+) .* ms=([\d.]+)")
    try:
        end = time.monotonic() + 60
        while "serving on" not in log.read_text(errors="replace"):
            if helper.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"profile: helper did not start: {log.read_text()}")
            time.sleep(0.05)
        walls: dict[tuple[str, str], float] = {}
        for i in range(n + 1):  # the first pair warms the caches; it is not counted
            pod = node.pod()
            cid = f"prof{i:03d}"
            for command in ("ADD", "DEL"):
                trace = work / f"client-{command}-{i}"
                # in the node's netns as a runtime execs a plugin: nsenter --net, not ip netns
                # exec (which would give it a mount namespace of its own)
                t0 = time.perf_counter()
                o = subprocess.run(
                    ["nsenter", f"--net={ns.path}", "--",
                     *(trace_argv + [str(trace)] if traced else []), plugin],
                    input=json.dumps(node.conf()).encode(), capture_output=True,
                    env={**cni_env(command, cid, pod.path), "WEFT_SOCKET": str(sock)},
                    timeout=120)
                walls[(command, cid)] = (time.perf_counter() - t0) * 1000
                if o.returncode != 0:
                    raise SystemExit(f"profile: {command} failed: {o.stdout!r} {o.stderr!r}")
                if command == "ADD" and "eth0" not in pod.links():  # the kernel's word
                    raise SystemExit("profile: no eth0 in the pod after ADD")
                if traced and i:
                    traced_out[command].append(profile_one(work, trace, node, cid))
        if node.reservations():  # the store on disk: every DEL released its address
            raise SystemExit(f"profile: reservations left: {node.reservations()}")
    finally:
        try:
            # SIGTERM to the helper itself (strace then exits with it): it drains and exits 0
            for pid in children(helper.pid) if traced else [helper.pid]:
                os.kill(pid, signal.SIGTERM)
            helper.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            helper.kill()
            helper.wait()
        finally:
            for p in node.pods:
                delete_netns(p)
            delete_netns(ns)
    served = helper_ms.findall(log.read_text(errors="replace"))
    if len(served) != 2 * (n + 1):  # every request in the helper's log: none ran in-process
        raise SystemExit(f"profile: the helper served {len(served)} of {2 * (n + 1)} requests")
    for command, cid, ms in served:
        if cid != "prof000":
            plain[command].append(Untraced(walls[(command, cid)], float(ms)))
    return traced_out, plain


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(c) for c in task.read_text().split()]
    return found


def traces(prefix: Path) -> Iterator[tuple[int, list[Call]]]:
    for f in prefix.parent.glob(prefix.name + ".*"):
        yield int(f.suffix[1:]), calls(f)


def profile_one(work: Path, trace: Path, node: Node, cid: str) -> Profiled:
    client = max(traces(trace), key=lambda t: len(t[1]))[1]
    phases, go, status = client_phases(client)
    helper_files = dict(traces(work / "helper"))
    parent_pid = min(helper_files)  # strace's child: the helper itself, the oldest pid
    parent = helper_files[parent_pid]
    # the child: the spare (forked ahead, waiting) that received the connection between the
    # client's socket and its GO; its request starts there
    sock_t = client[0].t + phases[0].ms / 1000
    kids = []
    for p, cs in helper_files.items():
        take = next((i for i, c in enumerate(cs) if c.name == "recvmsg"), None)
        if p != parent_pid and take is not None and sock_t <= cs[take].end <= go:
            kids.append(cs[take:])
    if len(kids) != 1:
        raise SystemExit(f"profile: {len(kids)} helper children took the request")
    child = kids[0]
    handover = max((c for c in parent if c.name == "sendmsg" and "SCM_RIGHTS" in c.args
                    and c.t <= child[0].end), key=lambda c: c.t)
    accept = max((c for c in parent if c.name in ("accept", "accept4") and c.end <= handover.t),
                 key=lambda c: c.t)
    return Profiled(phases, handover.dur * 1000, (handover.end - accept.end) * 1000,
                    numbered(child_phases(child, node, cid)))


WITHIN = "  within it: "  # a category that runs while the client is in its handshake
CATEGORIES = [  # (label prefix, category) for the summary: first match
    ("client start-up", "client start-up (exec, imports before the helper is asked)"),
    ("connect + handshake", "connect + handshake (client side, to the GO)"),
    ("helper: accept", WITHIN + "hand-over (helper: accept to the connection sent to the spare)"),
    ("child: set up", WITHIN + "child: set-up and reading the request"),
    ("child: open", WITHIN + "child: the client's namespaces (open, setns mnt/net, chroot)"),
    ("child: setns", WITHIN + "child: the client's namespaces (open, setns mnt/net, chroot)"),
    ("child: chroot", WITHIN + "child: the client's namespaces (open, setns mnt/net, chroot)"),
    ("child: accept", WITHIN + "child: accept, wait for the GO"),
    ("config parse", "config parse + plan"),
    ("subnet file", "subnet file"),
    ("lock", "locks (open, lock, unlock)"),
    ("unlock", "locks (open, lock, unlock)"),
    ("store read", "store reads and listings"),
    ("store list", "store reads and listings"),
    ("store", "store writes (write, link, rename, remove)"),
    ("fsync", "fsync"),
    ("netlink", "netlink requests (and the Python around them)"),
    ("setns", "setns into the pod and back"),
    ("sysctl", "sysctl (/proc/sys reads and writes)"),
    ("exec", "exec (iptables)"),
    ("boot id", "boot id read"),
    ("reply", "reply (result to stdout, status to the client)"),
    ("client exit", "client exit (status to exit)"),
]


def category(label: str) -> str:
    return next((cat for prefix, cat in CATEGORIES if label.startswith(prefix)), "other")


def summary(r: Profiled) -> dict[str, float]:
    out: dict[str, float] = {}
    phases = [*r.client[:2], Phase("helper: accept", r.accept_to_handover), *r.child,
              r.client[3]]
    for p in phases:
        out[category(p.label)] = out.get(category(p.label), 0.0) + p.ms
    return out


def report(results: Results, plain: Plain, plugin: str, n: int) -> str:
    lines = [
        "# Profile: one helper ADD and one helper DEL, phase by phase",
        "",
        f"`make profile` (`bench/profile.py`): the frozen bundle (`{plugin}`) as client and as",
        f"`weft serve` helper on a sandbox node; median of {n} requests per command, after a",
        "warm-up pair. Traced: helper (and every child) and each client under `strace -ff -ttt",
        "-T`; a phase runs from its first syscall to the next phase's first syscall, so the",
        "Python between two syscalls counts for the phase it follows. strace stops the process",
        "at every syscall, so each phase is inflated roughly in proportion to its syscall count",
        "(the `syscalls` column): the client's start-up (hundreds of opens and stats of the",
        "bundle) most of all. The untraced run right after, same node, gives the real totals.",
        "",
        f"Machine: {os.cpu_count()} CPUs, load average at the end "
        f"{Path('/proc/loadavg').read_text().split()[0]} (other work on it slows every figure).",
        "",
    ]
    for command, runs in results.items():
        if not runs:
            continue
        pl = plain[command]
        lines += [
            f"## {command}",
            "",
            f"Untraced: client exec to exit {statistics.median(u.wall for u in pl):.1f} ms "
            f"(wall, nsenter included); the helper's own figure (accept to child reaped) "
            f"{statistics.median(u.helper for u in pl):.1f} ms.",
            "",
            "Summary (traced, ms per category; the rows marked \"within it\" run while the",
            "client is in its handshake and are part of that row; the other rows' means add up",
            "to the mean total, the medians show the typical request on a loaded machine):",
            "",
            "| category | median | mean |",
            "|---|---:|---:|",
        ]
        sums = [summary(r) for r in runs]
        cats = list(dict.fromkeys(k for s_ in sums for k in s_))
        for cat in cats:
            values = [s_.get(cat, 0.0) for s_ in sums]
            lines.append(f"| {cat} | {statistics.median(values):.2f} | "
                         f"{statistics.fmean(values):.2f} |")
        totals = [sum(v for k, v in s_.items() if not k.startswith(WITHIN)) for s_ in sums]
        lines.append(f"| **client exec to exit** | **{statistics.median(totals):.2f}** | "
                     f"**{statistics.fmean(totals):.2f}** |")
        lines += ["", "Every phase (traced):", "",
                  "| phase | ms (median) | syscalls | seen in |", "|---|---:|---:|---:|"]

        def row(r: Row, prefix: str = "", of: int = len(runs)) -> str:
            return f"| {prefix}{r.label} | {r.ms:.2f} | {r.syscalls:.0f} | {r.seen}/{of} |"

        lines += [row(r) for r in median_table([x.client[:2] for x in runs])]
        lines.append(f"| helper: accept returned to the hand-over sent | "
                     f"{statistics.median(x.accept_to_handover for x in runs):.2f} | | |")
        lines.append(f"| helper: the hand-over (sendmsg to the spare) itself | "
                     f"{statistics.median(x.handover for x in runs):.2f} | 1 | |")
        for r in median_table([x.child for x in runs]):
            lines.append(row(r, "" if r.label.startswith("child") else "child: "))
        child_total = statistics.median(sum(p.ms for p in x.child) for x in runs)
        lines.append(f"| **the child, first syscall to exit** | **{child_total:.2f}** | | |")
        lines += [row(r) for r in median_table([x.client[2:] for x in runs])]
        total = statistics.median(sum(p.ms for p in x.client) for x in runs)
        lines += [f"| **client, exec to exit** | **{total:.2f}** | | |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weft", default=str(REPO / "dist" / "weft" / "weft"))
    p.add_argument("-n", type=int, default=15, help="requests per command (median)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "profile.md"))
    p.add_argument("--keep", help="copy the raw traces to this directory")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="weft-profile-", dir="/var/tmp"))
    try:
        results, _ = serve(a.weft, a.n, work / "traced", traced=True)
        _, plain = serve(a.weft, a.n, work / "plain", traced=False)
    finally:
        if a.keep:
            shutil.copytree(work, a.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, plain, os.path.relpath(a.weft, REPO), a.n)
    Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
