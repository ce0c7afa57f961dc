"""Lock files and records must not outlive their attachment, whoever deleted it: CNI GC,
``weft gc`` and ADD's reclaim (one teardown path) each sweep what is left of attachments
that no longer exist. Oracles: the store's files on disk, ``ip -j``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from typing import Any

import pytest

from tests.netns import (
    REFERENCE_DIR,
    Node,
    attachment_lock,
    delete_netns,
    netconf,
    owners,
    reference_plugin,
    store_weft_files,
    subnet_env,
)
from tests.operator.test_operator import wait_for_veths

pytestmark = pytest.mark.root

SLASH_29 = subnet_env("10.42.5.1/29", ipmasq=True)  # 10.42.5.2 - .6: five pods


def weft_gc(node: Node, *args: str) -> str:
    path = node.tmp / "weft.conf"
    path.write_text(json.dumps(node.conf()))
    proc = subprocess.run(
        ["ip", "netns", "exec", node.ns.name, node.plugin, "gc", "--conf", str(path), *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def add(node: Node, cid: str, **kw: Any) -> None:
    out = node.add(node.pod(), cid, **kw)
    assert out.rc == 0, out


def lock_file(node: Node, cid: str) -> str:
    return f"locks/{attachment_lock(node.store_dir(), cid).name}"


@pytest.mark.parametrize("path", ["cni-gc", "weft-gc", "add-reclaim"])
def test_every_gc_path_sweeps_orphan_records_and_lock_files(node: Node, path: str) -> None:
    node.write_subnet(SLASH_29)
    store = node.store_dir()
    ref = dataclasses.replace(node, plugin=str(REFERENCE_DIR / "bridge"))
    ref_conf = netconf(reference_plugin(SLASH_29, node.data_dir))
    # a pod weft made and the reference deleted: host-local released its address, and
    # weft's record and lock file stay behind
    add(node, "by-weft")
    out = ref.delete(node.pods[-1], "by-weft", ref_conf)
    assert out.rc == 0, out
    assert "10.42.5.2" not in owners(node)
    assert lock_file(node, "by-weft") in store_weft_files(store)
    assert [r["containerID"] for r in node.records().values()] == ["by-weft"]
    # a lock file of an attachment that is gone (a DEL that died after the store work)
    died = attachment_lock(store, "died")
    died.touch()
    # a live pod keeps everything
    add(node, "live")
    live = {"live"}

    if path == "cni-gc":
        valid = [{"containerID": "live", "ifname": "eth0"}]
        out = node.exec("GC", dict(node.conf("1.1.0"), **{"cni.dev/valid-attachments": valid}))
        assert out.rc == 0, out
    elif path == "weft-gc":
        before = store_weft_files(store)
        assert "would release - by-weft/eth0" in weft_gc(node, "--dry-run")
        assert store_weft_files(store) == before and died.exists()
        report = weft_gc(node)
        assert "released - by-weft/eth0" in report, report
    else:
        # fill the range, one pod's netns vanishing without DEL; the next ADD reclaims
        for i in range(4):
            add(node, f"fill{i}")
        stale = node.pods[-1]
        delete_netns(stale)
        node.pods.remove(stale)
        wait_for_veths(node, 4)
        add(node, "last")
        live |= {"fill0", "fill1", "fill2", "last"}

    left = store_weft_files(store)
    assert not died.exists()
    assert sorted(f for f in left if f.startswith("locks/")) == sorted(
        lock_file(node, cid) for cid in live
    )
    assert {r["containerID"] for r in node.records().values()} == live
