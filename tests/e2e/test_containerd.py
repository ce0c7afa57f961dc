"""containerd end to end: ``ctr run --cni`` busybox containers on a sandbox node.

A private containerd (see ``private_containerd.py``) runs on a throwaway node netns;
``ctr run --cni`` (containerd 1.6's ctr reads /etc/cni/net.d and /opt/cni/bin, which
exist only in the node's private mount namespace) starts two long-running busybox
containers, so the CNI chain under test runs exactly as ctr execs it.

Parametrised over the plugin chain:

* ``reference``: what k3s's flannel plugin hands to the reference plugins (bridge +
  host-local, derived from the subnet file here as flannel does), then portmap and
  bandwidth, from /usr/lib/cni;
* ``weft``: weft as the first plugin of k3s's chain (flannel shape), then portmap and
  bandwidth. The executable is ``$WEFT_PLUGIN``, else ``dist/weft/weft`` if built,
  else ``tests/weft-from-source``.

Oracles, all independent of the plugin: ``ip -j`` in the node netns and (via nsenter)
in each container's netns, busybox ``ip``/``ping``/``cat`` run inside the containers
with ``ctr task exec``, and the IPAM store directory listing.

Removal goes through ctr's own remove path: ``ctr run`` in the foreground calls CNI DEL
(go-cni ``Network.Remove``) when its task exits, then deletes the task; the test kills
the task (``ctr task kill``), waits for that, then ``ctr containers delete``. (The
detached path, ``ctr run -d`` + ``ctr task delete`` + ``ctr containers delete``, never
calls CNI DEL in containerd 1.6: checked by experiment, the address leaks.)
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.busybox_image import BusyboxImage
from tests.e2e.private_containerd import Node, PrivateContainerd
from tests.netns import (
    CLUSTER_CIDR,
    FLANNEL_MTU,
    NETWORK_NAME,
    REFERENCE_DIR,
    ip_json_behind,
    k3s_conflist,
    reference_plugin,
    subnet_env,
    weft_plugin,
)
from tests.netns import store_reservations as store_files

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
FLANNEL_SUBNET = "10.42.7.1/24"
SUBNET_ENV = subnet_env(FLANNEL_SUBNET)
GATEWAY = str(ipaddress.ip_interface(FLANNEL_SUBNET).ip)
POD_NET = ipaddress.ip_interface(FLANNEL_SUBNET).network
CONFLIST_PATH = "/etc/cni/net.d/10-flannel.conflist"
CNI_BIN = "/opt/cni/bin"
TIMEOUT = 60.0


def weft_executable() -> Path:
    """$WEFT_PLUGIN, else dist/weft/weft if built, else tests/weft-from-source."""
    env = os.environ.get("WEFT_PLUGIN")
    if env:
        path, origin = Path(env), "$WEFT_PLUGIN"
    elif (REPO / "dist/weft/weft").exists():
        path, origin = REPO / "dist/weft/weft", "default (built)"
    else:
        path, origin = REPO / "tests/weft-from-source", "default (from source)"
    path = path if path.is_absolute() else (REPO / path)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"weft plugin executable not found or not executable: {path} ({origin}). "
            "Build it with `make build` (dist/weft/weft), add tests/weft-from-source, "
            "or point WEFT_PLUGIN at an executable.",
            pytrace=False,
        )
    return path.resolve()


@dataclass(frozen=True)
class Setup:
    conflist: dict[str, object]
    data_dir: Path
    binaries: tuple[str, ...]


def install_reference(node: Node, base: Path, subnet_env: str = SUBNET_ENV) -> Setup:
    data_dir = base / "ipam"
    subnet_file = base / "subnet.env"
    subnet_file.write_text(subnet_env)
    for plugin in ("bridge", "host-local", "portmap", "bandwidth"):
        node.run(["cp", str(REFERENCE_DIR / plugin), f"{CNI_BIN}/{plugin}"])
    # Derived from the subnet file as flannel's plugin does, not hard-coded.
    return Setup(
        k3s_conflist(reference_plugin(subnet_file.read_text(), data_dir)),
        data_dir,
        ("bridge", "host-local", "portmap", "bandwidth"),
    )


def install_weft(node: Node, base: Path, subnet_env: str = SUBNET_ENV) -> Setup:
    exe = weft_executable()
    data_dir = base / "ipam"
    subnet_file = base / "subnet.env"
    subnet_file.write_text(subnet_env)
    # An exec shim, so that a wrapper script still sees its own path as $0.
    node.write_file(
        f"{CNI_BIN}/weft", f'#!/bin/sh\nexec {shlex.quote(str(exe))} "$@"\n'.encode(), mode=0o755
    )
    for plugin in ("portmap", "bandwidth"):
        node.run(["cp", str(REFERENCE_DIR / plugin), f"{CNI_BIN}/{plugin}"])
    # No bridge/host-local here: weft must do it all itself.
    return Setup(
        k3s_conflist(weft_plugin(subnet_file, data_dir)), data_dir, ("weft", "portmap", "bandwidth")
    )


PLUGINS: dict[str, Callable[[Node, Path, str], Setup]] = {
    "reference": install_reference,
    "weft": install_weft,
}


# ---------------------------------------------------------------------------- oracles


def store_reservations(data_dir: Path) -> dict[str, str]:
    """ip -> file content, for every reservation file in the host-local store."""
    return {ip: who.decode() for ip, who in store_files(data_dir / NETWORK_NAME).items()}


def node_veths(node: Node) -> list[dict[str, object]]:
    return node.ip_json("-d", "link", "show", "type", "veth")


def netns_ip_json(pid: int, *args: str) -> list[dict[str, object]]:
    """iproute2 ``ip -j`` run in the netns of process ``pid`` (the container's)."""
    enter = ["nsenter", f"--net=/proc/{pid}/ns/net"]
    result: list[dict[str, object]] = ip_json_behind(enter, *args)
    return result


@dataclass
class Pod:
    cid: str
    run: subprocess.Popen[bytes]
    log: Path
    pid: int = 0
    ip: str = ""


def start_pod(cd: PrivateContainerd, image: BusyboxImage, cid: str) -> Pod:
    """``ctr run --cni`` in the foreground (as a background process), until RUNNING."""
    log = cd.base / f"ctr-run-{cid}.log"
    with log.open("wb") as fh:
        run = subprocess.Popen(
            cd.ctr_argv("run", "--cni", "--null-io", image.name, cid, "sleep", "3600"),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pod = Pod(cid=cid, run=run, log=log)
    deadline = time.monotonic() + TIMEOUT
    while True:
        if run.poll() is not None:
            pytest.fail(
                f"ctr run --cni {cid} exited rc={run.returncode}:\n"
                f"{log.read_text(errors='replace')}"
            )
        state = cd.tasks().get(cid)
        if state is not None:
            cd.task_pids[cid] = state[0]
            if state[1] == "RUNNING":  # ctr starts the task only after CNI ADD succeeded
                pod.pid = state[0]
                return pod
        if time.monotonic() > deadline:
            pytest.fail(
                f"task {cid} not RUNNING after {TIMEOUT}s: {state}\n"
                f"{log.read_text(errors='replace')}"
            )
        time.sleep(0.1)


def remove_pod(cd: PrivateContainerd, pod: Pod) -> None:
    """Kill the task; ctr run (foreground) then runs CNI DEL and deletes the task."""
    cd.ctr("tasks", "kill", "--signal", "SIGKILL", pod.cid)
    try:
        rc = pod.run.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"ctr run {pod.cid} did not finish after task kill:\n"
            f"{pod.log.read_text(errors='replace')}"
        )
    out = pod.log.read_text(errors="replace")
    assert rc == 128 + 9, f"ctr run {pod.cid}: expected the task's SIGKILL status, rc={rc}\n{out}"
    # go-cni Remove failures are logged by ctr as "network review" and swallowed.
    assert "network review" not in out and "level=error" not in out, out
    assert pod.cid not in cd.tasks(), "ctr run did not delete its task"
    cd.ctr("containers", "delete", pod.cid)
    assert pod.cid not in cd.containers()


def check_pod_network(cd: PrivateContainerd, pod: Pod) -> None:
    # Inside the container, busybox's own view.
    addr_out = cd.exec_in(pod.cid, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/(\d+)", addr_out)
    assert m, f"{pod.cid}: no IPv4 address on eth0: {addr_out!r}"
    ip, plen = m.group(1), int(m.group(2))
    assert ipaddress.ip_address(ip) in POD_NET and plen == POD_NET.prefixlen, addr_out
    assert ip != GATEWAY and ip != str(POD_NET.network_address)
    assert ip != str(POD_NET.broadcast_address)
    mtu = cd.exec_in(pod.cid, "cat", "/sys/class/net/eth0/mtu").strip()
    assert mtu == str(FLANNEL_MTU), f"{pod.cid}: eth0 mtu {mtu}"
    pod.ip = ip

    # From outside, iproute2 JSON in the container's netns.
    links = {str(lk["ifname"]): lk for lk in netns_ip_json(pod.pid, "link", "show")}
    assert set(links) == {"lo", "eth0"}, links
    assert links["eth0"]["mtu"] == FLANNEL_MTU
    assert "UP" in links["eth0"]["flags"]  # type: ignore[operator]
    addrs = netns_ip_json(pod.pid, "-4", "addr", "show", "dev", "eth0")
    inet = [
        (a["local"], a["prefixlen"])
        for a in addrs[0]["addr_info"]  # type: ignore[attr-defined]
        if a["family"] == "inet"
    ]
    assert inet == [(ip, POD_NET.prefixlen)], inet
    routes = netns_ip_json(pod.pid, "-4", "route", "show")
    by_dst = {str(r["dst"]): r for r in routes}
    assert by_dst.get("default", {}).get("gateway") == GATEWAY, routes
    assert by_dst.get(CLUSTER_CIDR, {}).get("gateway") == GATEWAY, routes
    assert str(POD_NET) in by_dst, routes


def ping(cd: PrivateContainerd, pod: Pod, target: str) -> None:
    out = cd.exec_in(pod.cid, "ping", "-A", "-c", "2", "-w", "10", target, timeout=30)
    assert re.search(r"2 packets transmitted, 2 packets received", out), out


# ----------------------------------------------------------------------------- test


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_ctr_run_cni_two_pods(
    plugin: str,
    e2e_node: Node,
    private_containerd: PrivateContainerd,
    busybox_image: BusyboxImage,
    e2e_base: Path,
) -> None:
    node, cd = e2e_node, private_containerd
    setup = PLUGINS[plugin](node, e2e_base, SUBNET_ENV)
    node.write_file(CONFLIST_PATH, json.dumps(setup.conflist, indent=1).encode())
    # ctr sees exactly this chain: one config, only the chain's plugins in the bin dir.
    assert node.run(["ls", "/etc/cni/net.d"]).stdout.split() == [Path(CONFLIST_PATH).name]
    assert sorted(node.run(["ls", CNI_BIN]).stdout.split()) == sorted(setup.binaries)
    assert store_reservations(setup.data_dir) == {}

    pods: list[Pod] = []
    try:
        for cid in ("pod-a", "pod-b"):
            pods.append(start_pod(cd, busybox_image, cid))
        a, b = pods

        for pod in pods:
            check_pod_network(cd, pod)
        assert a.ip != b.ip

        # The store holds exactly the two reservations, keyed by ctr's CNI container id.
        store = store_reservations(setup.data_dir)
        assert store == {
            a.ip: f"{cd.namespace}-{a.cid}\r\neth0",
            b.ip: f"{cd.namespace}-{b.cid}\r\neth0",
        }, store

        # Node side: gateway on cni0, one veth per pod enslaved to it, MTU, hairpin.
        cni0 = node.ip_json("-4", "addr", "show", "dev", "cni0")
        gw = [(i["local"], i["prefixlen"]) for i in cni0[0]["addr_info"]]  # type: ignore[attr-defined]
        assert gw == [(GATEWAY, POD_NET.prefixlen)], cni0
        veths = node_veths(node)
        assert len(veths) == 2, veths
        for v in veths:
            assert v.get("master") == "cni0", v
            assert v["mtu"] == FLANNEL_MTU, v
            slave = v["linkinfo"]["info_slave_data"]  # type: ignore[index]
            assert slave["hairpin"] is True, v

        # Data path: gateway and pod-to-pod over the bridge.
        for pod, other in ((a, b), (b, a)):
            ping(cd, pod, GATEWAY)
            ping(cd, pod, other.ip)

        # Remove pod-a through ctr's own path: its address and veth go, pod-b's stay.
        remove_pod(cd, a)
        pods.remove(a)
        assert store_reservations(setup.data_dir) == {b.ip: f"{cd.namespace}-{b.cid}\r\neth0"}
        assert len(node_veths(node)) == 1
        ping(cd, b, GATEWAY)

        remove_pod(cd, b)
        pods.remove(b)
        assert store_reservations(setup.data_dir) == {}, "addresses not released"
        assert node_veths(node) == [], "veth left in the node netns"
        # libcni drops its cached result only after a successful DEL of the whole chain.
        cache = node.run(["find", "/var/lib/cni", "-type", "f"]).stdout.split()
        assert cache == [], cache
        assert cd.tasks() == {} and cd.containers() == []
    finally:
        for pod in pods:  # failure path: don't leave ctr run processes behind
            cd.ctr("tasks", "kill", "--signal", "SIGKILL", pod.cid, check=False)
            try:
                pod.run.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pod.run.kill()
                pod.run.wait(timeout=10)
