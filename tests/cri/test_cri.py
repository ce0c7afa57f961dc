"""containerd's CRI service end to end: pod sandboxes started the way kubelet starts them.

A private containerd with its CRI plugin on runs on a sandbox node (``tests/e2e``'s node:
netns + private mount namespace); the test is kubelet's side of ``runtime.v1`` over gRPC
(``client.py``, stubs generated from ``runtime_v1.proto``). Containerd's CRI plugin then runs
the CNI chain its own way: netns ``/var/run/netns/cni-<id>``, ``K8S_POD_*`` in CNI_ARGS,
capability args (``portMappings`` only with hostPorts, ``dns``, ...), only ADD and DEL, a DEL
of its own after a failed ADD.

Parametrised over the chain, side by side with the ``ctr`` tier: ``weft`` (k3s's chain: weft,
portmap, bandwidth) and ``reference`` (bridge + host-local, portmap, bandwidth from
/usr/lib/cni). The first plugin of the chain is wrapped by a script that logs each call's
CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS and CNI_ARGS to ``<base>/cni-calls.log`` before
exec'ing the real binary, so the test can see what the runtime asked for.

Oracles, independent of the plugin: ``ip -j`` in the node netns and in the pod's netns (by its
path, inside the node's mount namespace), ping and TCP from inside the pods, the IPAM store
and weft's attachment records on disk, ``iptables-save``.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.cri.client import PodSpec, Sandbox
from tests.cri.conftest import StartCri
from tests.e2e.private_containerd import Node
from tests.e2e.test_containerd import (
    CNI_BIN,
    CONFLIST_PATH,
    GATEWAY,
    PLUGINS,
    POD_NET,
    SUBNET_ENV,
    Setup,
    node_veths,
    store_reservations,
)
from tests.netns import (
    CLUSTER_CIDR,
    FLANNEL_MTU,
    NETWORK_NAME,
    REFERENCE_DIR,
    ip_json_behind,
    iptables_save,
    subnet_env,
)

pytestmark = pytest.mark.root

# One address for pods: .0 network, .1 gateway, .2 the pod, .3 broadcast.
TINY_SUBNET_ENV = subnet_env("10.42.7.1/30")
HOST_PORT, CONTAINER_PORT = 18080, 8080
PYTHON = sys.executable

POD_A = PodSpec(
    name="web",
    namespace="shop",
    uid="0b7a5d1e-0000-4000-8000-00000000000a",
    dns_servers=("10.43.0.10",),
    dns_searches=("shop.svc.cluster.local", "svc.cluster.local", "cluster.local"),
    dns_options=("ndots:5",),
    host_ports=((CONTAINER_PORT, HOST_PORT),),
)
POD_B = PodSpec(
    name="client",
    namespace="default",
    uid="0b7a5d1e-0000-4000-8000-00000000000b",
    dns_servers=("10.43.0.10",),
    dns_searches=("default.svc.cluster.local",),
)


# ---------------------------------------------------------------------------- setup


def install_chain(plugin: str, node: Node, base: Path, subnet_env: str) -> Setup:
    """Install the chain and its conflist (before containerd starts), each plugin of the
    chain wrapped by a call logger."""
    setup = PLUGINS[plugin](node, base, subnet_env)
    # The CRI plugin brings up each pod's lo with the loopback plugin, from the same bin_dir.
    node.run(["cp", str(REFERENCE_DIR / "loopback"), f"{CNI_BIN}/loopback"])
    calls = base / "cni-calls.log"
    calls.touch()
    node.run(["mkdir", "-p", "/opt/cni/real"])
    chain = [p["type"] for p in setup.conflist["plugins"]]  # type: ignore[index]
    for name in chain:
        node.run(["mv", f"{CNI_BIN}/{name}", f"/opt/cni/real/{name}"])
        # Two lines per call: the environment that matters, then the config on stdin (libcni
        # writes it as one line of JSON).
        logger = (
            "#!/bin/sh\n"
            "conf=$(cat)\n"
            f'printf "{name} %s %s %s %s\\n%s\\n" "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS"'
            f' "$CNI_ARGS" "$conf" >> {shlex.quote(str(calls))}\n'
            f'printf "%s" "$conf" | exec /opt/cni/real/{name} "$@"\n'
        )
        node.write_file(f"{CNI_BIN}/{name}", logger.encode(), mode=0o755)
    node.write_file(CONFLIST_PATH, json.dumps(setup.conflist, indent=1).encode())
    return setup


def cni_calls(base: Path, plugin: str | None = None) -> list[dict[str, Any]]:
    """The logged calls of ``plugin`` (default: the chain's first plugin), in order."""
    lines = (base / "cni-calls.log").read_text().splitlines()
    calls = []
    for head, conf in zip(lines[::2], lines[1::2], strict=True):
        name, command, cid, netns, args = (head.split(" ", 4) + [""] * 5)[:5]
        calls.append(
            {
                "plugin": name,
                "command": command,
                "id": cid,
                "netns": netns,
                "args": args,
                "conf": json.loads(conf) if conf.strip() else {},
            }
        )
    first = calls[0]["plugin"] if calls else None
    return [c for c in calls if c["plugin"] == (plugin or first)]


def attachment_records(setup: Setup) -> dict[str, dict[str, Any]]:
    """weft's per-attachment records on disk: containerID -> record (empty for the
    reference, which keeps none)."""
    rec_dir = setup.data_dir / NETWORK_NAME / ".weft"
    if not rec_dir.is_dir():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for path in rec_dir.glob("*.json"):
        rec = json.loads(path.read_text())
        out[str(rec["containerID"])] = rec
    return out


# ---------------------------------------------------------------------------- oracles


def in_pod(node: Node, sb: Sandbox, argv: list[str], timeout: float = 30) -> Any:
    """argv in the pod's netns, entered by its path inside the node's mount namespace."""
    return subprocess.run(
        node.enter(["nsenter", f"--net={sb.netns}", *argv]),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pod_ip_json(node: Node, sb: Sandbox, *args: str) -> list[dict[str, Any]]:
    enter = node.enter(["nsenter", f"--net={sb.netns}"])
    result: list[dict[str, Any]] = ip_json_behind(enter, *args)
    return result


def ping(node: Node, sb: Sandbox, target: str) -> None:
    proc = in_pod(node, sb, ["ping", "-c", "2", "-W", "2", "-w", "10", target])
    assert proc.returncode == 0, f"{sb.id[:12]} cannot ping {target}: {proc.stdout}{proc.stderr}"


def netns_files(node: Node) -> list[str]:
    """The CRI's pod netns files (``cni-*``) in the node's /var/run/netns."""
    out = node.run(["sh", "-c", "ls /var/run/netns 2>/dev/null || true"]).stdout
    return sorted(n for n in out.split() if n.startswith("cni-"))


@contextmanager
def tcp_listener(node: Node, sb: Sandbox, port: int, token: str) -> Iterator[None]:
    """A one-shot TCP server in the pod that answers ``token`` (bounded lifetime)."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0', {port})); s.listen(4); s.settimeout(30)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    c,_=s.accept(); c.sendall(sys.argv[1].encode()); c.close()\n"
    )
    proc = subprocess.Popen(
        node.enter(["nsenter", f"--net={sb.netns}", PYTHON, "-c", code, token]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == b"ready", f"listener failed: {line!r}"
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


def tcp_fetch(argv_prefix: list[str], host: str, port: int) -> str:
    code = (
        "import socket,sys\n"
        "c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
        "c.settimeout(5); print(c.recv(100).decode())\n"
    )
    proc = subprocess.run(
        [*argv_prefix, PYTHON, "-c", code, host, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, f"connect {host}:{port} failed: {proc.stderr}"
    return proc.stdout.strip()


def check_pod_network(
    node: Node, setup: Setup, sb: Sandbox, pod_net: ipaddress.IPv4Network = POD_NET
) -> None:
    """The IP the CRI reports is the pod's eth0 address and the store's reservation."""
    assert sb.netns.startswith("/var/run/netns/cni-"), sb.netns
    ip = ipaddress.ip_address(sb.ip)
    assert ip in pod_net and str(ip) != GATEWAY, sb.ip
    links = {str(lk["ifname"]): lk for lk in pod_ip_json(node, sb, "link", "show")}
    assert set(links) == {"lo", "eth0"}, links
    assert links["eth0"]["mtu"] == FLANNEL_MTU, links["eth0"]
    addrs = pod_ip_json(node, sb, "-4", "addr", "show", "dev", "eth0")
    inet = [(a["local"], a["prefixlen"]) for a in addrs[0]["addr_info"]]
    assert inet == [(sb.ip, pod_net.prefixlen)], inet
    routes = {str(r["dst"]): r for r in pod_ip_json(node, sb, "-4", "route", "show")}
    assert routes.get("default", {}).get("gateway") == GATEWAY, routes
    assert routes.get(CLUSTER_CIDR, {}).get("gateway") == GATEWAY, routes
    # The store on disk: the reservation under the CRI's sandbox id, eth0.
    assert store_reservations(setup.data_dir).get(sb.ip) == f"{sb.id}\r\neth0"


def wait_gone(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"still present after {timeout}s: {what}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_cri_pods_lifecycle(
    plugin: str, e2e_node: Node, e2e_base: Path, start_cri: StartCri
) -> None:
    node = e2e_node
    setup = install_chain(plugin, node, e2e_base, SUBNET_ENV)
    cri = start_cri()

    # The node is NetworkReady: containerd loaded the chain's conflist.
    assert cri.version().runtime_name == "containerd"
    conditions = cri.conditions()
    assert conditions["RuntimeReady"].status, conditions
    assert conditions["NetworkReady"].status, conditions["NetworkReady"]
    # The networks it loaded: its own loopback one, and the chain from our conflist.
    networks = {n["Config"]["Name"]: n["Config"] for n in cri.cni_status()["Networks"]}
    assert set(networks) == {"cni-loopback", NETWORK_NAME}, networks
    chain = [p["Network"]["type"] for p in networks[NETWORK_NAME]["Plugins"]]
    assert chain == [t for t in setup.binaries if t != "host-local"], chain

    a_id = cri.run_pod(POD_A)
    b_id = cri.run_pod(POD_B)
    a, b = cri.sandbox(a_id), cri.sandbox(b_id)
    assert cri.state(a_id) == cri.state(b_id) == "SANDBOX_READY"
    for sb in (a, b):
        check_pod_network(node, setup, sb)
    assert a.ip != b.ip
    assert store_reservations(setup.data_dir) == {a.ip: f"{a_id}\r\neth0", b.ip: f"{b_id}\r\neth0"}
    veths = node_veths(node)
    assert len(veths) == 2 and all(v.get("master") == "cni0" for v in veths), veths

    # What containerd's CRI plugin ran: ADD per sandbox, its netns path, K8S_POD_* args.
    calls = cni_calls(e2e_base)
    assert [(c["command"], c["id"]) for c in calls] == [("ADD", a_id), ("ADD", b_id)], calls
    for call, sb, spec in ((calls[0], a, POD_A), (calls[1], b, POD_B)):
        assert call["netns"] == sb.netns, call
        args = dict(kv.split("=", 1) for kv in call["args"].split(";"))
        assert args == {
            "IgnoreUnknown": "1",
            "K8S_POD_NAMESPACE": spec.namespace,
            "K8S_POD_NAME": spec.name,
            "K8S_POD_INFRA_CONTAINER_ID": sb.id,
            "K8S_POD_UID": spec.uid,
        }, call
    # Capability args: portmap gets the hostPort of pod a only (runtimeConfig). containerd 1.6
    # (go-cni) writes Go field names, not the conventions' camelCase: Go plugins decode JSON
    # keys case-insensitively, a plugin reading portMappings must too.
    portmap = {c["id"]: c["conf"] for c in cni_calls(e2e_base, "portmap")}
    assert portmap[a_id]["runtimeConfig"]["portMappings"] == [
        {"HostPort": HOST_PORT, "ContainerPort": CONTAINER_PORT, "Protocol": "tcp", "HostIP": ""}
    ], portmap[a_id]
    assert "portMappings" not in portmap[b_id].get("runtimeConfig", {}), portmap[b_id]
    # The CRI wrote the pod's resolv.conf from dns_config.
    resolv = Path(cri.cd.base / "root/io.containerd.grpc.v1.cri/sandboxes" / a_id / "resolv.conf")
    text = resolv.read_text()
    assert "nameserver 10.43.0.10" in text and "options ndots:5" in text, text
    assert "search shop.svc.cluster.local svc.cluster.local cluster.local" in text, text

    # Data path: gateway and pod to pod over the bridge.
    for sb, other in ((a, b), (b, a)):
        ping(node, sb, GATEWAY)
        ping(node, sb, other.ip)

    # hostPort through portmap: from the node and from the other pod, to <node IP>:18080.
    nat = iptables_save(node.name)
    assert f"--dport {HOST_PORT}" in nat and f"{a.ip}:{CONTAINER_PORT}" in nat, nat
    with tcp_listener(node, a, CONTAINER_PORT, "hello-from-web"):
        assert tcp_fetch(node.enter([]), GATEWAY, HOST_PORT) == "hello-from-web"
        in_b = node.enter(["nsenter", f"--net={b.netns}"])
        assert tcp_fetch(in_b, GATEWAY, HOST_PORT) == "hello-from-web"

    # StopPodSandbox runs DEL: a's address, veth, record and DNAT rule go; b's stay.
    cri.stop_pod(a_id)
    assert cri.state(a_id) == "SANDBOX_NOTREADY"
    assert store_reservations(setup.data_dir) == {b.ip: f"{b_id}\r\neth0"}
    wait_gone(lambda: len(node_veths(node)) == 1, "pod a's veth")
    assert a_id not in attachment_records(setup)
    assert f"--dport {HOST_PORT}" not in iptables_save(node.name)
    assert a.netns.rsplit("/", 1)[1] not in netns_files(node)
    assert [c["command"] for c in cni_calls(e2e_base) if c["id"] == a_id] == ["ADD", "DEL"]
    ping(node, b, GATEWAY)
    # RemovePodSandbox runs DEL once more, now with CNI_NETNS="" (the netns is gone): a DEL of
    # what is already gone must succeed.
    cri.remove_pod(a_id)
    assert a_id not in cri.list_pods()
    a_calls = [(c["command"], c["netns"]) for c in cni_calls(e2e_base) if c["id"] == a_id]
    assert a_calls == [("ADD", a.netns), ("DEL", a.netns), ("DEL", "")], a_calls

    cri.stop_pod(b_id)
    cri.remove_pod(b_id)
    assert cri.list_pods() == {}
    assert store_reservations(setup.data_dir) == {}, "addresses not released"
    wait_gone(lambda: node_veths(node) == [], "a veth in the node netns")
    assert attachment_records(setup) == {}
    assert netns_files(node) == []
    # containerd calls only ADD and DEL (never CHECK): stop and remove each run a DEL.
    calls = cni_calls(e2e_base)
    assert sorted(c["command"] for c in calls) == ["ADD"] * 2 + ["DEL"] * 4, calls
    cache = node.run(["find", "/var/lib/cni", "-type", "f"]).stdout.split()
    assert cache == [], cache


def test_cri_record_names_the_pod(e2e_node: Node, e2e_base: Path, start_cri: StartCri) -> None:
    """weft's attachment record carries the pod's namespace and name from CNI_ARGS."""
    setup = install_chain("weft", e2e_node, e2e_base, SUBNET_ENV)
    cri = start_cri()
    sb = cri.sandbox(cri.run_pod(POD_A))
    record = attachment_records(setup)[sb.id]
    assert record["ifname"] == "eth0" and record["netns"] == sb.netns, record
    assert record.get("podNamespace") == POD_A.namespace, record
    assert record.get("podName") == POD_A.name, record


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_cri_range_exhausted(
    plugin: str, e2e_node: Node, e2e_base: Path, start_cri: StartCri
) -> None:
    """With room for one pod, the second RunPodSandbox fails; containerd's own DEL leaves
    nothing behind and the first pod is untouched."""
    node = e2e_node
    setup = install_chain(plugin, node, e2e_base, TINY_SUBNET_ENV)
    cri = start_cri()
    a_id = cri.run_pod(POD_A)
    a = cri.sandbox(a_id)
    assert a.ip == "10.42.7.2", a.ip
    veths_before = node_veths(node)
    records_before = attachment_records(setup)
    netns_before = netns_files(node)
    assert len(veths_before) == 1 and netns_before == [a.netns.rsplit("/", 1)[1]]

    with pytest.raises(grpc.RpcError) as failed:
        cri.run_pod(POD_B)
    detail = failed.value.details() or ""
    # The plugin's error message reaches kubelet through the CRI's error detail.
    assert "failed to setup network" in detail and "no IP addresses available" in detail, detail

    # containerd ran ADD, then its own DEL, for the failed sandbox.
    calls = cni_calls(e2e_base)
    b_calls = [c for c in calls if c["id"] != a_id]
    assert [c["command"] for c in b_calls][:2] == ["ADD", "DEL"], calls
    # Nothing of it left: no sandbox, reservation, veth, record, netns.
    assert list(cri.list_pods()) == [a_id]
    assert store_reservations(setup.data_dir) == {a.ip: f"{a_id}\r\neth0"}
    wait_gone(lambda: len(node_veths(node)) == 1, "the failed pod's veth")
    assert [v["ifname"] for v in node_veths(node)] == [v["ifname"] for v in veths_before]
    assert attachment_records(setup) == records_before
    assert netns_files(node) == netns_before
    failed_id = b_calls[0]["id"]
    cache = node.run(["find", "/var/lib/cni", "-type", "f"]).stdout.split()
    assert cache and not [f for f in cache if failed_id in f], cache
    # The first pod is untouched.
    assert cri.state(a_id) == "SANDBOX_READY"
    check_pod_network(node, setup, a, ipaddress.ip_network("10.42.7.0/30"))
    ping(node, a, GATEWAY)
