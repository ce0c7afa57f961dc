"""The day-2 reproductions, against a real kernel: leaks after a crashed runtime fix
themselves, STATUS and ADD agree on what is available, the exhaustion error says what to
do, log lines name their pod, config typos and a re-addressed cni0 are warned about.

Runs against ``WEFT_PLUGIN`` (source tree by default, or the frozen binary). Oracles: the
files on disk and ``ip -j``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.netns import Netns, Node, delete_netns, subnet_env
from tests.operator.test_operator import EARLIER_BOOT, ok_add, pod_args, set_boot, wait_for_veths

pytestmark = pytest.mark.root

SLASH_29 = subnet_env("10.42.5.1/29", ipmasq=False)
POOL = {f"10.42.5.{i}" for i in range(2, 7)}
ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z weft\[\d+\] \w+ ")


def fill(node: Node, prefix: str, conf: dict[str, Any] | None = None) -> dict[str, Netns]:
    pods = {}
    for i in range(5):
        pod = node.pod()
        ok_add(node, pod, f"{prefix}{i}", conf=conf)
        pods[f"{prefix}{i}"] = pod
    assert set(node.reservations()) == POOL
    return pods


def vanish(node: Node, pods: list[Netns]) -> None:
    """The pods' netns are deleted without DEL: what a crashed runtime leaves behind."""
    for pod in pods:
        delete_netns(pod)
        node.pods.remove(pod)
    wait_for_veths(node, len([p for p in node.pods if "eth0" in p.links()]))


def status(node: Node) -> Any:
    return node.exec("STATUS", node.conf("1.1.0"))


def test_add_reclaims_pods_whose_netns_vanished_in_this_boot(node: Node) -> None:
    node.write_subnet(SLASH_29)
    log = node.tmp / "weft.log"
    conf = node.conf()
    conf["logFile"] = str(log)
    pods = fill(node, "crashed", conf)
    vanish(node, list(pods.values()))
    new = node.pod()
    out = node.add(new, "fresh", conf=conf)
    assert out.rc == 0, out  # before: code 100, though every netns was gone
    got = out.json["ips"][0]["address"].split("/")[0]
    assert got in POOL
    # every stale attachment went at once: reservation files and records (oracle: disk)
    assert node.reservations() == {got: b"fresh\r\neth0"}
    records = [json.loads(p.read_text()) for p in (node.store_dir() / ".weft").glob("*.json")]
    assert [r["containerID"] for r in records] == ["fresh"]
    text = log.read_text()
    reclaims = [line for line in text.splitlines() if "reclaimed" in line]
    assert len(reclaims) == 5, text
    for line in reclaims:
        assert "container=fresh" in line and "is gone" in line and "crashed" in line


@pytest.mark.parametrize("boot", ["earlier", "this"])
def test_status_and_add_agree_when_the_range_holds_only_stale_records(
    node: Node, boot: str
) -> None:
    node.write_subnet(SLASH_29)
    pods = fill(node, "old")
    if boot == "earlier":
        for cid in pods:
            set_boot(node, cid, EARLIER_BOOT)
    vanish(node, list(pods.values()))
    st = status(node)
    assert st.rc == 0 and st.stdout.strip() == "", st  # before: code 50
    assert node.add(node.pod(), "new").rc == 0


def test_status_and_add_agree_when_the_range_is_full_of_live_pods(node: Node) -> None:
    node.write_subnet(SLASH_29)
    fill(node, "live")
    st = status(node)
    assert st.rc == 1 and st.json["code"] == 50, st
    out = node.add(node.pod(), "one-too-many")
    assert out.rc == 1 and out.json["code"] == 100, out
    e = out.json
    assert e["msg"] == "no IP addresses available in range 10.42.5.2-10.42.5.6"
    details = e["details"]
    for needle in (
        "10.42.5.2-10.42.5.6",
        str(node.store_dir()),
        "5 of 5",
        "0 stale",
        "weft ls",
        "weft gc",
    ):
        assert needle in details, details
    assert set(node.reservations()) == POOL  # nothing was reclaimed from a live pod


def test_exhaustion_details_count_host_local_records(node: Node) -> None:
    node.write_subnet(SLASH_29)
    pods = fill(node, "p")
    # the reference host-local's files for two addresses: weft cannot judge them
    ok = node.delete(pods["p0"], "p0")
    assert ok.rc == 0
    (node.store_dir() / "10.42.5.2").write_bytes(b"hl-1\r\neth0")
    out = node.add(node.pod(), "more")
    assert out.rc == 1 and out.json["code"] == 100
    assert "1 host-local" in out.json["details"], out.json


def test_log_lines_name_container_and_pod(node: Node) -> None:
    log = node.tmp / "weft.log"
    conf = node.conf()
    conf["logFile"] = str(log)
    conf["logLevel"] = "debug"
    pod = node.pod()
    assert node.add(pod, "c1", conf=conf, env=pod_args("shop", "cart-5")).rc == 0
    assert node.delete(pod, "c1", conf=conf, env=pod_args("shop", "cart-5")).rc == 0
    lines = log.read_text().splitlines()
    assert lines, "nothing logged"
    for line in lines:
        assert ISO_LINE.match(line), line
        assert "container=c1 pod=shop/cart-5" in line, line
    assert any(" ADD " in line for line in lines) and any(" DEL " in line for line in lines)
    assert any("flannel shape" in line for line in lines)  # which shape, and why


def test_unwritable_log_file_warns_once_on_stderr(node: Node) -> None:
    conf = node.conf()
    conf["logFile"] = str(node.tmp / "missing-dir" / "weft.log")
    conf["logLevel"] = "debug"
    out = node.add(node.pod(), "c1", conf=conf)
    assert out.rc == 0, out
    assert out.stderr.count("cannot write logFile") == 1, out.stderr


@pytest.mark.parametrize(
    ("mistake", "meant"),
    [
        ({"delegate": {"isDefaultGatway": True}}, "isDefaultGateway"),
        ({"subnetfile": "/nope"}, "subnetFile"),
    ],
)
def test_config_typos_are_warned_with_the_key_meant(
    node: Node, mistake: dict[str, Any], meant: str
) -> None:
    conf = node.conf()
    for key, value in mistake.items():
        if isinstance(value, dict):
            conf[key].update(value)
        else:
            conf[key] = value
    out = node.add(node.pod(), "c1", conf=conf)
    assert out.rc == 0, out
    assert f"did you mean '{meant}'" in out.stderr, out.stderr


def test_delegates_typo_says_so_before_blaming_ipam(node: Node) -> None:
    conf = node.conf()
    conf["delegates"] = conf.pop("delegate")
    del conf["subnetFile"]
    out = node.add(node.pod(), "c1", conf=conf)
    assert out.rc == 1 and out.json["code"] == 7
    assert "did you mean 'delegate'" in out.stderr and "bridge shape" in out.stderr, out.stderr


def test_k3s_config_warns_nothing(node: Node) -> None:
    conf = node.conf()
    conf["runtimeConfig"] = {"portMappings": []}
    conf["capabilities"] = {"portMappings": True}
    out = node.add(node.pod(), "c1", conf=conf, env=pod_args("default", "web"))
    assert out.rc == 0 and "warning" not in out.stderr, out.stderr


def test_force_address_warns_how_many_pods_are_left_on_the_old_subnet(node: Node) -> None:
    p1, p2, p3 = node.pod(), node.pod(), node.pod()
    ok_add(node, p1, "c1")
    ok_add(node, p2, "c2")
    node.write_subnet(subnet_env("10.42.9.1/24", ipmasq=False))
    out = node.add(p3, "c3")
    assert out.rc == 0, out
    assert node.ns.addrs("cni0") == ["10.42.9.1/24"]
    warn = [line for line in out.stderr.splitlines() if "forceAddress" in line]
    assert len(warn) == 1, out.stderr
    assert "10.42.0.1/24" in warn[0] and "10.42.9.1/24" in warn[0]
    assert "2 pods still" in warn[0]
