"""Shared helpers for the robustness suite: outcome checks, what must be gone or there after
a command (over the sandbox library's oracles, tests/netns.py) and the figures the suite
reports.

Everything here reads state; nothing creates network objects outside the Node sandbox.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.netns import (
    Netns,
    Node,
    Outcome,
    delete_netns,
    host_veth_name,
    nat_mentions,
    nat_table,
    new_netns,
    node_veths,
    owners,
    pod_addr,
    pod_links,
    records_for,
    reserved_by,
)

# figure name -> number; printed at the end of the run and written to figures.json
FIGURES: dict[str, int] = {}

TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/')


def bump(key: str, n: int = 1) -> None:
    FIGURES[key] = FIGURES.get(key, 0) + n


def killed(rc: int) -> bool:
    """SIGKILL as seen through ``ip netns exec`` (which execs the plugin: -9) or a shell (137)."""
    return rc in (-9, 137)


# ---- outcome checks ---------------------------------------------------------------------
class Malformed(AssertionError):
    """The plugin printed something that is not a CNI result / CNI error."""


def parse_stdout(o: Outcome) -> dict[str, Any] | None:
    """The JSON object on stdout (None when stdout is empty); Malformed otherwise."""
    for marker in TRACEBACK_MARKERS:
        if marker in o.stdout:
            raise Malformed(f"traceback on stdout: {o.stdout[:400]!r}")
    if not o.stdout.strip():
        return None
    try:
        obj = json.loads(o.stdout)
    except ValueError as e:
        raise Malformed(f"stdout is not JSON ({e}): {o.stdout[:400]!r}") from None
    if not isinstance(obj, dict):
        raise Malformed(f"stdout is not a JSON object: {o.stdout[:400]!r}")
    return obj


def expect_error(o: Outcome, code: int | None = None) -> dict[str, Any]:
    """A CNI error: non-zero exit, JSON object with int code (not 999) and str msg."""
    assert o.rc != 0, f"expected failure, got rc 0: {o.stdout[:400]!r}"
    assert o.rc > 0, f"plugin died by signal {-o.rc}: {o.stderr[-800:]!r}"
    obj = parse_stdout(o)
    assert obj is not None, f"failure without error JSON (rc {o.rc}); stderr {o.stderr[-800:]!r}"
    assert isinstance(obj.get("code"), int) and not isinstance(obj["code"], bool), obj
    assert isinstance(obj.get("msg"), str) and obj["msg"], obj
    assert obj["code"] != 999, f"code 999 (internal error) for bad input: {obj}"
    if code is not None:
        assert obj["code"] == code, obj
    return obj


def expect_result(o: Outcome) -> dict[str, Any]:
    """A successful ADD: rc 0 and a result with interfaces and ips."""
    assert o.rc == 0, f"rc {o.rc}: stdout {o.stdout[:600]!r} stderr {o.stderr[-800:]!r}"
    obj = parse_stdout(o)
    assert obj is not None and isinstance(obj.get("ips"), list) and obj["ips"], o.stdout
    return obj


def expect_ok_empty(o: Outcome) -> None:
    """A successful DEL/STATUS/GC: rc 0, nothing (or only whitespace) on stdout."""
    assert o.rc == 0, f"rc {o.rc}: stdout {o.stdout[:600]!r} stderr {o.stderr[-800:]!r}"
    assert not o.stdout.strip(), o.stdout


def result_ip(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"]).split("/")[0]


def host_veth(result: dict[str, Any]) -> str:
    return str(result["interfaces"][1]["name"])


def assert_gone(node: Node, pod: Netns | None, cid: str, ifname: str = "eth0") -> None:
    """Nothing of (cid, ifname) is left: veth, pod interface, reservation, record, nat."""
    name = host_veth_name(cid, ifname)
    assert name not in node_veths(node), f"host veth {name} of {cid} left in the node"
    if pod is not None:
        assert ifname not in pod_links(pod), f"{ifname} left in the pod netns of {cid}"
    assert not reserved_by(node, cid, ifname), f"reservation left for {cid}: {owners(node)}"
    assert not records_for(node, cid), f"attachment record left for {cid}"
    assert not nat_mentions(node, cid), f"nat rules left for {cid}: {nat_mentions(node, cid)}"


def assert_there(node: Node, pod: Netns, cid: str, ip: str, ifname: str = "eth0") -> None:
    """(cid, ifname) fully attached: host veth on cni0, pod ifname with ``ip``, reservation."""
    name = host_veth_name(cid, ifname)
    links = node.ns.links()
    assert name in links, f"host veth {name} of {cid} missing"
    assert links[name].get("master") == "cni0", links[name]
    assert ifname in pod_links(pod), f"{ifname} missing in pod of {cid}"
    assert pod_addr(pod, ifname) == [ip], (pod_addr(pod, ifname), ip)
    assert reserved_by(node, cid, ifname) == [ip], owners(node)
    assert len(records_for(node, cid)) == 1


@contextmanager
def extra_node(tmp: Path, subnet: str | None = None) -> Iterator[Node]:
    """A second sandbox node (prefix ``wr``) for tests that need several."""
    tmp.mkdir(parents=True, exist_ok=True)
    ns = new_netns("wr")
    n = Node(ns, tmp, nat_before=nat_table(ns))
    n.write_subnet(subnet)
    try:
        yield n
    finally:
        for p in n.pods:
            delete_netns(p)
        delete_netns(n.ns)


def run_bounded(node: Node, command: str, conf: dict[str, Any], cid: str, netns: str,
                timeout: float, ifname: str = "eth0") -> tuple[Outcome, float]:
    """Like ``node.exec`` but with our own hang bound; returns (outcome, seconds)."""
    t0 = time.monotonic()
    outcome = node.exec(command, conf, cid, netns, ifname, timeout=timeout)
    return outcome, time.monotonic() - t0
