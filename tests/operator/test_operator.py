"""``weft ls`` / ``status`` / ``gc`` on a sandbox node holding live pods, pods whose netns
vanished in this boot and in an earlier one, and a reservation only host-local knows.

Runs against ``WEFT_PLUGIN`` (the source tree by default, the frozen binary in
``make test-operator-frozen``). Oracles: the files on disk and ``ip -j``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Netns, Node, attachment_lock, delete_netns

pytestmark = pytest.mark.root

EARLIER_BOOT = "0f0f0f0f-dead-beef-0000-000000000000"
HOST_LOCAL_IP = "10.42.0.200"
HOST_LOCAL_CID = "f00dcafe-host-local"


def pod_args(ns: str, name: str) -> dict[str, str]:
    return {"CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"}


def write_conflist(node: Node, conf: dict[str, Any] | None = None) -> Path:
    """k3s's conflist shape: weft first, then portmap and bandwidth."""
    c = dict(conf or node.conf())
    name, version = c.pop("name"), c.pop("cniVersion")
    d = node.tmp / "net.d"
    d.mkdir(exist_ok=True)
    doc = {
        "name": name,
        "cniVersion": version,
        "plugins": [
            c,
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }
    (d / "10-weft.conflist").write_text(json.dumps(doc))
    return d


def ok_add(node: Node, pod: Netns, cid: str, **kw: Any) -> str:
    out = node.add(pod, cid, **kw)
    assert out.rc == 0, out
    return str(out.json["ips"][0]["address"].split("/")[0])


def record_files(node: Node) -> dict[str, dict[str, Any]]:
    d = node.store_dir() / ".weft"
    return {p.name: json.loads(p.read_text()) for p in d.glob("*.json")} if d.exists() else {}


def set_boot(node: Node, cid: str, boot: str) -> None:
    for p in (node.store_dir() / ".weft").glob("*.json"):
        rec = json.loads(p.read_text())
        if rec["containerID"] == cid:
            rec["bootID"] = boot
            p.write_text(json.dumps(rec))
            return
    raise AssertionError(f"no record for {cid}")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def node_links(node: Node) -> list[tuple[str, str]]:
    return sorted((link["ifname"], link.get("operstate", "")) for link in node.ns.ip("link"))


def wait_for_veths(node: Node, count: int) -> None:
    for _ in range(200):
        if len(node.veths()) == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"expected {count} veths, have {node.veths()}")


class Mixed:
    """A node holding every kind of entry ``weft ls`` tells apart."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.live_pod, self.live_old_pod = node.pod(), node.pod()
        self.gone_pod, self.gone_old_pod = node.pod(), node.pod()
        self.ip = {
            "live": ok_add(node, self.live_pod, "live", env=pod_args("default", "web-0")),
            "live-old": ok_add(node, self.live_old_pod, "live-old", env=pod_args("default", "db")),
            "gone": ok_add(node, self.gone_pod, "gone", env=pod_args("kube-system", "job-1")),
            "gone-old": ok_add(node, self.gone_old_pod, "gone-old"),
        }
        # a pod whose netns survived a "reboot" (kept bind mount): live, whatever its boot
        set_boot(node, "live-old", EARLIER_BOOT)
        # netns gone without DEL, in this boot (a crashed runtime) and in an earlier one
        set_boot(node, "gone-old", EARLIER_BOOT)
        for pod in (self.gone_pod, self.gone_old_pod):
            delete_netns(pod)
            node.pods.remove(pod)
        wait_for_veths(node, 4 - 2)  # the kernel destroys a netns (and its veths) lazily
        # the reference host-local's reservation: weft has no record of it
        (node.store_dir() / HOST_LOCAL_IP).write_bytes(f"{HOST_LOCAL_CID}\r\neth0".encode())
        write_conflist(node)


@pytest.fixture
def mixed(node: Node) -> Mixed:
    return Mixed(node)


def test_ls_tells_live_stale_and_host_local_apart(mixed: Mixed) -> None:
    out = mixed.node.person("ls", "--json")
    assert out.rc == 0, out
    rows = {r["ip"]: r for r in json.loads(out.stdout)["addresses"]}
    ip = mixed.ip
    assert set(rows) == {*ip.values(), HOST_LOCAL_IP}
    # oracle: the reservation files on disk name the same owners
    on_disk = mixed.node.reservations()
    for addr, row in rows.items():
        assert on_disk[addr] == f"{row['containerId']}\r\neth0".encode()
    want = {
        "live": ("live", "this", True),
        "live-old": ("live", "earlier", True),
        "gone": ("stale", "this", False),
        "gone-old": ("stale", "earlier", False),
    }
    links = {link["ifname"] for link in mixed.node.ns.ip("link")}
    for cid, (state, boot, exists) in want.items():
        row = rows[ip[cid]]
        assert (row["containerId"], row["state"], row["boot"]) == (cid, state, boot), row
        assert row["netnsExists"] is exists and os.path.exists(row["netns"]) is exists
        assert row["vethPresent"] is (row["hostVeth"] in links) is exists
        assert row["ageSeconds"] is not None and row["ageSeconds"] >= 0
    assert (rows[ip["live"]]["podNamespace"], rows[ip["live"]]["podName"]) == ("default", "web-0")
    assert (rows[ip["gone"]]["podNamespace"], rows[ip["gone"]]["podName"]) == (
        "kube-system",
        "job-1",
    )
    assert (rows[ip["gone-old"]]["podNamespace"], rows[ip["gone-old"]]["podName"]) == ("", "")
    hl = rows[HOST_LOCAL_IP]
    assert (hl["state"], hl["containerId"], hl["netns"], hl["boot"]) == (
        "host-local",
        HOST_LOCAL_CID,
        "",
        "",
    )
    text = mixed.node.person("ls")
    assert text.rc == 0
    lines = text.stdout.splitlines()
    assert lines[1].split()[:2] == ["IP", "CONTAINER"]
    by_ip = {line.split()[0]: line for line in lines[2:]}
    assert by_ip[ip["gone"]].endswith("stale") and "(gone)" in by_ip[ip["gone"]]
    assert by_ip[ip["live"]].endswith("live") and "(exists)" in by_ip[ip["live"]]
    assert by_ip[HOST_LOCAL_IP].endswith("host-local")


def test_status_counts_what_add_can_use(mixed: Mixed) -> None:
    out = mixed.node.person("status", "--json")
    assert out.rc == 0, out
    st = json.loads(out.stdout)
    assert st["healthy"] is True and st["problems"] == []
    (rng,) = st["ranges"]
    assert (rng["capacity"], rng["live"], rng["stale"], rng["unjudgeable"]) == (253, 2, 2, 1)
    assert rng["free"] == 253 - len(mixed.node.reservations()) == 248
    assert rng["available"] == 250
    assert st["bridge"]["addresses"] == mixed.node.ns.addrs("cni0") == ["10.42.0.1/24"]
    assert st["bridge"]["mtu"] == mixed.node.ns.links()["cni0"]["mtu"] == 1450
    assert st["subnetFile"]["subnet"] == "10.42.0.1/24" and st["subnetFile"]["mtu"] == 1450
    fwd = mixed.node.ns.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()
    assert st["forwarding"] == {"ipv4": fwd}
    assert st["helper"]["state"] == "not running"
    text = mixed.node.person("status")
    assert text.rc == 0 and "status      ok" in text.stdout
    assert "2 live, 2 stale (reclaimable), 1 host-local, 248 free" in text.stdout


def test_status_is_unhealthy_with_one_line_per_problem(mixed: Mixed) -> None:
    node = mixed.node
    node.ns.run("sysctl", "-qw", "net.ipv4.ip_forward=0")
    node.ns.run("ip", "addr", "add", "10.42.7.1/24", "dev", "cni0")
    node.ns.run("ip", "addr", "del", "10.42.0.1/24", "dev", "cni0")
    out = node.person("status")
    assert out.rc == 1, out
    problems = [line for line in out.stdout.splitlines() if line.startswith("problem:")]
    fixes = [line for line in out.stdout.splitlines() if line.strip().startswith("fix:")]
    assert len(problems) == len(fixes) == 2, out.stdout
    assert any("ip_forward is 0" in p for p in problems)
    assert any("cni0 has 10.42.7.1/24 but the subnet is 10.42.0.1/24" in p for p in problems)
    node.subnet_file.unlink()
    st = json.loads(node.person("status", "--json").stdout)
    assert not st["healthy"] and any("subnet file" in p["what"] for p in st["problems"])


def test_gc_dry_run_changes_nothing(mixed: Mixed) -> None:
    node = mixed.node
    before, links_before = tree(node.data_dir), node_links(node)
    out = node.person("gc", "--dry-run")
    assert out.rc == 0, out
    would = sorted(line.split()[2] for line in out.stdout.splitlines() if line.startswith("would"))
    assert would == sorted([mixed.ip["gone"], mixed.ip["gone-old"]])
    assert tree(node.data_dir) == before and node_links(node) == links_before


def test_gc_releases_every_stale_attachment_and_never_a_live_pod(mixed: Mixed) -> None:
    node = mixed.node
    live_links = {link["ifname"] for link in node.ns.ip("link") if link["ifname"] != "lo"}
    out = node.person("gc")
    assert out.rc == 0, out
    released = sorted(
        line.split()[1] for line in out.stdout.splitlines() if line.startswith("released")
    )
    assert released == sorted([mixed.ip["gone"], mixed.ip["gone-old"]])
    assert f"not touched {HOST_LOCAL_IP}" in out.stdout and "rm " in out.stdout
    # oracle: the files and the kernel
    assert set(node.reservations()) == {mixed.ip["live"], mixed.ip["live-old"], HOST_LOCAL_IP}
    assert sorted(r["containerID"] for r in record_files(node).values()) == ["live", "live-old"]
    assert {link["ifname"] for link in node.ns.ip("link") if link["ifname"] != "lo"} == live_links
    for pod in (mixed.live_pod, mixed.live_old_pod):
        assert "eth0" in pod.links()
        ping = pod.run("ping", "-c", "1", "-W", "2", "10.42.0.1", check=False)
        assert ping.returncode == 0
    again = node.person("gc", "--json")
    assert again.rc == 0
    doc = json.loads(again.stdout)
    assert doc["released"] == [] and doc["liveKept"] == 2
    assert [e["ip"] for e in doc["notTouched"]] == [HOST_LOCAL_IP]


def test_gc_never_creates_a_store(node: Node) -> None:
    write_conflist(node)
    out = node.person("gc")
    assert out.rc == 0 and "nothing to do" in out.stdout
    assert not node.store_dir().exists()
    ls = node.person("ls", "--json")
    assert ls.rc == 0 and json.loads(ls.stdout)["addresses"] == []


def test_person_mode_exit_codes(node: Node) -> None:
    write_conflist(node)
    for args in (["bogus"], ["--bogus"], ["status", "--frob"]):
        out = node.person(*args)
        assert out.rc == 2 and "usage: weft" in out.stderr and out.stdout == "", (args, out)
    about = node.person()
    assert about.rc == 0 and "weft ls" in about.stderr
    explicit = node.person("ls", "--conf", str(node.tmp / "net.d" / "10-weft.conflist"))
    assert explicit.rc == 0


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_cni_exec_path_never_imports_pydantic(node: Node, command: str, tmp_path: Path) -> None:
    pod = node.pod()
    res = node.add(pod, "c1")
    assert res.rc == 0
    modules = tmp_path / "modules.txt"
    conf = node.conf()
    if command == "CHECK":
        conf["prevResult"] = res.json
    if command == "ADD":
        pod = node.pod()
    out = node.exec(
        command,
        conf,
        "c2" if command == "ADD" else "c1",
        pod.path,
        env={"WEFT_MODULES_OUT": str(modules)},
    )
    assert out.rc == 0, out
    loaded = modules.read_text().split()
    assert "cni.plugin.handlers" in loaded  # the seam saw the real exec
    assert [m for m in loaded if m.split(".")[0] in ("pydantic", "pydantic_core")] == []
    # what the bundle carries only for the operator's --json never loads here either
    heavy = ("asyncio", "concurrent", "email", "decimal", "fractions", "uuid", "zoneinfo", "csv")
    assert [m for m in loaded if m.split(".")[0] in heavy] == []


def test_status_reports_the_helper_socket(node: Node) -> None:
    write_conflist(node)
    path = str(node.tmp / "weft.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(4)
        st = json.loads(node.person("status", "--json").stdout)
        assert st["helper"]["state"] == "running", st["helper"]
        assert f"pid {os.getpid()}" in st["helper"]["build"]
        assert os.readlink("/proc/self/exe") in st["helper"]["build"]
    finally:
        listener.close()
    # the socket file outlived its listener: a stale socket is a problem with a fix
    out = node.person("status")
    assert out.rc == 1 and "nothing answers on it" in out.stdout, out


def test_gc_waits_for_the_network_lock_and_changes_nothing_without_it(mixed: Mixed) -> None:
    node = mixed.node
    conf = node.conf()
    conf["lockTimeout"] = 1
    write_conflist(node, conf)
    before = tree(node.data_dir)
    fd = os.open(node.store_dir() / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a CNI command of this network is running
        out = node.person("gc")
        assert out.rc == 1 and "timed out" in out.stderr and "lock" in out.stderr, out
        assert tree(node.data_dir) == before
    finally:
        os.close(fd)
    assert node.person("gc").rc == 0
    assert set(node.reservations()) == {mixed.ip["live"], mixed.ip["live-old"], HOST_LOCAL_IP}


def test_gc_skips_an_attachment_a_cni_command_is_working_on(mixed: Mixed) -> None:
    """The lock order: gc only tries an attachment's lock; a busy one is left alone."""
    node = mixed.node
    path = attachment_lock(node.store_dir(), "gone")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # e.g. a DEL of that container is running
        out = node.person("gc")
        assert out.rc == 0, out
        assert f"skipped {mixed.ip['gone']} gone/eth0" in out.stdout
        assert mixed.ip["gone"] in node.reservations()
        assert mixed.ip["gone-old"] not in node.reservations()
    finally:
        os.close(fd)
    again = node.person("gc")
    assert f"released {mixed.ip['gone']}" in again.stdout
    assert set(node.reservations()) == {mixed.ip["live"], mixed.ip["live-old"], HOST_LOCAL_IP}
