"""Concurrency: many plugin processes against one node never double-book an
address, never leak a reservation or a veth, and a held lock is a bounded wait (code 11)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.netns import (
    Netns,
    Node,
    Outcome,
    node_veths,
    owners,
    pod_addr,
    pod_links,
    records,
    reserved_by,
    subnet_env,
    tree,
)
from tests.robustness._support import (
    assert_gone,
    assert_there,
    bump,
    expect_error,
    expect_ok_empty,
    expect_result,
    host_veth,
    result_ip,
    run_bounded,
)

pytestmark = pytest.mark.root

WORKERS = 12
PODS = 120  # 120 ADDs + 80 DELs = 200 operations
SOAK = os.environ.get("WEFT_SOAK") == "1"
SAME_ID_ROUNDS = int(os.environ.get("WEFT_RACE_ROUNDS", "60" if SOAK else "12"))


@dataclass
class Op:
    cid: str
    pod: Netns
    delete: bool
    add: Outcome | None = None
    dele: Outcome | None = None
    added_at: float = 0.0  # monotonic, after the ADD returned
    del_started: float = 0.0  # monotonic, before the DEL was started


def _lifecycle(node: Node, op: Op) -> Op:
    op.add = node.add(op.pod, op.cid)
    op.added_at = time.monotonic()
    if op.delete:
        op.del_started = time.monotonic()
        op.dele = node.delete(op.pod, op.cid)
    return op


def test_200_interleaved_adds_and_dels_never_double_book(node: Node) -> None:
    """120 pods, 12 parallel workers: every pod is ADDed, 80 of them are DELeted right after,
    so ADDs and DELs of different pods interleave (200 plugin runs). No address is held by
    two pods at once (checked on every ADD result, on the pods' eth0 and in the store), no
    reservation/record/veth survives a DEL, and the survivors are exactly what is left."""
    ops = [Op(f"conc-{i:03d}", node.pod(), delete=i % 3 != 0) for i in range(PODS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        done = list(pool.map(lambda op: _lifecycle(node, op), ops))
    runs = [o for op in done for o in (op.add, op.dele) if o is not None]
    bump("concurrency.operations", len(runs))  # plugin runs that returned an outcome

    results: dict[str, dict[str, Any]] = {}
    for op in done:
        assert op.add is not None
        results[op.cid] = expect_result(op.add)
        if op.dele is not None:
            expect_ok_empty(op.dele)
    ips = {cid: result_ip(r) for cid, r in results.items()}

    # An address may be reused only after its previous holder's DEL started.
    by_ip: dict[str, list[Op]] = {}
    for op in done:
        by_ip.setdefault(ips[op.cid], []).append(op)
    duplicates = 0
    for holders in by_ip.values():
        for i, a in enumerate(holders):
            for b in holders[i + 1:]:
                a_end = a.del_started if a.delete else float("inf")
                b_end = b.del_started if b.delete else float("inf")
                # both held it at once: each one's ADD returned before the other's DEL began
                if a.added_at < b_end and b.added_at < a_end:
                    duplicates += 1
    bump("concurrency.duplicate_addresses", duplicates)
    assert duplicates == 0, {ip: [h.cid for h in hs] for ip, hs in by_ip.items() if len(hs) > 1}

    survivors = [op for op in done if not op.delete]
    want_store = {ips[op.cid]: f"{op.cid}\r\neth0" for op in survivors}
    bump("concurrency.leaked_reservations", len(set(owners(node)) - set(want_store)))
    assert owners(node) == want_store  # no reservation of a deleted pod, none missing
    assert len(set(want_store)) == len(survivors)
    assert node_veths(node) == {host_veth(results[op.cid]) for op in survivors}  # no orphan
    assert sorted(r["containerID"] for r in records(node).values()) == sorted(
        op.cid for op in survivors
    )
    for op in done:
        if op.delete:
            assert pod_links(op.pod) == set(), op.cid
        else:
            assert pod_addr(op.pod) == [ips[op.cid]], op.cid

    # and the survivors still DEL cleanly
    with ThreadPoolExecutor(WORKERS) as pool:
        outs = list(pool.map(lambda op: node.delete(op.pod, op.cid), survivors))
    for o in outs:
        expect_ok_empty(o)
    assert owners(node) == {} and node_veths(node) == set() and records(node) == {}


def _race_round(node: Node, cid: str, pod: Netns, conf: dict[str, Any]) -> str:
    """ADD and DEL of the same container started together; returns 'there' or 'gone'."""
    start = threading.Barrier(2)
    out: dict[str, Outcome] = {}

    def run(cmd: str) -> None:
        start.wait()
        out[cmd] = node.add(pod, cid, conf) if cmd == "ADD" else node.delete(pod, cid, conf)

    threads = [threading.Thread(target=run, args=(c,)) for c in ("ADD", "DEL")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expect_ok_empty(out["DEL"])
    res = expect_result(out["ADD"])  # ADD never fails because of a concurrent DEL
    ip = result_ip(res)
    if pod_links(pod) or any(v == host_veth(res) for v in node_veths(node)) or owners(node):
        assert_there(node, pod, cid, ip)  # anything left means everything is there
        state = "there"
    else:
        assert_gone(node, pod, cid)
        state = "gone"
    expect_ok_empty(node.delete(pod, cid, conf))
    assert_gone(node, pod, cid)
    return state


def test_same_container_add_and_del_race_all_or_nothing(node: Node) -> None:
    """Concurrent ADD and DEL of the same container ID, many rounds: the end state is
    fully there (veth on cni0, eth0 with the reported address, reservation, record) or
    fully gone; never half. Every other round starts with a store directory that does
    not exist yet (DEL's no-store path races ADD's first write)."""
    states: dict[str, int] = {"there": 0, "gone": 0}
    for i in range(SAME_ID_ROUNDS):
        if i % 2:
            sub = node
        else:  # same node netns, fresh files: the store does not exist when both start
            sub = Node(node.ns, node.tmp / f"race-{i}", plugin=node.plugin)
            sub.tmp.mkdir()
            sub.write_subnet()
        states[_race_round(sub, f"race-{i}", node.pod(), sub.conf())] += 1
    bump("concurrency.same_id_ended_there", states["there"])
    bump("concurrency.same_id_ended_gone", states["gone"])


def test_held_lock_is_a_bounded_wait_with_code_11(node: Node) -> None:
    """Another process holds <dataDir>/cbr0/lock: ADD (and DEL, CHECK) with lockTimeout 1
    answer code 11 JSON with a non-zero exit instead of hanging, and change nothing."""
    first = node.pod()
    res = expect_result(node.add(first, "lock-holder-pod"))
    pod = node.pod()
    before = (tree(node.data_dir), node_veths(node), pod_links(pod), pod_links(first))
    conf = node.conf()
    conf["lockTimeout"] = 1
    fd = os.open(node.store_dir() / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        add, _ = run_bounded(node, "ADD", conf, "lock-waiter", pod.path, timeout=30)
        err = expect_error(add, code=11)
        assert "lock" in (err["msg"] + err.get("details", "")).lower()
        dele, _ = run_bounded(node, "DEL", conf, "lock-holder-pod", first.path, timeout=30)
        check_conf = dict(conf, prevResult=res)
        chk, _ = run_bounded(node, "CHECK", check_conf, "lock-holder-pod", first.path, timeout=30)
        answers = [expect_error(o, code=11) for o in (add, dele, chk)]
        assert (tree(node.data_dir), node_veths(node), pod_links(pod), pod_links(first)) == before
        bump("concurrency.lock_timeouts_code_11", len(answers))
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    # released: the same ADD now goes through
    ok = expect_result(node.add(pod, "lock-waiter", conf))
    assert_there(node, pod, "lock-waiter", result_ip(ok))


def test_repeated_add_of_a_live_pod_never_frees_its_address(node: Node) -> None:
    """The runtime may repeat an ADD (a retry after a timeout, a restarted kubelet). Failing
    it is fine; freeing the address the live pod still has on its eth0 is not: in a full
    /29 the next pods would be handed that address (double booking)."""
    node.write_subnet(subnet_env("10.42.0.1/29"))
    live = node.pod()
    ip = result_ip(expect_result(node.add(live, "live")))
    again = node.add(live, "live")
    if again.rc != 0:
        expect_error(again)
    assert pod_addr(live) == [ip]
    others: list[str] = []
    for i in range(5):  # the rest of the /29 (5 usable addresses) and one more
        out = node.add(node.pod(), f"next-{i}")
        if out.rc == 0:
            others.append(result_ip(expect_result(out)))
        else:
            assert i == 4 and expect_error(out)["code"] == 100  # only the 6th: exhausted
    dup = others.count(ip)
    bump("concurrency.repeated_add_double_bookings", dup)
    assert dup == 0, f"{ip} is on live's eth0 and was handed out again"
    assert reserved_by(node, "live") == [ip]
