"""CHECK against a real kernel: each way an attachment can break after ADD, made with iproute2
or on the store's files (never through weft), must turn a passing CHECK into code 102 (weft's
"CHECK failed", cnispec.errors.CHECK_FAILED) whose message names that breakage; and DEL must
still release everything afterwards.

``tests/unit/test_check.py`` covers the diff on hand-built data; this covers what the diff is
fed: what ``cni.plugin.bridge.observe`` (netlink) and the store read back from a real node.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.netns import Netns, Node
from tests.netns import expect_ok as ok

pytestmark = pytest.mark.root

CHECK_FAILED = 102
POD_IP = "10.42.0.2"


def break_mtu(node: Node, pod: Netns, res: dict[str, Any]) -> None:
    pod.run("ip", "link", "set", "eth0", "mtu", "1400")


def break_mac(node: Node, pod: Netns, res: dict[str, Any]) -> None:
    pod.run("ip", "link", "set", "eth0", "address", "02:00:00:00:be:ef")


def break_link_down(node: Node, pod: Netns, res: dict[str, Any]) -> None:
    pod.run("ip", "link", "set", "eth0", "down")


def break_detach_veth(node: Node, pod: Netns, res: dict[str, Any]) -> None:
    node.ns.run("ip", "link", "set", res["interfaces"][1]["name"], "nomaster")


def break_delete_bridge(node: Node, pod: Netns, res: dict[str, Any]) -> None:
    node.ns.run("ip", "link", "del", "cni0")


def break_remove_reservation(node: Node, pod: Netns, res: dict[str, Any]) -> None:
    (node.store_dir() / POD_IP).unlink()


def break_remove_address(node: Node, pod: Netns, res: dict[str, Any]) -> None:
    pod.run("ip", "addr", "del", f"{POD_IP}/24", "dev", "eth0")


Breakage = Callable[[Node, Netns, dict[str, Any]], None]

# (breakage, the message CHECK must answer with: its first drift names the root cause)
CASES: list[tuple[Breakage, str]] = [
    (break_mtu, "interface eth0 MTU is 1400, want 1450"),
    (break_mac, "interface eth0 MAC changed"),
    (break_link_down, "interface eth0 is down"),
    (break_detach_veth, "host veth {veth} is not attached to cni0"),
    (break_delete_bridge, "bridge cni0 not found"),
    (break_remove_reservation, f"address {POD_IP} is not reserved for c1/eth0"),
    (break_remove_address, f"address {POD_IP}/24 not found on eth0"),
]


@pytest.mark.parametrize(("breakage", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_check_answers_102_naming_each_real_breakage(
    node: Node, breakage: Breakage, message: str
) -> None:
    pod = node.pod()
    res = ok(node.add(pod, "c1"))
    veth = res["interfaces"][1]["name"]
    ok(node.check(pod, "c1", res))  # intact: the control for the 102 below

    breakage(node, pod, res)
    out = node.check(pod, "c1", res)
    assert out.rc == 1, out
    e = json.loads(out.stdout)
    assert e["code"] == CHECK_FAILED, e
    assert e["msg"] == message.format(veth=veth), e
    assert "Traceback" not in out.stdout + out.stderr

    # whatever broke, DEL still releases everything that is left (oracles: ip -j, the store)
    ok(node.delete(pod, "c1"))
    assert node.veths() == [] and node.reservations() == {} and node.weft_files() == []
    assert "eth0" not in pod.links()


def test_check_of_an_intact_attachment_passes_repeatedly(node: Node) -> None:
    """The control for every case above, twice and with a second pod beside it: CHECK does
    not report drift where there is none, and changes nothing it looks at."""
    p1, p2 = node.pod(), node.pod()
    r1, r2 = ok(node.add(p1, "c1")), ok(node.add(p2, "c2"))
    before = (shape(node.ns), shape(p1), shape(p2), node.reservations())
    for _ in range(2):
        ok(node.check(p1, "c1", r1))
        ok(node.check(p2, "c2", r2))
    assert (shape(node.ns), shape(p1), shape(p2), node.reservations()) == before


def shape(ns: Netns) -> dict[str, tuple[Any, ...]]:
    """What CHECK looks at, per link (``ip -j`` also carries timers that tick on their own)."""
    return {
        name: (link["mtu"], link.get("address"), link.get("master"), sorted(link["flags"]))
        for name, link in ns.links().items()
    }
