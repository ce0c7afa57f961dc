"""Switching between weft and the reference (``/usr/lib/cni/bridge`` + ``host-local``, as
flannel's CNI plugin drives them) on one live node, as an operator would: reference ->
weft -> reference -> weft, three pods each, one store and one cni0, dual stack, with ipMasq
off and on. Judged by the kernel (``ip -j``), the whole nat tables (``iptables-save`` /
``ip6tables-save``) before and after, and the store's files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.netns import (
    REFERENCE_DIR,
    Netns,
    Node,
    attachment_lock,
    masq_chain_of,
    nat_left,
    nat_mentions,
    netconf,
    owners,
    pod_addr,
    pod_links,
    reference_plugin,
    store_weft_files,
    subnet_env,
)

pytestmark = pytest.mark.root

REF_BRIDGE = str(REFERENCE_DIR / "bridge")
V6_NETWORK, V6_SUBNET = "2001:cafe:42::/56", "2001:cafe:42::1/64"


class Pod(NamedTuple):
    by_reference: bool
    ns: Netns
    cid: str
    result: dict[str, Any]

    def ips(self) -> list[str]:
        return [ip["address"].split("/")[0] for ip in self.result["ips"]]


def reference_conf(node: Node, text: str) -> dict[str, Any]:
    """What flannel's CNI plugin hands the reference for this subnet file, dual stack."""
    plugin = reference_plugin(text, node.data_dir)
    plugin["ipam"]["ranges"].append([{"subnet": "2001:cafe:42::/64"}])
    plugin["ipam"]["routes"].append({"dst": V6_NETWORK})
    return netconf(plugin)


def node_links(node: Node) -> dict[str, str]:
    """name -> kind of every link in the node netns (``ip -j -d link``)."""
    return {
        name: link.get("linkinfo", {}).get("info_kind", "")
        for name, link in node.ns.links().items()
    }


def weft_gc(node: Node, conf: dict[str, Any]) -> str:
    """``weft gc`` as an operator runs it on the node (no CNI_* variables)."""
    path = node.tmp / "weft.conf"
    path.write_text(json.dumps(conf))
    proc = subprocess.run(
        ["ip", "netns", "exec", node.ns.name, node.plugin, "gc", "--conf", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def masq_shape(node: Node, pod: Pod) -> list[str]:
    """The pod's nat lines with its chain, id and addresses replaced by placeholders."""
    v4, v6 = pod.ips()
    out = []
    for ln in nat_mentions(node, pod.cid):
        ln = ln.replace(masq_chain_of(pod.cid), "CHAIN").replace(f'\\"{pod.cid}\\"', "ID")
        out.append(ln.replace(f"{v4}/", "IP4/").replace(f"{v6}/", "IP6/"))
    return sorted(out)


@pytest.mark.parametrize("masq", [False, True], ids=["ipMasq-false", "ipMasq-true"])
def test_reference_weft_reference_weft_on_one_node(node: Node, masq: bool) -> None:
    text = subnet_env(ipmasq=not masq, ipv6=(V6_NETWORK, V6_SUBNET))
    node.write_subnet(text)
    ref = dataclasses.replace(node, plugin=REF_BRIDGE)
    confs = {True: reference_conf(node, text), False: node.conf()}
    assert confs[True]["ipMasq"] is masq
    links_before = node_links(node)
    store = node.store_dir()

    pods: list[Pod] = []
    for rnd, by_ref in enumerate([True, False, True, False]):
        for i in range(3):
            cid = f"r{rnd}-{'ref' if by_ref else 'weft'}-{i}"
            pod_ns = node.pod()
            out = (ref if by_ref else node).add(pod_ns, cid, confs[by_ref])
            assert out.rc == 0, out
            pods.append(Pod(by_ref, pod_ns, cid, out.json))

    # one address per pod and family, unique across both plugins, in kernel and store
    held = [a for p in pods for a in pod_addr(p.ns)]
    assert sorted(held) == sorted(a for p in pods for a in p.ips()) and len(set(held)) == 24
    assert sorted(owners(node)) == sorted(held)
    assert all(owners(node)[ip] == f"{p.cid}\r\neth0" for p in pods for ip in p.ips())

    # every pod reaches every other one, whoever made either
    for p in pods:
        for q in pods:
            if p is q:
                continue
            out = p.ns.run("ping", "-c", "1", "-W", "2", q.ips()[0], check=False)
            assert out.returncode == 0, (p.cid, q.cid, out.stdout + out.stderr)
        out = p.ns.run("ping", "-6", "-c", "1", "-W", "2", pods[0].ips()[1], check=False)
        assert p is pods[0] or out.returncode == 0, (p.cid, out.stdout + out.stderr)

    # weft's CHECK passes for every pod, the reference's included, and takes a lock file
    # only for what weft made
    for p in pods:
        out = node.check(p.ns, p.cid, p.result, confs[False])
        assert out.rc == 0, (p.cid, out)
    locks = [f for f in store_weft_files(store) if f.startswith("locks/")]
    assert sorted(locks) == sorted(
        f"locks/{attachment_lock(store, p.cid).name}" for p in pods if not p.by_reference
    )

    # masquerading: the same rules whoever made the pod
    if masq:
        shapes = {tuple(masq_shape(node, p)) for p in pods}
        assert len(shapes) == 1 and len(next(iter(shapes))) == 8, shapes
    else:
        assert nat_left(node) == []

    # DEL in both directions: weft deletes the reference's pods, the reference weft's
    # (first time), and nothing of the pod is left for a later pod with its address
    for p in pods:
        deleter = node if p.by_reference else ref
        out = deleter.delete(p.ns, p.cid, confs[not p.by_reference])
        assert out.rc == 0, (p.cid, out)
        assert pod_links(p.ns) == set()
        assert not set(p.ips()) & set(owners(node))
        assert not nat_mentions(node, p.cid)
        assert not [ln for ln in nat_left(node) if any(f" {ip}/" in ln for ip in p.ips())]

    # the reference knows nothing of .weft/: weft's records of the pods it deleted hold no
    # address; `weft gc` removes them with their lock files
    orphans = {p.cid for p in pods if not p.by_reference}
    assert {r["containerID"] for r in node.records().values()} == orphans
    report = weft_gc(node, confs[False])
    released = [ln.split()[2] for ln in report.splitlines() if ln.startswith("released ")]
    assert sorted(released) == sorted(f"{cid}/eth0" for cid in orphans), report

    # nothing left: kernel, nat tables, store
    links_after = node_links(node)
    assert links_after.pop("cni0") == "bridge"  # both plugins keep the bridge, no port on it
    assert links_after == links_before
    assert not [ln for ln in node.ns.run("bridge", "link").stdout.splitlines() if "cni0" in ln]
    assert nat_left(node) == []
    assert owners(node) == {} and node.records() == {} and store_weft_files(store) == []
    assert sorted(p.name for p in store.iterdir() if p.is_file()) == [
        "last_reserved_ip.0",
        "last_reserved_ip.1",
        "lock",
    ]


def file_modes(store: Path) -> dict[str, int]:
    return {
        p.name if not p.name[0].isdigit() else "<ip>": stat.S_IMODE(p.stat().st_mode)
        for p in store.iterdir()
        if p.is_file()
    }


def test_a_store_weft_creates_looks_like_the_one_the_reference_creates(node: Node) -> None:
    """Same files, same modes (host-local creates ``lock`` 0750), same contents."""
    text = node.subnet_file.read_text()
    ref = dataclasses.replace(node, plugin=REF_BRIDGE)
    p1, p2 = node.pod(), node.pod()
    ref_conf = netconf(reference_plugin(text, node.tmp / "ref-store"))
    assert ref.add(p1, "c1", ref_conf).rc == 0
    assert node.add(p2, "c1").rc == 0
    ref_store, weft_store = node.tmp / "ref-store" / "cbr0", node.store_dir()
    assert file_modes(weft_store) == file_modes(ref_store)
    assert file_modes(weft_store)["lock"] == 0o750
    for name in ("10.42.0.2", "last_reserved_ip.0", "lock"):
        assert (weft_store / name).read_bytes() == (ref_store / name).read_bytes()
    assert ref.delete(p1, "c1", ref_conf).rc == 0
    assert node.delete(p2, "c1").rc == 0
