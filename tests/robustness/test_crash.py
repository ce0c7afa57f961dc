"""Crashes: ADD SIGKILLed at every step leaves nothing behind once the runtime
runs DEL (or GC); garbage a crashed writer (or anyone) leaves in the store is never
trusted as somebody's reservation and never stops other pods."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.netns import (
    Node,
    delete_netns,
    nat_left,
    nat_mentions,
    node_veths,
    owners,
    pod_addr,
    pod_links,
    records,
    records_for,
    reserved_by,
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
    killed,
    result_ip,
)

pytestmark = pytest.mark.root

SOAK = os.environ.get("WEFT_SOAK") == "1"

# (kill point, delegate.ipMasq): every step without masquerading, every step with it
KILL_POINTS = [
    ("reserved", False), ("veth", False), ("configured", False),
    ("reserved", True), ("veth", True), ("configured", True), ("masq", True),
]


def _partial_state_reached(node: Node, pod_links_now: set[str], cid: str, step: str,
                           masq: bool) -> None:
    """The kill happened where it was asked to: what that step made is in place."""
    assert reserved_by(node, cid), "no reservation at the kill point"
    assert records_for(node, cid), "no attachment record at the kill point"
    if step in ("veth", "configured", "masq"):
        assert len(node_veths(node)) == 1 and "eth0" in pod_links_now
    if step == "masq":
        assert nat_mentions(node, cid), "masquerade rule not installed before the kill"
    elif step in ("reserved", "veth", "configured"):
        assert not nat_mentions(node, cid)


@pytest.mark.parametrize("cleanup", ["DEL", "GC"])
@pytest.mark.parametrize(
    ("step", "masq"), KILL_POINTS, ids=[f"{s}-masq{m}" for s, m in KILL_POINTS]
)
def test_add_killed_at_step_then_cleanup_leaves_nothing(
    node: Node, step: str, masq: bool, cleanup: str
) -> None:
    cid = f"crash-{step}"
    pod = node.pod()
    conf = node.conf(ipMasq=masq)
    out = node.add(pod, cid, conf, env={"WEFT_FAULT_AT": step})
    assert killed(out.rc), f"expected SIGKILL at {step}, got rc {out.rc}: {out.stdout}{out.stderr}"
    _partial_state_reached(node, pod_links(pod), cid, step, masq)

    if cleanup == "DEL":  # what the runtime does after a failed ADD
        expect_ok_empty(node.delete(pod, cid, conf))
    else:  # or the GC sweep after the sandbox is gone from the runtime's list
        gc = dict(node.conf("1.1.0", ipMasq=masq), **{"cni.dev/valid-attachments": []})
        expect_ok_empty(node.exec("GC", gc))
    leaks = 0
    try:
        assert_gone(node, pod, cid)
        assert owners(node) == {} and records(node) == {} and node_veths(node) == set()
        assert nat_left(node) == []
        assert pod_links(pod) == set()
    except AssertionError:
        leaks = 1
        raise
    finally:
        bump("crash.kill_points_tried")
        bump("crash.leaks_found", leaks)

    # the runtime's retry of the sandbox works, with the same container id
    res = expect_result(node.add(pod, cid, conf))
    assert_there(node, pod, cid, result_ip(res))
    if masq:
        assert nat_mentions(node, cid)
    expect_ok_empty(node.delete(pod, cid, conf))
    assert_gone(node, pod, cid)


@pytest.mark.parametrize("step", ["veth", "configured"])
def test_add_killed_then_retried_add_keeps_the_reservation(node: Node, step: str) -> None:
    """A second ADD for a container whose first ADD died (the runtime retrying before its
    DEL) may fail, but must not free the address the first ADD reserved while that
    attachment (veth, and at ``configured`` eth0 with the address) is still in the kernel:
    a freed address would be handed to the next pod while this one still uses it."""
    pod = node.pod()
    out = node.add(pod, "retry", env={"WEFT_FAULT_AT": step})
    assert killed(out.rc)
    first = reserved_by(node, "retry")
    assert len(first) == 1
    again = node.add(pod, "retry")
    if again.rc == 0:  # recovering in place is fine too, as long as it is one address
        assert_there(node, pod, "retry", result_ip(expect_result(again)))
    else:
        expect_error(again)
        assert reserved_by(node, "retry") == first, (
            f"failed retry ADD released {first} while the attachment is still in the kernel"
        )
    expect_ok_empty(node.delete(pod, "retry"))
    assert_gone(node, pod, "retry")


def _write(path: Path, data: bytes, age: float = 0.0) -> None:
    path.write_bytes(data)
    if age:
        t = time.time() - age
        os.utime(path, (t, t))


def test_garbage_left_in_the_store_is_not_trusted(node: Node) -> None:
    """What a crashed writer or a stray hand leaves in the store -- the temp file of a
    reservation that never got linked, empty / cut / binary reservation files, a symlink
    (to a file naming the pod), a directory, an oversize file -- is never read as a
    reservation of the pod it names, never deleted as one, and does not stop other pods.
    Addresses such files sit on are not handed out (no double booking on doubt)."""
    store = node.store_dir()
    store.mkdir(parents=True)
    victim = node.tmp / "victim"
    victim.write_bytes(b"ghost\r\neth0")
    garbage: dict[str, bytes] = {
        ".tmp-4242-0a0b0c0d0e0f": b"ghost\r\neth0",  # a reserve() killed before link()
        "10.42.0.2": b"",  # empty
        "10.42.0.3": b"\r\neth0",  # no container id
        "10.42.0.4": b"\xff\xfe\x00ghost\r\neth0",  # binary
        "10.42.0.5": b"gh/ost\r\neth0",  # not a container id
        "10.42.0.6": b"ghost\r\neth0\r\nextra",  # trailing junk: not <id>\r\n<ifname>
        "10.42.0.8": b"ghost\r\neth0" + b" " * 10_000,  # oversize
    }
    for name, data in garbage.items():
        _write(store / name, data)
    _write(store / ".tmp-1-old", b"ghost\r\neth0", age=3600)  # a stale temp file: swept
    (store / "10.42.0.7").symlink_to(victim)
    (store / "10.42.0.9").mkdir()
    kept = tree(store)
    planted = len(kept)  # the store was empty: everything in it now is garbage
    del kept[".tmp-1-old"]

    # DEL of the owner the garbage names removes none of it, and follows no symlink
    ghost_pod = node.pod()
    expect_ok_empty(node.delete(ghost_pod, "ghost"))
    now = tree(store)
    assert {k: now.get(k) for k in kept} == kept

    # other pods get addresses no garbage file sits on, and come and go normally
    taken = {f"10.42.0.{i}" for i in range(2, 10)}
    got = {}
    for i in range(3):
        pod = node.pod()
        res = expect_result(node.add(pod, f"tenant-{i}"))
        got[f"tenant-{i}"] = (pod, result_ip(res))
        assert result_ip(res) not in taken, res
        assert_there(node, pod, f"tenant-{i}", result_ip(res))
    assert len({ip for _, ip in got.values()}) == 3
    # the ghost owns nothing: its own ADD is not a duplicate and gets one fresh address
    res = expect_result(node.add(ghost_pod, "ghost"))
    assert result_ip(res) not in taken
    assert set(reserved_by(node, "ghost")) - taken == {result_ip(res)}
    for cid, (pod, _) in got.items():
        expect_ok_empty(node.delete(pod, cid))
        assert_gone(node, pod, cid)
    expect_ok_empty(node.delete(ghost_pod, "ghost"))
    assert set(reserved_by(node, "ghost")) <= taken and result_ip(res) not in owners(node)
    assert node_veths(node) == set() and pod_links(ghost_pod) == set() and records(node) == {}
    after = tree(store)
    for name, digest in kept.items():  # every garbage file untouched
        if not name.startswith((".weft", "last_reserved_ip", "lock")):
            assert after.get(name) == digest, name
    assert victim.read_bytes() == b"ghost\r\neth0"
    assert ".tmp-1-old" not in after  # swept once old
    bump("crash.garbage_files_planted", planted)


def test_del_leaves_files_that_are_not_reservations_alone(node: Node) -> None:
    """A file whose name is not a canonical IP address is not a reservation (the store's
    own rule), whatever it contains: DEL of the container it names (which does hold a
    real reservation) must not delete it."""
    pod = node.pod()
    expect_result(node.add(pod, "ghost"))
    store = node.store_dir()
    foreign = {"10.42.0.006": b"ghost\r\neth0", "not-an-ip": b"ghost\r\neth0",
               "README": b"ghost"}
    for name, data in foreign.items():
        _write(store / name, data)
    expect_ok_empty(node.delete(pod, "ghost"))
    assert_gone(node, pod, "ghost")
    left = {p.name: p.read_bytes() for p in store.iterdir() if p.name in foreign}
    assert left == foreign, f"DEL deleted foreign files: {sorted(set(foreign) - set(left))}"


def test_random_sigkill_never_leaves_a_half_written_reservation(node: Node) -> None:
    """ADD SIGKILLed at random moments (not only at the named steps): every reservation
    file ever seen in the store reads as a complete ``<containerID>\\r\\n<ifname>`` of the
    container that wrote it, and the runtime's DEL then leaves nothing behind."""
    rng = random.Random(5)
    kills = int(os.environ.get("WEFT_SOAK_KILLS", "60" if SOAK else "16"))
    landed = 0
    probe = node.pod()  # how long one ADD takes here: kill moments are drawn inside it
    t0 = time.monotonic()
    expect_result(node.add(probe, "rk-probe"))
    span = time.monotonic() - t0
    expect_ok_empty(node.delete(probe, "rk-probe"))
    for i in range(kills):
        cid = f"rk-{i}"
        pod = node.pod()
        proc = _spawn(node, "ADD", node.conf(ipMasq=i % 2 == 0), cid, pod.path)
        time.sleep(rng.uniform(0.0, span))
        with contextlib.suppress(ProcessLookupError):  # the whole group: a frozen (onefile)
            os.killpg(proc.pid, signal.SIGKILL)  # binary runs as bootloader + child
        proc.wait(timeout=60)
        landed += proc.returncode == -9
        for ip, who in owners(node).items():
            assert who == f"{cid}\r\neth0", (ip, who)  # complete, and ours
        expect_ok_empty(node.delete(pod, cid, node.conf(ipMasq=i % 2 == 0)))
        assert_gone(node, pod, cid)
        assert owners(node) == {} and node_veths(node) == set() and nat_left(node) == []
        node.pods.remove(pod)
        delete_netns(pod)
    bump("crash.random_kills", landed)
    assert landed > 0


def _spawn(node: Node, command: str, conf: dict[str, object], cid: str, netns: str
           ) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
    }
    proc = subprocess.Popen(
        ["ip", "netns", "exec", node.ns.name, node.plugin], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(conf).encode())
    proc.stdin.close()
    proc.stdin = None  # already closed: wait() below must not flush it
    return proc


def test_corrupt_attachment_record_is_not_trusted(node: Node) -> None:
    """A truncated or foreign attachment record (the JSON under .weft/) does not stop ADD
    or DEL of its container and never makes DEL delete another container's veth."""
    pod_a, pod_b = node.pod(), node.pod()
    res_a = expect_result(node.add(pod_a, "rec-a"))
    res_b = expect_result(node.add(pod_b, "rec-b"))
    veth_b = host_veth(res_b)
    recs = records(node)
    name_a = next(n for n, r in recs.items() if r["containerID"] == "rec-a")
    name_b = next(n for n, r in recs.items() if r["containerID"] == "rec-b")
    adir = node.store_dir() / ".weft"
    # A's record now claims to be B's (foreign), B's record is cut in half
    (adir / name_a).write_bytes((adir / name_b).read_bytes())
    raw_b = (adir / name_b).read_bytes()
    (adir / name_b).write_bytes(raw_b[: len(raw_b) // 2])
    # DEL of A must not take B's veth even though A's record names it
    expect_ok_empty(node.delete(pod_a, "rec-a"))
    assert veth_b in node_veths(node) and pod_addr(pod_b) == [result_ip(res_b)]
    assert reserved_by(node, "rec-b") == [result_ip(res_b)]
    assert not reserved_by(node, "rec-a") and "eth0" not in pod_links(pod_a)
    assert result_ip(res_a) not in owners(node)
    # DEL of B with its truncated record still removes everything of B
    expect_ok_empty(node.delete(pod_b, "rec-b"))
    assert owners(node) == {} and node_veths(node) == set()
    assert pod_links(pod_b) == set()
