"""``weft ls`` / ``weft status`` telling the operator what the kernel and the node's files
really say (a netns path that names another namespace, a subnet file with gaps).

Oracles: the files on disk and ``ip -j``; the binary runs as a person runs it.
"""

from __future__ import annotations

import json

import pytest

from tests.netns import Node, subnet_env
from tests.operator.test_operator import person, write_conflist

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
