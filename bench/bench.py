"""weft vs the reference CNI plugins (bridge + host-local), alternated in one run.

Usage (root)::

    python3 bench/bench.py [--weft dist/weft/weft] [--reps 30] [--burst 100] [--fill|--no-fill]
    python3 bench/bench.py --quick                 # fast smoke run
    python3 bench/bench.py --reference-only        # harness check without weft
    python3 bench/bench.py --baseline OLD/weft     # and another frozen weft, in the same run

Columns: ``weft`` (in-process), ``weft-helper`` (the same binary, every exec handed to a
``weft serve`` the bench starts), ``reference`` (the Go bridge + host-local) and, with
``--baseline``, ``baseline`` (that build in-process) and ``baseline-helper`` (only when that
build has a ``weft serve``, probed by running it). The report gives each metric's ratios
weft/reference, helper/reference, weft/baseline and helper/baseline-helper.

Scenarios, all inside throwaway netns named ``wb-<pid>-*`` (a "node" netns in which the plugins
run as the host, plus pre-created pod netns; netns creation is never timed):

1. single pod cycle: ADD, CHECK, DEL of one pod, ``--reps`` times, the columns' order rotated
   (and reversed every other rep) so that none always runs first or after the same neighbour;
2. burst: ``--burst`` pods ADDed concurrently, then DELed concurrently (``--burst-rounds``);
3. fill: sequential ADDs until the subnet is full, one more (must fail: exhaustion), DEL all.

Correctness is checked against the kernel with ``ip -j`` (never with the plugin under test); the
exit status is non-zero if any correctness check fails, but never for a missed speed target.
Results: a table on stdout, ``<out-dir>/latest.md``, ``latest.json`` and ``latency.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import report
from bench.plugin import (
    REFERENCE_DIR,
    Exec,
    Plugin,
    Style,
    Subnet,
    exec_mode,
    finish,
    kill_live,
    run,
    setup_launcher,
    spawn,
    version_of,
    with_prev,
)
from bench.sandbox import Sandbox, cleanup_stale, ip_json, ip_json_many, ipv4_of, veths


def _status_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB; zeros when it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return rss, hwm


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


class Helper:
    """``weft serve`` for a helper column (``label``): started before the run, stopped
    (SIGTERM, must exit 0) after it; every exec of the column must have been served by it."""

    def __init__(self, weft: str, tmp: str, label: str) -> None:
        self.weft = weft
        self.label = label
        self.sock = os.path.join(tmp, label, "weft.sock")
        self.log = os.path.join(tmp, f"{label}.log")
        self.fallbacks = os.path.join(tmp, f"{label}-fallbacks")
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss_kib = 0
        self.hwm_kib = 0
        self.spare_rss_kib = 0  # the child it forked ahead, waiting for the next request

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client_env(self) -> dict[str, str]:
        return {"WEFT_SOCKET": self.sock, "WEFT_FALLBACK_LOG": self.fallbacks}

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [self.weft, "serve", "--socket", self.sock],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weft serve exited {self.proc.returncode}: {self._text()}")
            if "serving on" in self._text():
                return
            time.sleep(0.02)
        raise RuntimeError(f"weft serve not ready after 30 s: {self._text()}")

    def _text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def sample(self) -> None:
        """The helper's own memory, and its waiting spare child's (the children serving
        requests are measured per exec)."""
        rss, hwm = _status_kib(self.pid)
        if rss:
            self.rss_kib, self.hwm_kib = rss, max(self.hwm_kib, hwm)
        spares = [c for c in _children(self.pid) if _comm(c).startswith("weft-spare")]
        if spares:
            self.spare_rss_kib = max(self.spare_rss_kib, _status_kib(spares[0])[0])

    def stop(self, v: Verdict) -> dict[str, Any]:
        assert self.proc is not None
        alive = self.proc.poll() is None
        if alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            rc = self.proc.wait()
        text = self._text()
        served = text.count("]: request command=")
        try:
            with open(self.fallbacks) as f:
                fell_back = f.read().splitlines()
        except FileNotFoundError:
            fell_back = []
        if not alive:
            v.fail("helper", self.label, f"weft serve died during the run ({rc})")
        elif rc != 0:
            v.fail("helper", self.label, f"weft serve exited {rc} on SIGTERM")
        if served == 0:
            v.fail("helper", self.label, "weft serve served no request")
        if fell_back:
            v.fail("helper", self.label, f"{len(fell_back)} execs ran in-process: {fell_back[:3]}")
        return {
            "served": served,
            "fell_back": len(fell_back),
            "rss_kib": self.rss_kib,
            "hwm_kib": self.hwm_kib,
            "spare_rss_kib": self.spare_rss_kib,
            "exit": rc,
        }


def _person(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The executable run as a person at a shell would (no CNI_* variables)."""
    env = {k: val for k, val in os.environ.items() if not k.startswith("CNI_")}
    return subprocess.run(
        [path, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def has_helper(path: str) -> bool:
    """Whether this build has ``weft serve``: its ``serve --help`` prints serve's own usage.
    (A build without it answers any unknown argument with its about text and exit 0, so
    the exit status alone says nothing.)"""
    try:
        proc = _person(path, "serve", "--help")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.lstrip().startswith("usage: weft serve")


def build_version(path: str) -> str:
    """``weft --version``'s line, or the CNI VERSION answer when that gives nothing."""
    try:
        proc = _person(path, "--version")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    line = proc.stdout.strip()
    return line if proc.returncode == 0 and line else version_of(path)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXHAUSTION_TEXT = "no IP addresses available"
# containernetworking/plugins#886 (fixed in v1.3.0 by #887): bridge CHECK wants a gateway-less
# route verbatim although ADD installed it "via <gw>", so Debian's 1.1.1 fails CHECK on exactly
# the k3s/flannel config. Only for a bridge-style plugin (the reference) this failure is
# recorded, not counted.
KNOWN_REF_CHECK_DEFECT = "not found in routing table"


@dataclass
class Verdict:
    """Correctness bookkeeping: failures make the run exit non-zero."""

    failures: list[str] = field(default_factory=list)
    fields: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    peak_rss_kib: dict[str, int] = field(default_factory=dict)

    def fail(self, scenario: str, label: str, msg: str) -> None:
        line = f"[{scenario}/{label}] {msg}"
        self.failures.append(line)
        print(f"CORRECTNESS FAILURE {line}", file=sys.stderr, flush=True)

    def put(self, label: str, scenario: str, **values: Any) -> None:
        self.fields.setdefault(label, {}).setdefault(scenario, {}).update(values)

    def seen(self, label: str, execs: Sequence[Exec]) -> None:
        for e in execs:
            self.peak_rss_kib[label] = max(self.peak_rss_kib.get(label, 0), e.maxrss_kib)


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _cid(sb: Sandbox, *parts: object) -> str:
    return "-".join([sb.tag, *(str(p) for p in parts)])


def _order(plugins: Sequence[Plugin], i: int) -> list[Plugin]:
    """Rep ``i``'s order: rotated by ``i // 2``, reversed on odd reps, so that over ``2 * n``
    reps every column runs in every position equally often and after different neighbours
    (for three columns: all six orders)."""
    k = (i // 2) % max(1, len(plugins))
    order = list(plugins[k:]) + list(plugins[:k])
    return order if i % 2 == 0 else order[::-1]


def _pod_ipv4(pod: str) -> list[str]:
    return ipv4_of(ip_json(pod, ["addr", "show", "dev", "eth0"]), "eth0")


# --------------------------------------------------------------------------- scenario 1


def scenario_single(
    plugins: Sequence[Plugin],
    pools: dict[str, list[str]],
    sb: Sandbox,
    reps: int,
    warmup: int,
    v: Verdict,
) -> dict[str, Any]:
    data: dict[str, dict[str, dict[str, list[float]]]] = {}
    for pl in plugins:
        per: dict[str, dict[str, list[float]]] = {
            c: {"wall_ms": [], "cpu_ms": [], "rss_kib": []} for c in ("ADD", "CHECK", "DEL")
        }
        per["cycle"] = {"wall_ms": [], "cpu_ms": []}
        data[pl.label] = per
    counts = {
        pl.label: {
            "adds_ok": 0,
            "checks_ok": 0,
            "dels_ok": 0,
            "kernel_matches": 0,
            "eth0_left_after_del": 0,
            "failed": 0,
            "checks_failed_known_reference_defect": 0,
        }
        for pl in plugins
    }

    def cycle(pl: Plugin, rep: int | str, record: bool) -> None:
        pod = pools[pl.label][0]
        path = sb.path(pod)
        cid = _cid(sb, "single", pl.label, rep)
        conf = pl.config()
        c = counts[pl.label]
        add = run(pl, "ADD", cid, path, conf)
        v.seen(pl.label, [add])
        if not add.ok:
            c["failed"] += 1
            v.fail("single", pl.label, f"ADD failed: {add.describe()}")
            run(pl, "DEL", cid, path, conf)  # as a runtime does after a failed ADD
            return
        c["adds_ok"] += 1
        ips = add.ipv4()
        kernel = _pod_ipv4(pod)
        if ips and sorted(ips) == sorted(kernel):
            c["kernel_matches"] += 1
        else:
            v.fail("single", pl.label, f"ADD result {ips} != kernel eth0 {kernel}")
        prev = with_prev(conf, add)
        chk = run(pl, "CHECK", cid, path, prev)
        if chk.ok:
            c["checks_ok"] += 1
        elif pl.style == "bridge" and KNOWN_REF_CHECK_DEFECT in chk.stdout.decode(errors="replace"):
            c["checks_failed_known_reference_defect"] += 1
        else:
            v.fail("single", pl.label, f"CHECK failed: {chk.describe()}")
        dele = run(pl, "DEL", cid, path, prev)
        v.seen(pl.label, [chk, dele])
        if dele.ok:
            c["dels_ok"] += 1
        else:
            v.fail("single", pl.label, f"DEL failed: {dele.describe()}")
        if ip_json(pod, ["link", "show", "dev", "eth0"]):
            c["eth0_left_after_del"] += 1
            v.fail("single", pl.label, "eth0 still in the pod netns after DEL")
        if not record:
            return
        d = data[pl.label]
        for e in (add, chk, dele):
            d[e.command]["wall_ms"].append(ms(e.wall_s))
            d[e.command]["cpu_ms"].append(ms(e.cpu_s))
            d[e.command]["rss_kib"].append(e.maxrss_kib)
        d["cycle"]["wall_ms"].append(ms(add.wall_s + dele.wall_s))
        d["cycle"]["cpu_ms"].append(ms(add.cpu_s + dele.cpu_s))

    for w in range(warmup):
        for pl in _order(plugins, w):
            cycle(pl, f"warm{w}", record=False)
    for rep in range(reps):
        for pl in _order(plugins, rep):
            cycle(pl, rep, record=True)
        if (rep + 1) % 10 == 0:
            print(f"  single: {rep + 1}/{reps} reps", flush=True)

    leaked = len(veths(sb.node))
    for pl in plugins:
        left = len(pl.reservations())
        files = pl.store_leftovers()
        if files:
            v.fail("single", pl.label, f"files left in the store after DEL: {files[:5]}")
        v.put(
            pl.label,
            "single",
            store_files_after=len(files),
            reps=reps,
            **counts[pl.label],
            node_veths_after=leaked,
            reservations_after=left,
        )
        if leaked:
            v.fail("single", pl.label, f"{leaked} veth left in the node netns")
        if left:
            v.fail("single", pl.label, f"{left} reservations left in {pl.store}")
    return data


# --------------------------------------------------------------------------- scenario 2


def _burst_once(pl: Plugin, pods: list[str], sb: Sandbox, rnd: int, v: Verdict) -> dict[str, Any]:
    n = len(pods)
    conf = pl.config()
    cids = [_cid(sb, "burst", rnd, pl.label, i) for i in range(n)]
    paths = [sb.path(p) for p in pods]

    t0 = time.perf_counter()
    pend = [spawn(pl, "ADD", cids[i], paths[i], conf) for i in range(n)]
    adds = [finish(p) for p in pend]
    add_wall = time.perf_counter() - t0

    failed = [a for a in adds if not a.ok]
    for a in failed[:5]:
        v.fail("burst", pl.label, f"ADD failed: {a.describe()}")
    result_ips = [a.ipv4()[0].split("/")[0] if a.ipv4() else "" for a in adds]
    got = [ip for ip in result_ips if ip]
    distinct = len(set(got))
    duplicates = len(got) - distinct
    if duplicates:
        v.fail("burst", pl.label, f"{duplicates} duplicate addresses handed out")
    kernel = ip_json_many(pods, ["addr", "show", "dev", "eth0"])
    kernel_ips = [ipv4_of(kernel[p], "eth0") for p in pods]
    mismatch = sum(
        1
        for r, k in zip(result_ips, kernel_ips, strict=True)
        if r and [x.split("/")[0] for x in k] != [r]
    )
    kernel_distinct = len({k[0] for k in kernel_ips if k})
    if mismatch:
        v.fail("burst", pl.label, f"{mismatch} pods whose eth0 address != ADD result")
    node_veths_during = len(veths(sb.node))
    store_during = len(pl.reservations())

    del_confs = [with_prev(conf, a) for a in adds]
    t0 = time.perf_counter()
    pend = [spawn(pl, "DEL", cids[i], paths[i], del_confs[i]) for i in range(n)]
    dels = [finish(p) for p in pend]
    del_wall = time.perf_counter() - t0
    del_failed = [d for d in dels if not d.ok]
    for d in del_failed[:5]:
        v.fail("burst", pl.label, f"DEL failed: {d.describe()}")
    v.seen(pl.label, adds + dels)

    node_veths_after = len(veths(sb.node))
    store_after = len(pl.reservations())
    files_after = pl.store_leftovers()
    if files_after:
        v.fail("burst", pl.label, f"files left in the store after DEL: {files_after[:5]}")
    eth0_left = sum(
        1 for links in ip_json_many(pods, ["link", "show", "dev", "eth0"]).values() if links
    )
    if node_veths_after:
        v.fail("burst", pl.label, f"{node_veths_after} veth left in the node netns after DEL")
    if store_after:
        v.fail("burst", pl.label, f"{store_after} reservations left after DEL")
    if eth0_left:
        v.fail("burst", pl.label, f"{eth0_left} pod netns still have eth0 after DEL")
    add_cpu = sum(a.cpu_s for a in adds)
    del_cpu = sum(d.cpu_s for d in dels)
    return {
        "pods": n,
        "add_wall_ms": ms(add_wall),
        "del_wall_ms": ms(del_wall),
        "total_wall_ms": ms(add_wall + del_wall),
        "add_cpu_ms": ms(add_cpu),
        "del_cpu_ms": ms(del_cpu),
        "total_cpu_ms": ms(add_cpu + del_cpu),
        "max_rss_kib": max(e.maxrss_kib for e in adds + dels),
        "add_failed": len(failed),
        "del_failed": len(del_failed),
        "distinct_addresses": distinct,
        "duplicates": duplicates,
        "kernel_distinct_addresses": kernel_distinct,
        "kernel_mismatch": mismatch,
        "node_veths_during": node_veths_during,
        "reservations_during": store_during,
        "node_veths_after": node_veths_after,
        "reservations_after": store_after,
        "store_files_after": len(files_after),
        "eth0_left_after": eth0_left,
    }


def scenario_burst(
    plugins: Sequence[Plugin],
    pools: dict[str, list[str]],
    sb: Sandbox,
    n: int,
    rounds: int,
    v: Verdict,
) -> dict[str, Any]:
    out: dict[str, Any] = {pl.label: {"rounds": []} for pl in plugins}
    for rnd in range(rounds):
        for pl in _order(plugins, rnd):
            r = _burst_once(pl, pools[pl.label][:n], sb, rnd, v)
            out[pl.label]["rounds"].append(r)
            print(
                f"  burst round {rnd + 1}/{rounds} {pl.label}: add {r['add_wall_ms']:.0f} ms, "
                f"del {r['del_wall_ms']:.0f} ms, distinct {r['distinct_addresses']}/{n}",
                flush=True,
            )
    for pl in plugins:
        rs = out[pl.label]["rounds"]
        summary = {
            k: statistics.median(r[k] for r in rs)
            for k in (
                "add_wall_ms",
                "del_wall_ms",
                "total_wall_ms",
                "add_cpu_ms",
                "del_cpu_ms",
                "total_cpu_ms",
            )
        }
        summary["max_rss_kib"] = max(r["max_rss_kib"] for r in rs)
        out[pl.label]["summary"] = summary
        v.put(
            pl.label,
            "burst",
            pods=n,
            rounds=rounds,
            add_failed=sum(r["add_failed"] for r in rs),
            del_failed=sum(r["del_failed"] for r in rs),
            min_distinct_addresses=min(r["distinct_addresses"] for r in rs),
            duplicates=sum(r["duplicates"] for r in rs),
            kernel_mismatch=sum(r["kernel_mismatch"] for r in rs),
            max_node_veths_after=max(r["node_veths_after"] for r in rs),
            max_reservations_after=max(r["reservations_after"] for r in rs),
            max_store_files_after=max(r["store_files_after"] for r in rs),
            max_eth0_left_after=max(r["eth0_left_after"] for r in rs),
            all_distinct=all(
                r["distinct_addresses"] == n and r["kernel_distinct_addresses"] == n for r in rs
            ),
            all_released=all(
                r["reservations_after"] == 0
                and r["store_files_after"] == 0
                and r["node_veths_after"] == 0
                and r["eth0_left_after"] == 0
                for r in rs
            ),
        )
        if not v.fields[pl.label]["burst"]["all_distinct"]:
            v.fail("burst", pl.label, "not every pod got its own address")
    return out


# --------------------------------------------------------------------------- scenario 3


BRIDGE_MAX_PORTS = 1024  # the kernel's BR_MAX_PORTS: every column's veths share one cni0


def scenario_fill(
    plugins: Sequence[Plugin],
    pools: dict[str, list[str]],
    sb: Sandbox,
    capacity: int,
    v: Verdict,
) -> dict[str, Any]:
    """The columns filled side by side, in as few groups as the bridge's port limit allows
    (each group filled, checked and emptied before the next)."""
    per_group = max(1, BRIDGE_MAX_PORTS // (capacity + 1))
    out: dict[str, Any] = {}
    for start in range(0, len(plugins), per_group):
        group = plugins[start:start + per_group]
        if len(group) < len(plugins):
            print(f"  fill: {', '.join(pl.label for pl in group)}", flush=True)
        out.update(_fill_group(group, pools, sb, capacity, v))
    return out


def _fill_group(
    plugins: Sequence[Plugin],
    pools: dict[str, list[str]],
    sb: Sandbox,
    capacity: int,
    v: Verdict,
) -> dict[str, Any]:
    adds: dict[str, list[Exec]] = {pl.label: [] for pl in plugins}
    confs = {pl.label: pl.config() for pl in plugins}
    for i in range(capacity):
        for pl in _order(plugins, i):
            pod = pools[pl.label][i]
            a = run(pl, "ADD", _cid(sb, "fill", pl.label, i), sb.path(pod), confs[pl.label])
            adds[pl.label].append(a)
            if not a.ok:
                v.fail("fill", pl.label, f"ADD #{i + 1} failed: {a.describe()}")
        if (i + 1) % 50 == 0:
            print(f"  fill: {i + 1}/{capacity} ADDs", flush=True)

    out: dict[str, Any] = {}
    for pl in plugins:
        label = pl.label
        execs = adds[label]
        v.seen(label, execs)
        ok = [a for a in execs if a.ok]
        result_ips = [a.ipv4()[0].split("/")[0] if a.ok and a.ipv4() else "" for a in execs]
        distinct = len({ip for ip in result_ips if ip})
        pods = pools[label][:capacity]
        kernel = ip_json_many(pods, ["addr", "show", "dev", "eth0"])
        kernel_ips = [[x.split("/")[0] for x in ipv4_of(kernel[p], "eth0")] for p in pods]
        mismatch = sum(1 for r, k in zip(result_ips, kernel_ips, strict=True) if r and k != [r])
        if distinct != capacity:
            v.fail("fill", label, f"{distinct} distinct addresses for {capacity} ADDs")
        if mismatch:
            v.fail("fill", label, f"{mismatch} pods whose eth0 address != ADD result")
        stored = len(pl.reservations())
        if stored != capacity:
            v.fail("fill", label, f"store holds {stored} reservations, expected {capacity}")

        # One more: the range is full, this must fail with the exhaustion error.
        extra_pod = pools[label][capacity]
        extra_cid = _cid(sb, "fill", label, "extra")
        extra = run(pl, "ADD", extra_cid, sb.path(extra_pod), confs[label])
        v.seen(label, [extra])
        err = extra.json() if isinstance(extra.json(), dict) else {}
        msg = str(err.get("msg", ""))
        exhausted = (not extra.ok) and EXHAUSTION_TEXT in msg and "code" in err
        if not exhausted:
            v.fail(
                "fill",
                label,
                f"ADD past the full range did not fail as exhausted: {extra.describe()}",
            )
        eth0_on_failure = bool(ip_json(extra_pod, ["link", "show", "dev", "eth0"]))
        # As a runtime does after a failed ADD: DEL (no prevResult); it must succeed.
        cleanup = run(pl, "DEL", extra_cid, sb.path(extra_pod), confs[label])
        if not cleanup.ok:
            v.fail("fill", label, f"DEL after the failed ADD failed: {cleanup.describe()}")
        eth0_after_cleanup = bool(ip_json(extra_pod, ["link", "show", "dev", "eth0"]))
        if eth0_after_cleanup:
            v.fail("fill", label, "eth0 left in the pod netns after the failed ADD + DEL")
        out[label] = {
            "capacity": capacity,
            "add_wall_ms": [ms(a.wall_s) for a in execs],
            "add_cpu_ms": [ms(a.cpu_s) for a in execs],
            "exhaustion": {
                "rc": extra.rc,
                "code": err.get("code"),
                "msg": msg,
                "eth0_left_by_failed_add": eth0_on_failure,
            },
        }
        v.put(
            label,
            "fill",
            adds_ok=len(ok),
            capacity=capacity,
            distinct_addresses=distinct,
            kernel_mismatch=mismatch,
            reservations_when_full=stored,
            exhaustion_ok=exhausted,
            exhaustion_code=err.get("code"),
            del_after_failed_add_ok=cleanup.ok,
            eth0_left_after_failed_add=eth0_after_cleanup,
        )

    node_full = len(veths(sb.node))
    expected = capacity * len(plugins)
    if node_full != expected:
        v.fail("fill", "all", f"{node_full} veth in the node netns when full, expected {expected}")

    dels: dict[str, list[Exec]] = {pl.label: [] for pl in plugins}
    for i in range(capacity):
        for pl in _order(plugins, i):
            a = adds[pl.label][i]
            d = run(
                pl,
                "DEL",
                a.container_id,
                sb.path(pools[pl.label][i]),
                with_prev(confs[pl.label], a),
            )
            dels[pl.label].append(d)
            if not d.ok:
                v.fail("fill", pl.label, f"DEL #{i + 1} failed: {d.describe()}")
    node_after = len(veths(sb.node))
    for pl in plugins:
        v.seen(pl.label, dels[pl.label])
        left = len(pl.reservations())
        files = pl.store_leftovers()
        if files:
            v.fail("fill", pl.label, f"files left in the store after DEL all: {files[:5]}")
        pods = pools[pl.label][:capacity]
        eth0_left = sum(
            1 for links in ip_json_many(pods, ["link", "show", "dev", "eth0"]).values() if links
        )
        out[pl.label]["del_wall_ms"] = [ms(d.wall_s) for d in dels[pl.label]]
        v.put(
            pl.label,
            "fill",
            node_veths_when_full=node_full,
            dels_ok=sum(1 for d in dels[pl.label] if d.ok),
            reservations_after=left,
            store_files_after=len(files),
            node_veths_after=node_after,
            eth0_left_after=eth0_left,
            all_released=left == 0 and not files and node_after == 0 and eth0_left == 0,
        )
        if left or node_after or eth0_left:
            v.fail(
                "fill",
                pl.label,
                f"leak after DEL all: reservations={left} "
                f"node veths={node_after} pod eth0={eth0_left}",
            )
    return out


# --------------------------------------------------------------------------- driver


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        load = ""
    iproute = subprocess.run(["ip", "-V"], capture_output=True, text=True, check=False)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "iproute2": iproute.stdout.strip(),
        "hostname": platform.node(),
        "loadavg_start": load,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--weft",
        default=os.path.join(REPO, "dist/weft/weft"),
        help="weft plugin executable (default: dist/weft/weft)",
    )
    p.add_argument(
        "--weft-style",
        choices=("auto", "flannel", "bridge"),
        default="auto",
        help="config shape for --weft: flannel (type weft, subnetFile) or bridge "
        "(as the reference); auto = bridge when the executable is named 'bridge'",
    )
    p.add_argument(
        "--reference-dir",
        default=REFERENCE_DIR,
        help="directory holding the reference bridge and host-local",
    )
    p.add_argument("--reference-only", action="store_true", help="benchmark only the reference")
    p.add_argument(
        "--baseline",
        metavar="PATH",
        default=None,
        help="another frozen weft (e.g. a previous release) benchmarked in the same run: "
        "columns baseline and, when its `weft serve` exists, baseline-helper",
    )
    p.add_argument("--reps", type=int, default=None, help="single-cycle repetitions (>=30)")
    p.add_argument("--warmup", type=int, default=2, help="unrecorded warm-up cycles per plugin")
    p.add_argument("--burst", type=int, default=None, help="pods per burst (100)")
    p.add_argument("--burst-rounds", type=int, default=None, help="burst rounds per plugin (3)")
    p.add_argument("--fill", dest="fill", action="store_true", default=True)
    p.add_argument("--no-fill", dest="fill", action="store_false")
    p.add_argument(
        "--prefix-len",
        type=int,
        default=None,
        help="FLANNEL_SUBNET prefix length (24; --quick: 27)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --reps 5 --burst 10 --burst-rounds 1 --prefix-len 27",
    )
    p.add_argument(
        "--exec-mode",
        choices=("auto", "launcher", "direct"),
        default="auto",
        help="launcher: exec plugins through bench/wbexec.c (built with cc) so ru_maxrss is the "
        "plugin's own; direct: Popen the plugin (ru_maxrss floored at this process's RSS); "
        "auto: launcher when a C compiler exists",
    )
    p.add_argument(
        "--no-helper",
        dest="helper",
        action="store_false",
        default=True,
        help="no weft-helper column (the same weft, every exec handed to `weft serve`)",
    )
    p.add_argument("--out-dir", default=os.path.join(REPO, "bench/results"))
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    a = p.parse_args(argv)
    a.reps = a.reps if a.reps is not None else (5 if a.quick else 30)
    a.burst = a.burst if a.burst is not None else (10 if a.quick else 100)
    a.burst_rounds = a.burst_rounds if a.burst_rounds is not None else (1 if a.quick else 3)
    a.prefix_len = a.prefix_len if a.prefix_len is not None else (27 if a.quick else 24)
    if not 16 <= a.prefix_len <= 30:
        p.error("--prefix-len must be within 16..30")
    capacity = 2 ** (32 - a.prefix_len) - 3
    if a.burst > capacity:
        p.error(f"--burst {a.burst} does not fit a /{a.prefix_len} ({capacity} addresses)")
    if a.reps < 1 or a.burst < 1 or a.burst_rounds < 1:
        p.error("--reps, --burst and --burst-rounds must be >= 1")
    if a.baseline is not None and a.reference_only:
        p.error("--baseline needs weft: not with --reference-only")
    return a


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root (network namespaces)", file=sys.stderr)
        return 2
    ref_bridge = os.path.join(args.reference_dir, "bridge")
    if not os.access(ref_bridge, os.X_OK):
        print(f"bench: reference plugin {ref_bridge} not found", file=sys.stderr)
        return 2
    weft_path = os.path.abspath(args.weft)
    if not args.reference_only and not os.access(weft_path, os.X_OK):
        print(
            f"bench: weft executable {weft_path} not found (use --weft PATH or --reference-only)",
            file=sys.stderr,
        )
        return 2
    base_path = os.path.abspath(args.baseline) if args.baseline is not None else None
    if base_path is not None and not os.access(base_path, os.X_OK):
        print(f"bench: baseline executable {base_path} not found", file=sys.stderr)
        return 2

    subnet = Subnet(
        network=ipaddress.IPv4Network("10.42.0.0/16"),
        subnet=ipaddress.IPv4Interface(f"10.42.0.1/{args.prefix_len}"),
        mtu=1450,
        ipmasq=True,
    )
    capacity = subnet.capacity
    tmp = tempfile.mkdtemp(prefix="wb-bench-")
    subnet_file = os.path.join(tmp, "subnet.env")
    with open(subnet_file, "w") as f:
        f.write(subnet.render())
    try:
        setup_launcher(tmp, args.exec_mode)
    except RuntimeError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    plugins: list[Plugin] = []
    helpers: dict[str, Helper] = {}

    def weft_columns(label: str, path: str, data_dir: str, style: Style, helper: bool) -> None:
        """A build's in-process column and, with ``helper``, its column through its own
        ``weft serve`` (the data dirs apart: each column keeps a store of its own)."""
        cni_path = f"{os.path.dirname(path)}:{args.reference_dir}"
        columns = [(label, f"{data_dir}-ipam", {"WEFT_SOCKET": "off"})]  # in-process
        if helper:
            hl = f"{label}-helper"
            helpers[hl] = Helper(path, tmp, hl)
            columns.append((hl, f"{data_dir}-helper-ipam", helpers[hl].client_env()))
        for column, store, env in columns:
            plugins.append(Plugin(label=column, path=path, style=style, data_dir=store,
                                  subnet_file=subnet_file, subnet=subnet, cni_path=cni_path,
                                  env=env))

    if not args.reference_only:
        style = args.weft_style
        if style == "auto":
            style = "bridge" if os.path.basename(weft_path) == "bridge" else "flannel"
        weft_columns("weft", weft_path, os.path.join(tmp, "weft"), style, args.helper)
    baseline: dict[str, Any] | None = None
    if base_path is not None:
        base_serves = has_helper(base_path)
        base_helper = args.helper and base_serves
        baseline = {
            "path": base_path,
            "version": build_version(base_path),
            "has_serve": base_serves,
            "helper_column": base_helper,
        }
        weft_columns("baseline", base_path, os.path.join(tmp, "baseline"), plugins[0].style,
                     base_helper)
    plugins.append(
        Plugin(
            label="reference",
            path=ref_bridge,
            style="bridge",
            data_dir=os.path.join(tmp, "ref-ipam"),
            subnet_file=subnet_file,
            subnet=subnet,
            cni_path=args.reference_dir,
        )
    )

    pool_size = max(1, args.burst, capacity + 1 if args.fill else 0)
    v = Verdict()
    results: dict[str, Any] = {
        "meta": machine_info(),
        "params": {
            "reps": args.reps,
            "warmup": args.warmup,
            "burst": args.burst,
            "burst_rounds": args.burst_rounds,
            "fill": args.fill,
            "quick": args.quick,
            "subnet_file": subnet.render().strip().split("\n"),
            "capacity": capacity,
            "reference_only": args.reference_only,
            "exec_mode": exec_mode(),
        },
        "plugins": {
            pl.label: {
                "path": pl.path,
                "style": pl.style,
                "config": pl.config(),
                "version": version_of(pl.path),
            }
            for pl in plugins
        },
    }
    if baseline is not None:
        results["baseline"] = baseline
    for k, val in results["meta"].items():
        print(f"{k:>18}: {val}")
    for pl in plugins:
        print(f"{pl.label:>18}: {pl.path} ({pl.style} config)")
    print(f"{'exec':>18}: {exec_mode()}")
    if baseline is not None:
        has = "has `weft serve`" if baseline["has_serve"] else "no `weft serve`"
        print(f"{'baseline build':>18}: {baseline['version']} ({has})")

    started: list[Helper] = []
    for h in helpers.values():
        try:
            h.start()
        except RuntimeError as exc:
            for other in started:
                other.stop(Verdict())
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"bench: {h.label}: {exc}", file=sys.stderr)
            return 2
        started.append(h)
        print(f"{h.label:>18}: {h.weft} serve (pid {h.pid})")
    sb = Sandbox("wb")
    interrupted = False
    old_term = signal.signal(signal.SIGTERM, _on_signal)
    old_hup = signal.signal(signal.SIGHUP, _on_signal)
    try:
        stale = cleanup_stale("wb")
        if stale:
            print(f"removed {len(stale)} stale netns of dead bench runs")
        pools = sb.create({pl.label: pool_size for pl in plugins})
        sb.enter_node()
        print(f"sandbox: node netns {sb.node}, {pool_size} pod netns per plugin", flush=True)

        print(f"[1/3] single pod cycle x{args.reps}", flush=True)
        results["single"] = scenario_single(plugins, pools, sb, args.reps, args.warmup, v)
        for h in helpers.values():
            h.sample()
        print(f"[2/3] burst of {args.burst} x{args.burst_rounds}", flush=True)
        results["burst"] = scenario_burst(plugins, pools, sb, args.burst, args.burst_rounds, v)
        if args.fill:
            print(f"[3/3] fill {capacity} addresses", flush=True)
            results["fill"] = scenario_fill(plugins, pools, sb, capacity, v)
        else:
            results["fill"] = {}
        for h in helpers.values():
            h.sample()
        left_veth = len(veths(sb.node))
        for pl in plugins:
            v.put(
                pl.label,
                "final",
                node_veths=left_veth,
                reservations=len(pl.reservations()),
                store_files=len(pl.store_leftovers()),
            )
    except _Stop as exc:
        interrupted = True
        v.fail("run", "all", f"interrupted by {exc}")
    except Exception as exc:  # report what we have, then fail
        v.fail("run", "all", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGHUP, old_hup)
        kill_live()
        for h in helpers.values():
            results["helper" if h.label == "weft-helper" else h.label] = h.stop(v)
        sb.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
        remaining = (
            [n for n in os.listdir("/run/netns") if n.startswith(sb.tag + "-")]
            if os.path.isdir("/run/netns")
            else []
        )
        if remaining:
            v.fail("cleanup", "all", f"netns left behind: {remaining[:5]}")

    if interrupted:  # partial figures would overwrite good ones: report nothing
        print(f"bench: {v.failures[-1]}; sandbox cleaned up, no results written", file=sys.stderr)
        return 1
    for label in v.peak_rss_kib:
        v.put(label, "final", peak_rss_kib=v.peak_rss_kib[label])
    with open("/proc/loadavg") as f:
        results["meta"]["loadavg_end"] = " ".join(f.read().split()[:3])
    results["correctness"] = v.fields
    results["failures"] = v.failures
    results["ok"] = not v.failures
    report.finalize(results, [pl.label for pl in plugins])
    report.emit(results, args.out_dir, plot=not args.no_plot)
    if v.failures:
        print(f"\n{len(v.failures)} CORRECTNESS FAILURE(S):", file=sys.stderr)
        for line in v.failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("\ncorrectness: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
