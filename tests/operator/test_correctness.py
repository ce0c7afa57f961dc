"""``weft ls`` / ``weft status`` telling the operator what the kernel and the node's files
really say (a netns path that names another namespace, a subnet file with gaps).

Oracles: the files on disk and ``ip -j``; the binary runs as a person runs it.
"""

from __future__ import annotations

import json

import pytest

from tests.kernel.test_correctness import recreated
from tests.netns import Node, subnet_env
from tests.operator.test_operator import ok_add, person, write_conflist

pytestmark = pytest.mark.root


def test_status_names_every_key_missing_from_the_subnet_file(node: Node) -> None:
    write_conflist(node)
    node.write_subnet(subnet_env(mtu=None, ipmasq=None))
    out = person(node, "status")
    assert out.rc == 1, out
    problems = [line for line in out.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, out.stdout
    assert "FLANNEL_MTU" in problems[0] and "FLANNEL_IPMASQ" in problems[0], problems
    assert str(node.subnet_file) in problems[0]
    st = json.loads(person(node, "status", "--json").stdout)
    assert not st["healthy"]
    [p] = st["problems"]
    assert "FLANNEL_MTU, FLANNEL_IPMASQ" in p["what"] and "try again" in p["fix"]
    node.write_subnet()  # flanneld finishes the file: that problem is gone
    after = person(node, "status").stdout
    assert "FLANNEL_MTU=1450 FLANNEL_IPMASQ=true" in after
    assert not [line for line in after.splitlines() if "subnet file" in line and "problem" in line]


def test_ls_and_gc_tell_a_reused_netns_path_from_a_live_pod(node: Node) -> None:
    write_conflist(node)
    reused, live = node.pod(), node.pod()
    ip_reused, ip_live = ok_add(node, reused, "reused"), ok_add(node, live, "live")
    with recreated(reused):
        rows = {r["ip"]: r for r in json.loads(person(node, "ls", "--json").stdout)["addresses"]}
        r = rows[ip_reused]
        assert (r["state"], r["netnsExists"], r["netnsState"]) == ("stale", True, "another netns")
        assert "names another namespace" in r["reason"]
        assert (rows[ip_live]["state"], rows[ip_live]["netnsState"]) == ("live", "exists")
        text = person(node, "ls").stdout
        [line] = [line for line in text.splitlines() if line.startswith(ip_reused + " ")]
        assert f"{reused.path} (another netns)" in line and line.endswith("stale")
        out = person(node, "gc")
        assert out.rc == 0, out
        assert f"released {ip_reused} reused/eth0" in out.stdout
        assert node.reservations() == {ip_live: b"live\r\neth0"}
        assert "eth0" in live.links()
