"""weft's own masquerading (ipMasq on: FLANNEL_IPMASQ=false) against a real kernel, judged by
what packets look like where they arrive, not by the rule text.

A sandbox node with an "outside" host on its uplink (no route back to the pods), br_netfilter
on as k3s requires it (so pod-to-pod traffic on cni0 also passes the nat table), dual stack.
A UDP recorder in the receiving netns writes down each datagram's source address.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import (
    Netns,
    Node,
    delete_netns,
    masq_chain_of,
    nat_left,
    nat_table,
    new_netns,
    subnet_env,
    veth,
)

pytestmark = pytest.mark.root

V6_NETWORK, V6_SUBNET = "2001:cafe:42::/56", "2001:cafe:42::1/64"
NODE_UP = {4: "192.0.2.1", 6: "2001:db8:1::1"}  # the node's uplink addresses
OUTSIDE = {4: "192.0.2.2", 6: "2001:db8:1::2"}
PORT = 9999

RECORDER = r"""
import json, select, socket, sys
out = open(sys.argv[1], "a", buffering=1)
socks = []
for fam, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((any_addr, int(sys.argv[2])))
    socks.append(s)
out.write(json.dumps(["ready", ""]) + "\n")
while True:
    ready, _, _ = select.select(socks, [], [], 60)
    if not ready:
        break
    for s in ready:
        data, src = s.recvfrom(256)
        out.write(json.dumps([data.decode(), src[0]]) + "\n")
"""

SENDER = r"""
import socket, sys
dst, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
socket.socket(fam, socket.SOCK_DGRAM).sendto(tag.encode(), (dst, port))
"""


class Recorder:
    """A UDP listener in ``ns`` on both families; ``source_of`` sends one datagram from
    another netns and answers the source address it arrived with (None: it never came)."""

    def __init__(self, ns: Netns, log: Path) -> None:
        self.log = log
        self.proc = ns.popen("python3", "-c", RECORDER, str(log), str(PORT))
        assert self._wait("ready") is not None, "the UDP recorder did not start"

    def _wait(self, tag: str, timeout: float = 5.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists():
                for line in self.log.read_text().splitlines():
                    got, src = json.loads(line)
                    if got == tag:
                        return str(src)
            time.sleep(0.05)
        return None

    def source_of(self, sender: Netns, dst: str) -> str | None:
        tag = uuid.uuid4().hex
        sender.run("python3", "-c", SENDER, dst, str(PORT), tag)
        return self._wait(tag)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


class Site:
    def __init__(self, node: Node, outside: Netns, tmp: Path) -> None:
        self.node, self.outside, self.tmp = node, outside, tmp

    def recorder(self, ns: Netns) -> Recorder:
        return Recorder(ns, self.tmp / f"udp-{uuid.uuid4().hex[:8]}.log")


@pytest.fixture
def site(node: Node, tmp_path: Path) -> Iterator[Site]:
    node.write_subnet(subnet_env(ipmasq=False, ipv6=(V6_NETWORK, V6_SUBNET)))
    for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
        node.ns.sysctl(f"net.bridge.{key}", "1")
    outside = new_netns("wt-out")
    try:
        veth(node.ns, "up0", outside, "eth0")
        for v in (4, 6):
            plen, nodad = ("24", []) if v == 4 else ("64", ["nodad"])
            node.ns.run("ip", "addr", "add", f"{NODE_UP[v]}/{plen}", "dev", "up0", *nodad)
            outside.run("ip", "addr", "add", f"{OUTSIDE[v]}/{plen}", "dev", "eth0", *nodad)
        yield Site(node, outside, tmp_path)
    finally:
        delete_netns(outside)


def add(node: Node, pod: Netns, cid: str) -> dict[str, Any]:
    out = node.add(pod, cid)
    assert out.rc == 0, out
    res: dict[str, Any] = out.json
    return res


def addr(res: dict[str, Any], version: int) -> str:
    return next(
        ip["address"].split("/")[0] for ip in res["ips"] if (":" in ip["address"]) == (version == 6)
    )


@pytest.mark.parametrize("version", [4, 6])
def test_pod_to_outside_leaves_with_the_nodes_address(site: Site, version: int) -> None:
    node = site.node
    pod = node.pod()
    add(node, pod, "c1")
    rec = site.recorder(site.outside)
    try:
        assert rec.source_of(pod, OUTSIDE[version]) == NODE_UP[version]
    finally:
        rec.stop()
    # and the outside's reply finds its way back (it has no route to the pods)
    flag = "-4" if version == 4 else "-6"
    out = pod.run("ping", flag, "-c", "1", "-W", "2", OUTSIDE[version], check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("version", [4, 6])
def test_pod_to_pod_keeps_its_source(site: Site, version: int) -> None:
    node = site.node
    p1, p2 = node.pod(), node.pod()
    r1, r2 = add(node, p1, "c1"), add(node, p2, "c2")
    rec = site.recorder(p2)
    try:
        assert rec.source_of(p1, addr(r2, version)) == addr(r1, version)
    finally:
        rec.stop()


@pytest.mark.parametrize("version", [4, 6])
def test_check_fails_once_the_masquerade_jump_is_gone(site: Site, version: int) -> None:
    node = site.node
    pod = node.pod()
    res = add(node, pod, "c1")
    ok = node.check(pod, "c1", res)
    assert ok.rc == 0, ok
    chain = masq_chain_of("c1")
    tool = "iptables" if version == 4 else "ip6tables"
    family = "ipv4" if version == 4 else "ipv6"
    [jump] = [
        ln.split(" ", 1)[1]
        for ln in nat_table(node.ns)
        if ln.startswith(f"{family} -A POSTROUTING ") and ln.endswith(f"-j {chain}")
    ]
    node.ns.run("sh", "-c", f"{tool} -w 5 -t nat -D {jump[3:]}")
    out = node.check(pod, "c1", res)
    assert out.rc == 1, out
    e = json.loads(out.stdout)
    assert e["code"] == 102, e
    assert e["msg"] == f"masquerade rule for c1 (IPv{version}) not found", e
    # DEL removes what is left, and the whole nat table is as it was
    assert node.delete(pod, "c1").rc == 0
    assert nat_left(node) == []


def test_ipv6_rules_live_in_ip6tables_and_del_leaves_the_nat_tables_as_they_were(
    site: Site,
) -> None:
    node = site.node
    p1, p2 = node.pod(), node.pod()
    add(node, p1, "c1")
    add(node, p2, "c2")
    added = nat_left(node)
    pods = (("c1", "10.42.0.2", "2001:cafe:42::2"), ("c2", "10.42.0.3", "2001:cafe:42::3"))
    for cid, ip4, ip6 in pods:
        chain = masq_chain_of(cid)
        assert f"+ ipv4 :{chain} - [0:0]" in added and f"+ ipv6 :{chain} - [0:0]" in added
        assert any(ln.startswith(f"+ ipv4 -A POSTROUTING -s {ip4}/32 ") for ln in added)
        assert any(ln.startswith(f"+ ipv6 -A POSTROUTING -s {ip6}/128 ") for ln in added)
    assert not any(":" in ln.split()[5] for ln in added if ln.startswith("+ ipv4 -A POSTROUTING"))
    assert node.delete(p1, "c1").rc == 0
    assert not [ln for ln in nat_left(node) if "10.42.0.2/" in ln or "2001:cafe:42::2/" in ln]
    assert node.delete(p2, "c2").rc == 0
    assert nat_left(node) == []
