"""Reboots: reservations of pods from an earlier boot whose netns is gone are
reclaimed when the range is full; a reservation whose netns still exists is never
reclaimed, whatever its boot ID; GC releases exactly what the runtime no longer lists."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.netns import (
    Netns,
    Node,
    delete_netns,
    node_veths,
    owners,
    pod_links,
    records,
    records_for,
    reserved_by,
    subnet_env,
)
from tests.robustness._support import (
    assert_there,
    bump,
    expect_error,
    expect_ok_empty,
    expect_result,
    result_ip,
)

pytestmark = pytest.mark.root

SMALL = subnet_env("10.42.0.1/29")  # 10.42.0.2 .. 10.42.0.6: five addresses
POOL = {f"10.42.0.{i}" for i in range(2, 7)}


def _reboot(node: Node, old_boot: str = "0f0f0f0f-dead-beef-0000-000000000000") -> int:
    """Pretend the records were written in another boot; returns how many were rewritten."""
    adir = node.store_dir() / ".weft"
    n = 0
    for p in adir.glob("*.json"):
        rec = json.loads(p.read_bytes())
        rec["bootID"] = old_boot
        p.write_text(json.dumps(rec))
        n += 1
    return n


def _fill(node: Node, prefix: str, count: int) -> dict[str, tuple[Netns, str]]:
    out = {}
    for i in range(count):
        pod = node.pod()
        cid = f"{prefix}-{i}"
        out[cid] = (pod, result_ip(expect_result(node.add(pod, cid))))
    return out


def _kill_netns(node: Node, pod: Netns) -> None:
    """The pod's netns is gone as after a reboot (its veth pair goes with it)."""
    delete_netns(pod)
    node.pods.remove(pod)


def test_reboot_reclaims_only_pods_whose_netns_is_gone_and_gc_releases_the_rest(
    node: Node,
) -> None:
    node.write_subnet(SMALL)
    pods = _fill(node, "old", 5)
    assert {ip for _, ip in pods.values()} == POOL
    full = node.add(node.pod(), "overflow")
    expect_error(full, code=100)  # the range really is full
    assert _reboot(node) == 5

    gone = ["old-0", "old-2", "old-4"]  # netns deleted by the "reboot"
    alive = ["old-1", "old-3"]  # netns still there (e.g. bind-mounted and kept)
    for cid in gone:
        _kill_netns(node, pods[cid][0])
    new = _fill(node, "new", 1)  # the range is full: this ADD has to reclaim
    reclaimed = [cid for cid in gone if not reserved_by(node, cid)]
    assert reclaimed == gone, owners(node)  # every stale one at once
    for cid in gone:
        assert not records_for(node, cid)
    for cid in alive:  # NOT reclaimed, though their boot ID is another one
        pod, ip = pods[cid]
        assert reserved_by(node, cid) == [ip]
        assert records_for(node, cid) and pod_links(pod) == {"eth0"}
    assert new["new-0"][1] in {pods[c][1] for c in gone}
    bump("reboot.scenarios")
    bump("reboot.addresses_reclaimed", len(reclaimed))

    more = _fill(node, "new2", 2)  # the two other reclaimed addresses
    new.update(more)
    expect_error(node.add(node.pod(), "overflow2"), code=100)  # alive ones still hold theirs
    assert set(owners(node)) == POOL

    # GC (CNI 1.1.0) with the runtime's list: exactly the unlisted attachments go
    valid = ["old-1", "new-0"]
    gc: dict[str, Any] = node.conf("1.1.0")
    gc["cni.dev/valid-attachments"] = [{"containerID": c, "ifname": "eth0"} for c in valid]
    expect_ok_empty(node.exec("GC", gc))
    listed = {**{c: pods[c] for c in ("old-1",)}, "new-0": new["new-0"]}
    for cid, (pod, ip) in listed.items():
        assert_there(node, pod, cid, ip)
    released = [c for c in ("old-3", "new2-0", "new2-1") if not reserved_by(node, c)]
    assert released == ["old-3", "new2-0", "new2-1"]
    for cid in released:
        pod = pods[cid][0] if cid in pods else new[cid][0]
        assert "eth0" not in pod_links(pod) and not records_for(node, cid)
    assert set(owners(node)) == {ip for _, ip in listed.values()}
    assert len(node_veths(node)) == 2 and len(records(node)) == 2
    bump("reboot.gc_released", len(released))


def test_reboot_same_container_readded_after_reboot(node: Node) -> None:
    """A container ID whose record is from an earlier boot and whose netns is gone is
    re-ADDed (the runtime recreating the sandbox): not a duplicate, gets an address."""
    node.write_subnet(SMALL)
    pods = _fill(node, "again", 1)
    pod, ip = pods["again-0"]
    _reboot(node)
    _kill_netns(node, pod)
    fresh = node.pod()
    def of_old_pod() -> list[dict[str, Any]]:
        return [r for r in records_for(node, "again-0") if r["netns"] == pod.path]

    stale = of_old_pod()
    assert reserved_by(node, "again-0") == [ip] and len(stale) == 1  # before the ADD
    res = expect_result(node.add(fresh, "again-0"))
    assert_there(node, fresh, "again-0", result_ip(res))
    assert len(owners(node)) == 1 and of_old_pod() == []
    bump("reboot.scenarios")
    bump("reboot.addresses_reclaimed", len(stale) - len(of_old_pod()))


def test_reboot_all_netns_alive_nothing_is_reclaimed(node: Node) -> None:
    """Every reservation has an old boot ID but every netns still exists: the range stays
    full (code 100), nothing is torn down."""
    node.write_subnet(SMALL)
    pods = _fill(node, "kept", 5)
    _reboot(node)
    before = (owners(node), node_veths(node), len(records(node)))
    expect_error(node.add(node.pod(), "overflow"), code=100)
    assert (owners(node), node_veths(node), len(records(node))) == before
    for cid, (pod, ip) in pods.items():
        assert_there(node, pod, cid, ip)
    bump("reboot.scenarios")


def test_reboot_host_local_reservations_without_records_are_not_guessed(node: Node) -> None:
    """Reservations written by host-local (no weft record, so no boot ID) fill the range:
    weft does not guess they are stale (code 100), and GC releases the unlisted ones."""
    node.write_subnet(SMALL)
    store = node.store_dir()
    store.mkdir(parents=True)
    for ip in sorted(POOL):
        (store / ip).write_bytes(f"hl-{ip.rsplit('.', 1)[1]}\r\neth0".encode())
    expect_error(node.add(node.pod(), "overflow"), code=100)
    assert set(owners(node)) == POOL
    gc: dict[str, Any] = node.conf("1.1.0")
    gc["cni.dev/valid-attachments"] = [{"containerID": "hl-2", "ifname": "eth0"}]
    before = set(owners(node))
    expect_ok_empty(node.exec("GC", gc))
    assert owners(node) == {"10.42.0.2": "hl-2\r\neth0"}
    released = before - set(owners(node))
    pod = node.pod()
    res = expect_result(node.add(pod, "after-gc"))
    assert result_ip(res) in POOL - {"10.42.0.2"}
    bump("reboot.scenarios")
    bump("reboot.gc_released", len(released))
