"""What the kernel and the node's files say, trusted only when they say it whole: the netns
a record names, dumps that raced a change, the subnet file's keys, the bridge as the
reference leaves it, an address the runtime asks for.

Oracles: ``ip -j`` and /proc/sys read inside the sandbox netns, the store on disk.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.netns import Node, subnet_env

pytestmark = pytest.mark.root


def ok(out: Any) -> Any:
    assert out.rc == 0, f"rc={out.rc} stdout={out.stdout} stderr={out.stderr[-2000:]}"
    return out.json if out.stdout.strip() else None


def err(out: Any, code: int) -> dict[str, Any]:
    assert out.rc != 0, out.stdout
    e = json.loads(out.stdout)
    assert e["code"] == code, e
    assert "Traceback" not in out.stdout
    return dict(e)


# ---- the subnet file must carry every key flannel's plugin requires ----------------------
@pytest.mark.parametrize(
    ("mtu", "ipmasq", "named"),
    [
        (None, None, ["FLANNEL_MTU", "FLANNEL_IPMASQ"]),
        (None, True, ["FLANNEL_MTU"]),
        (1450, None, ["FLANNEL_IPMASQ"]),
    ],
)
def test_a_subnet_file_without_mtu_or_ipmasq_is_try_again(
    node: Node, mtu: int | None, ipmasq: bool | None, named: list[str]
) -> None:
    node.write_subnet(subnet_env(mtu=mtu, ipmasq=ipmasq))
    pod = node.pod()
    e = err(node.add(pod, "c1"), 11)
    text = e["msg"] + " " + e.get("details", "")
    assert all(k in text for k in named), text
    assert str(node.subnet_file) in text
    assert node.veths() == [] and node.reservations() == {} and "eth0" not in pod.links()
    assert "cni0" not in node.ns.links()  # nothing made from a half-written file
    status = err(node.exec("STATUS", node.conf("1.1.0")), 50)
    assert all(k in status["msg"] + status.get("details", "") for k in named)


def test_del_still_works_when_the_subnet_file_is_incomplete(node: Node) -> None:
    pod = node.pod()
    ok(node.add(pod, "c1"))
    node.write_subnet(subnet_env(mtu=None))
    ok(node.delete(pod, "c1"))
    assert node.veths() == [] and node.reservations() == {} and node.weft_files() == []
