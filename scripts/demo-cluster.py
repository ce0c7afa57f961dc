#!/usr/bin/env python3
"""make demo-cluster: three sandbox nodes with flannel's data path, pods set up by weft.

For each flannel backend (VXLAN, host-gw) it builds the sandbox cluster of the cluster test
tier (tests/cluster/cluster.py: netns only, a temp dir, nothing on the machine touched),
prints the topology, each node's cni0, flannel.1 and routes, then a matrix of who reaches
whom — ICMP and TCP, with the source address the receiver saw — and the DF MTU probe
across nodes, and cleans up. Exits non-zero if anything does not hold.

    scripts/demo-cluster.py [--backend vxlan|host-gw] [--plugin dist/weft/weft]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster.cluster import (  # noqa: E402
    BACKENDS,
    OUTSIDE_IP,
    ROUTER_UNDERLAY,
    SERVICE_IP,
    SERVICE_PORT,
    UNDERLAY_MTU,
    VXLAN_DEV,
    Cluster,
    Pod,
    flannel_mtu,
    running_cluster,
)

BOLD, OFF = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{OFF}", flush=True)


def show(*argv: str, label: str = "") -> None:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in (out.stdout + out.stderr).rstrip().splitlines():
        print(f"    {label}{line.rstrip()}")


def topology(c: Cluster) -> None:
    say(f"topology ({c.backend}): every box is a network namespace")
    print(f"    underlay bridge br0, MTU {UNDERLAY_MTU}, 192.0.2.0/24")
    print(f"    router {ROUTER_UNDERLAY} -> outside host {OUTSIDE_IP} (no route to 10.42.0.0/16)")
    backend = c.service_backend.name
    print(f"    service {SERVICE_IP}:{SERVICE_PORT} -> {backend}:8080 (kube-proxy DNAT)")
    for n in c.nodes:
        pods = ", ".join(f"{p.name} {p.ip}" for p in n.pods)
        print(f"    node{n.index} {n.address}  FLANNEL_SUBNET={n.gateway}/24  pods: {pods}")
    print(f"    FLANNEL_MTU={flannel_mtu(c.backend)} FLANNEL_IPMASQ=true; CNI chain: weft, portmap,"
          " bandwidth (libcni)")  # fmt: skip


def nodes(c: Cluster) -> None:
    for n in c.nodes:
        say(f"node{n.index} ({n.address}): cni0, {VXLAN_DEV}, routes")
        cni0 = n.ns.ip("-d", "link", "show", "dev", "cni0")[0]
        ports = n.ns.ip("-d", "link", "show", "master", "cni0")
        hairpin = sum(1 for p in ports if p["linkinfo"]["info_slave_data"].get("hairpin"))
        print(
            f"    cni0 {' '.join(n.ns.addrs('cni0'))} mtu {cni0['mtu']}, {len(ports)} pod ports"
            f" ({hairpin} with hairpin on)"
        )
        if c.backend == "vxlan":
            vtep = n.ns.ip("-d", "link", "show", "dev", VXLAN_DEV)[0]
            v = vtep["linkinfo"]["info_data"]
            print(
                f"    {VXLAN_DEV} {' '.join(n.ns.addrs(VXLAN_DEV))} mtu {vtep['mtu']} vxlan id"
                f" {v['id']} local {v['local']} dstport {v['port']}"
                f"{'' if v['learning'] else ' nolearning'} mac {vtep['address']}"
            )
            show("bridge", "-n", n.name, "fdb", "show", "dev", VXLAN_DEV, label="fdb   ")
            show("ip", "-n", n.name, "neigh", "show", "dev", VXLAN_DEV, label="neigh ")
        show("ip", "-n", n.name, "route", label="route ")


def matrix(c: Cluster) -> bool:
    """Rows send, columns receive. A cell: ICMP and TCP both pass, and the source address
    the receiver saw (the service's backend and the outside host print theirs too)."""
    pods = [n.pods[0] for n in c.nodes]
    cols: list[tuple[str, str, int]] = [(p.name, p.ip, 8080) for p in pods]
    cols += [("service", SERVICE_IP, SERVICE_PORT), ("outside", OUTSIDE_IP, 8080)]
    ok = True
    width = 24
    say(f"who reaches whom ({c.backend}): ICMP+TCP, and the source address the receiver saw")
    print(
        "    (pod to pod: the sender's pod IP; service: its backend n0-pod1 reaching itself"
        " sees the gateway, hairpin + masquerade; outside: the node's address)"
    )
    print("    " + "from \\ to".ljust(12) + "".join(name.ljust(width) for name, _, _ in cols))
    for src in pods:
        row = [src.name.ljust(12)]
        for name, ip, port in cols:
            if name == src.name:
                row.append("-".ljust(width))
                continue
            icmp = name == "service" or c.ping(src.ns, ip)  # kube-proxy services are TCP only
            seen = c.whoami(src.ns, ip, port)
            want = expected_source(c, src, name)
            good = icmp and seen == want
            ok &= good
            cell = f"{'ok' if good else 'FAIL'} {seen or 'no answer'}"
            row.append(cell.ljust(width))
        print("    " + "".join(row))
    fits = flannel_mtu(c.backend) - 28
    say(f"MTU probe ({c.backend}): DF ping with {fits} and {fits + 1} bytes of payload")
    for src in pods:
        for dst in pods:
            if src is dst:
                continue
            small = c.ping(src.ns, dst.ip, size=fits)
            big = src.ns.run(
                "ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", str(fits + 1), dst.ip,
                check=False,
            )  # fmt: skip
            why = (big.stderr.strip() or big.stdout.strip()).splitlines()[:1]
            ok &= small and big.returncode != 0
            print(
                f"    {src.name} -> {dst.name}: {fits} {'passes' if small else 'FAILS'},"
                f" {fits + 1} "
                + (f"is refused ({why[0] if why else ''})" if big.returncode else "PASSES (wrong)")
            )
    return ok


def expected_source(c: Cluster, src: Pod, column: str) -> str:
    node = c.nodes[src.node]
    if column == "outside":
        return node.address  # flanneld's masquerade
    if column == "service" and src is c.service_backend:
        return node.gateway  # hairpin: kube-proxy's masquerade
    return src.ip  # pod to pod: never masqueraded


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=BACKENDS, action="append")
    ap.add_argument(
        "--plugin", default=os.environ.get("WEFT_PLUGIN", str(ROOT / "dist" / "weft" / "weft"))
    )
    args = ap.parse_args()
    if not os.access(args.plugin, os.X_OK):
        print(f"demo-cluster: {args.plugin} not built (run: make build)", file=sys.stderr)
        return 1
    if not Path("/proc/sys/net/bridge").is_dir():
        subprocess.run(["modprobe", "br_netfilter"], check=False)
    ok = True
    for backend in args.backend or BACKENDS:
        with (
            tempfile.TemporaryDirectory(prefix="weft-demo-cluster.") as tmp,
            running_cluster(backend, Path(tmp), plugin=args.plugin) as c,
        ):
            topology(c)
            nodes(c)
            ok &= matrix(c)
        say(f"{backend}: cleaned up (namespaces deleted, temp dir removed)")
    say("demo-cluster ok" if ok else "demo-cluster: something did not hold (FAIL above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
