"""A sandbox cluster: three nodes on one underlay, flannel's data path, pods set up by weft.

Topology (every piece a netns this module creates; nothing on the machine is touched)::

    outside 198.51.100.2 ── router ── underlay bridge br0 (MTU 1500) ──┬── node0 192.0.2.10
    (no route to the pods)  192.0.2.1                                  ├── node1 192.0.2.11
                                                                       └── node2 192.0.2.12

Each node has its own flannel subnet file (10.42.N.1/24 of 10.42.0.0/16), libcni cache and
weft store in a temp dir. This module plays the two daemons that are not weft:

* flanneld: the backend (VXLAN: ``flannel.1``, VNI 1, UDP 8472, nolearning, and per peer a
  route ``10.42.N.0/24 via 10.42.N.0 dev flannel.1 onlink``, a neighbour entry and an fdb
  entry for the peer's VTEP; host-gw: a route per peer via its underlay address) and its
  masquerade and forward rules (FLANNEL-POSTRTG, FLANNEL-FWD) since FLANNEL_IPMASQ=true;
* kube-proxy (iptables mode): one ClusterIP service 10.43.0.10:80 → a pod's :8080, with the
  hairpin mark and masquerade, and ``net.bridge.bridge-nf-call-iptables=1``.

weft itself runs as the kubelet's runtime runs it: the frozen binary, through libcni (the
conformance driver), with k3s's chain (weft, portmap, bandwidth) from packaging/.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.netns import (
    CLUSTER_CIDR,
    NETWORK_NAME,
    PLUGIN,
    REFERENCE_DIR,
    ROOT,
    Netns,
    Underlay,
    create_netns,
    delete_netns,
    k3s_conflist,
    netns_exists,
    new_netns,
    store_records,
    store_reservations,
    subnet_env,
    veth,
    weft_plugin,
)

BACKENDS = ("vxlan", "host-gw")
SERVICE_CIDR = "10.43.0.0/16"
SERVICE_IP = "10.43.0.10"
SERVICE_PORT = 80
POD_PORT = 8080
UNDERLAY_MTU = 1500
ROUTER_UNDERLAY = "192.0.2.1"
ROUTER_OUTSIDE = "198.51.100.1"
OUTSIDE_IP = "198.51.100.2"
VXLAN_DEV = "flannel.1"
VXLAN_ID = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
KUBE_PROXY_MARK = "0x4000/0x4000"
DRIVER = ROOT / "conformance" / "driver" / "bin" / "cnidriver"
AGENT = Path(__file__).resolve().parent / "agent.py"
CHAIN_COMPANIONS = ("portmap", "bandwidth")


def flannel_mtu(backend: str) -> int:
    """What flanneld writes as FLANNEL_MTU: the VXLAN device's MTU (underlay minus the
    encapsulation), or for host-gw the underlay interface's own MTU."""
    return UNDERLAY_MTU - VXLAN_OVERHEAD if backend == "vxlan" else UNDERLAY_MTU


def node_address(index: int) -> str:
    return f"192.0.2.{10 + index}"


def pod_subnet(index: int) -> str:
    return f"10.42.{index}.0/24"


@dataclass
class Pod:
    name: str
    node: int
    ns: Netns
    cid: str
    ip: str = ""
    server: subprocess.Popen[str] | None = None


@dataclass
class ClusterNode:
    index: int
    name: str
    workdir: Path
    ns: Netns = field(init=False)
    pods: list[Pod] = field(default_factory=list)
    vtep_mac: str = ""

    def __post_init__(self) -> None:
        self.ns = Netns(self.name)

    @property
    def address(self) -> str:
        return node_address(self.index)

    @property
    def subnet(self) -> str:
        return pod_subnet(self.index)

    @property
    def gateway(self) -> str:
        return f"10.42.{self.index}.1"

    @property
    def vtep_ip(self) -> str:
        return f"10.42.{self.index}.0"

    @property
    def bin_dir(self) -> Path:
        return self.workdir / "bin"

    @property
    def cache_dir(self) -> Path:
        return self.workdir / "cache"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "networks"

    @property
    def subnet_file(self) -> Path:
        return self.workdir / "subnet.env"

    @property
    def conflist(self) -> Path:
        return self.workdir / "10-weft.conflist"

    @property
    def gc_conflist(self) -> Path:
        return self.workdir / "gc.conflist"

    def reservations(self, network: str = NETWORK_NAME) -> dict[str, str]:
        """host-local's store on disk: address → owning container id."""
        held = store_reservations(self.data_dir / network)
        return {ip: who.decode().split("\r\n")[0].strip() for ip, who in held.items()}

    def records(self, network: str = NETWORK_NAME) -> list[str]:
        """weft's attachment records on disk (file names)."""
        return sorted(n for n in store_records(self.data_dir / network) if n.endswith(".json"))


class Cluster:
    def __init__(
        self,
        backend: str,
        workdir: Path,
        *,
        nodes: int = 3,
        pods_per_node: int = 2,
        plugin: str = PLUGIN,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        self.backend = backend
        self.workdir = workdir
        self.plugin = plugin
        self.pods_per_node = pods_per_node
        self.tag = f"wk{uuid.uuid4().hex[:6]}"
        self.nodes = [
            ClusterNode(i, f"{self.tag}-node{i}", workdir / f"node{i}") for i in range(nodes)
        ]
        self.underlay: Underlay | None = None
        self.router: Netns | None = None
        self.outside: Netns | None = None
        self.outside_server: subprocess.Popen[str] | None = None
        self._pod_seq = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def up(self) -> Cluster:
        """Underlay, router and outside host, the nodes with flannel, the pods, kube-proxy."""
        self.underlay = Underlay.create(f"{self.tag}-ul", UNDERLAY_MTU)
        self.router = new_netns(f"{self.tag}-rt")
        self.outside = new_netns(f"{self.tag}-out")
        self.underlay.attach(self.router, "eth0", f"{ROUTER_UNDERLAY}/24", "rt")
        veth(self.router, "ext0", self.outside, "eth0")
        self.router.run("ip", "addr", "add", f"{ROUTER_OUTSIDE}/24", "dev", "ext0")
        self.router.sysctl("net.ipv4.ip_forward", "1")
        self.outside.run("ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0")
        self.outside.run("ip", "route", "add", "default", "via", ROUTER_OUTSIDE)
        self.outside_server = start_server(self.outside)
        for node in self.nodes:
            self.boot(node)
        for node in self.nodes:
            self.program_peers(node)
        for node in self.nodes:
            for _ in range(self.pods_per_node):
                self.add_pod(node)
        for node in self.nodes:
            self.play_kube_proxy(node)
        return self

    def close(self) -> None:
        """Everything this cluster made, also after a half-done ``up``."""
        for node in self.nodes:
            self.power_off(node)
        stop(self.outside_server)
        for ns in (self.outside, self.router, self.underlay.ns if self.underlay else None):
            if ns is not None:
                delete_netns(ns)

    def power_off(self, node: ClusterNode) -> None:
        """The node's kernel state is gone (its pods' netns and its own), its disk stays."""
        for pod in node.pods:
            stop(pod.server)
            delete_netns(pod.ns)
        node.pods = []
        delete_netns(node.ns)
        if self.underlay is not None:  # the kernel tears a netns down asynchronously
            self.underlay.wait_port_gone(f"n{node.index}")

    def reboot(self, node: ClusterNode, same_ids: bool) -> list[Pod]:
        """Power the node off and boot it again: flanneld re-programs its backend (the VTEP
        gets a new MAC, which the peers learn), kube-proxy its rules, and the runtime
        re-creates the pods — with the container ids they had (``same_ids``) or new ones.
        Returns the pods the node had before."""
        before = list(node.pods)
        self.power_off(node)
        self.boot(node)
        for peer in self.nodes:
            self.program_peers(peer)
        for old in before:
            self.add_pod(node, cid=old.cid if same_ids else None)
        self.play_kube_proxy(node)
        return before

    # ---- a node: what boot and flanneld set up ------------------------------------------
    def boot(self, node: ClusterNode) -> None:
        assert self.underlay is not None
        if netns_exists(node.name):
            raise RuntimeError(f"{node.name} is already up")
        node.ns = create_netns(node.name)
        self.underlay.attach(node.ns, "eth0", f"{node.address}/24", f"n{node.index}")
        node.ns.run("ip", "route", "add", "default", "via", ROUTER_UNDERLAY)
        node.ns.sysctl("net.ipv4.ip_forward", "1")
        node.ns.sysctl("net.bridge.bridge-nf-call-iptables", "1")  # k3s requires it
        self._write_node_files(node)
        if self.backend == "vxlan":
            node.ns.run(
                "ip", "link", "add", VXLAN_DEV, "type", "vxlan", "id", str(VXLAN_ID),
                "local", node.address, "dev", "eth0", "dstport", str(VXLAN_PORT),
                "nolearning",
            )  # fmt: skip
            node.ns.run("ip", "addr", "add", f"{node.vtep_ip}/32", "dev", VXLAN_DEV)
            node.ns.run("ip", "link", "set", VXLAN_DEV, "up")
            node.vtep_mac = node.ns.ip("link", "show", "dev", VXLAN_DEV)[0]["address"]
        node.ns.iptables_restore(flannel_rules(node.subnet))

    def program_peers(self, node: ClusterNode) -> None:
        """What flanneld programs on ``node`` for every other node's lease (idempotent:
        ``replace``, and a rebooted peer's old VTEP MAC is dropped from the fdb)."""
        for peer in self.nodes:
            if peer is node:
                continue
            if self.backend == "host-gw":
                node.ns.run("ip", "route", "replace", peer.subnet, "via", peer.address)
                continue
            for entry in node.ns.ip("neigh", "show", "dev", VXLAN_DEV, "to", peer.vtep_ip):
                stale = entry.get("lladdr", "")
                if stale and stale != peer.vtep_mac:
                    node.ns.run("bridge", "fdb", "del", stale, "dev", VXLAN_DEV, check=False)
            node.ns.run(
                "ip", "neigh", "replace", peer.vtep_ip, "lladdr", peer.vtep_mac,
                "dev", VXLAN_DEV, "nud", "permanent",
            )  # fmt: skip
            node.ns.run(
                "bridge", "fdb", "replace", peer.vtep_mac, "dev", VXLAN_DEV,
                "dst", peer.address, "self", "permanent",
            )  # fmt: skip
            node.ns.run(
                "ip", "route", "replace", peer.subnet, "via", peer.vtep_ip,
                "dev", VXLAN_DEV, "onlink",
            )  # fmt: skip

    def play_kube_proxy(self, node: ClusterNode) -> None:
        node.ns.iptables_restore(kube_proxy_rules(self.service_backend.ip))

    @property
    def service_backend(self) -> Pod:
        return self.nodes[0].pods[0]

    def _write_node_files(self, node: ClusterNode) -> None:
        for d in (node.bin_dir, node.cache_dir, node.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        node.subnet_file.write_text(
            subnet_env(f"{node.gateway}/24", CLUSTER_CIDR, flannel_mtu(self.backend))
        )
        links = {"weft": Path(self.plugin)}
        links.update({name: REFERENCE_DIR / name for name in CHAIN_COMPANIONS})
        for name, target in links.items():
            link = node.bin_dir / name
            if not link.is_symlink():
                link.symlink_to(target)
        conf = k3s_conflist(weft_plugin(node.subnet_file, node.data_dir))
        node.conflist.write_text(json.dumps(conf, indent=1))
        # GC is CNI 1.1.0; Debian's portmap and bandwidth (1.1.1) support up to 1.0.0
        gc = dict(conf, cniVersion="1.1.0", plugins=conf["plugins"][:1])
        node.gc_conflist.write_text(json.dumps(gc, indent=1))

    # ---- pods: the runtime's side ------------------------------------------------------
    def driver(
        self, node: ClusterNode, *args: str, cid: str = "", pod_name: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """The libcni driver inside the node netns, with the environment a runtime gives."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_PATH": str(node.bin_dir),
            "CNI_CACHE_DIR": str(node.cache_dir),
            "CNI_IFNAME": "eth0",
        }
        if cid:
            env["CNI_CONTAINERID"] = cid
            env["CNI_ARGS"] = (
                f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name};"
                f"K8S_POD_INFRA_CONTAINER_ID={cid}"
            )
        return node.ns.run(str(DRIVER), *args, env=env, check=False, timeout=120)

    def add_pod(self, node: ClusterNode, cid: str | None = None) -> Pod:
        self._pod_seq += 1
        name = f"n{node.index}-pod{self._pod_seq}"
        pod = Pod(name, node.index, new_netns(f"{self.tag}-{name}"), cid or uuid.uuid4().hex)
        node.pods.append(pod)
        res = self.driver(node, "add", str(node.conflist), pod.ns.path, cid=pod.cid, pod_name=name)
        if res.returncode != 0:
            raise PodAddFailed(f"ADD {name} on {node.name}: {res.stdout} {res.stderr}", res)
        result = json.loads(res.stdout)
        pod.ip = result["ips"][0]["address"].split("/")[0]
        pod.server = start_server(pod.ns)
        return pod

    def delete_pod(self, node: ClusterNode, pod: Pod) -> subprocess.CompletedProcess[str]:
        """CNI DEL of ``pod`` through the driver and the whole chain, by its netns path
        (which may be gone: a runtime tearing down a sandbox after a reboot)."""
        return self.driver(
            node, "del", str(node.conflist), pod.ns.path, cid=pod.cid, pod_name=pod.name
        )

    def gc(self, node: ClusterNode) -> subprocess.CompletedProcess[str]:
        """CNI GC through the driver, listing the node's live attachments as valid."""
        valid = [{"containerID": p.cid, "ifname": "eth0"} for p in node.pods]
        return self.driver(node, "gc", str(node.gc_conflist), json.dumps(valid))

    @property
    def pods(self) -> list[Pod]:
        return [p for n in self.nodes for p in n.pods]

    # ---- traffic (all between addresses inside the sandbox) ------------------------------
    def ping(self, src: Netns, dst: str, size: int | None = None, tries: int = 3) -> bool:
        """ICMP echo; with ``size``: that many payload bytes with DF set (no fragmenting)."""
        argv = ["ping", "-n", "-c", "1", "-W", "2"]
        if size is not None:
            argv += ["-M", "do", "-s", str(size)]
        for attempt in range(tries):
            if src.run(*argv, dst, check=False).returncode == 0:
                return True
            if attempt + 1 < tries:
                time.sleep(0.3)
        return False

    def whoami(
        self, src: Netns, host: str, port: int = POD_PORT, timeout: float = 10.0
    ) -> str | None:
        """The source address the server at ``host:port`` saw for a connection from ``src``
        (None: no answer within ``timeout`` seconds)."""
        res = src.run(
            sys.executable, "-I", str(AGENT), "whoami", host, str(port), str(timeout),
            check=False,
        )  # fmt: skip
        return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None

    def fetch(self, src: Netns, host: str, size: int, port: int = POD_PORT) -> tuple[int, str]:
        res = src.run(
            sys.executable, "-I", str(AGENT), "fetch", host, str(port), str(size),
            check=False, timeout=60,
        )  # fmt: skip
        if res.returncode != 0:
            return (0, res.stderr.strip())
        count, digest = res.stdout.split()
        return int(count), digest


class PodAddFailed(RuntimeError):
    def __init__(self, msg: str, res: subprocess.CompletedProcess[str]) -> None:
        super().__init__(msg)
        self.result = res

    @property
    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = json.loads(self.result.stdout)
        return err


def flannel_rules(node_subnet: str) -> str:
    """flanneld's rules with FLANNEL_IPMASQ=true: pod↔pod traffic inside the cluster CIDR is
    left alone, what kube-proxy marked is kube-proxy's, pods talking to the world are
    masqueraded (but not to multicast), the host talking to pods too; FORWARD accepts the
    cluster CIDR both ways."""
    c = '-m comment --comment "flanneld masq"'
    f = '-m comment --comment "flanneld forward"'
    return "\n".join(
        [
            "*nat",
            ":FLANNEL-POSTRTG - [0:0]",
            f"-A POSTROUTING {c} -j FLANNEL-POSTRTG",
            f"-A FLANNEL-POSTRTG -m mark --mark {KUBE_PROXY_MARK} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {node_subnet} -d {CLUSTER_CIDR} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {CLUSTER_CIDR} -d {node_subnet} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG ! -s {CLUSTER_CIDR} -d {node_subnet} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {CLUSTER_CIDR} ! -d 224.0.0.0/4 {c} "
            "-j MASQUERADE --random-fully",
            f"-A FLANNEL-POSTRTG ! -s {CLUSTER_CIDR} -d {CLUSTER_CIDR} {c} "
            "-j MASQUERADE --random-fully",
            "COMMIT",
            "*filter",
            ":FLANNEL-FWD - [0:0]",
            f"-A FORWARD {f} -j FLANNEL-FWD",
            f"-A FLANNEL-FWD -s {CLUSTER_CIDR} {f} -j ACCEPT",
            f"-A FLANNEL-FWD -d {CLUSTER_CIDR} {f} -j ACCEPT",
            "COMMIT",
            "",
        ]
    )


def kube_proxy_rules(backend_ip: str) -> str:
    """kube-proxy (iptables mode) for one ClusterIP service with one endpoint: DNAT to the
    endpoint; a connection from the endpoint to itself (hairpin) is marked and masqueraded,
    or its reply would skip the conntrack that has to undo the DNAT. Once per node boot."""
    svc, sep = "KUBE-SVC-WEFTCLUSTER", "KUBE-SEP-WEFTCLUSTER"
    c = '-m comment --comment "default/weft-echo:http"'
    return "\n".join(
        [
            "*nat",
            ":KUBE-SERVICES - [0:0]",
            ":KUBE-POSTROUTING - [0:0]",
            ":KUBE-MARK-MASQ - [0:0]",
            f":{svc} - [0:0]",
            f":{sep} - [0:0]",
            '-I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-I POSTROUTING -m comment --comment "kubernetes postrouting rules" '
            "-j KUBE-POSTROUTING",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
            f"-A KUBE-POSTROUTING -m mark ! --mark {KUBE_PROXY_MARK} -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
            "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
            f"-A KUBE-SERVICES -d {SERVICE_IP}/32 -p tcp --dport {SERVICE_PORT} {c} -j {svc}",
            f"-A {svc} {c} -j {sep}",
            f"-A {sep} -s {backend_ip}/32 {c} -j KUBE-MARK-MASQ",
            f"-A {sep} -p tcp {c} -j DNAT --to-destination {backend_ip}:{POD_PORT}",
            "COMMIT",
            "",
        ]
    )


def start_server(ns: Netns, port: int = POD_PORT) -> subprocess.Popen[str]:
    proc = ns.popen(sys.executable, "-I", str(AGENT), "serve", str(port))
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        stop(proc)
        raise RuntimeError(f"server in {ns.name} did not start: {line!r}")
    return proc


def stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def running_cluster(backend: str, workdir: Path, **kw: Any) -> Iterator[Cluster]:
    cluster = Cluster(backend, workdir, **kw)
    try:
        yield cluster.up()
    finally:
        cluster.close()
