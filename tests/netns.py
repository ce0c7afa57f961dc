"""Sandbox nodes and pods for kernel tests: throwaway network namespaces, temp dirs.

Every network change happens inside namespaces created here; the machine's own
interfaces, routes, /etc/cni, /opt/cni and /var/lib/cni are never touched. Kernel state is
read back with iproute2 (``ip -j``), an oracle independent of the plugin.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = os.environ.get("WEFT_PLUGIN") or str(ROOT / "tests" / "weft-from-source")

K3S_SUBNET_ENV = """FLANNEL_NETWORK=10.42.0.0/16
FLANNEL_SUBNET=10.42.{x}.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
"""


def _is_ip(name: str) -> bool:
    try:
        return str(ipaddress.ip_address(name)) == name
    except ValueError:
        return False


class CommandFailed(subprocess.CalledProcessError):
    """CalledProcessError that also says what the command printed on stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}: {self.stderr.strip()}"


def sh(
    *argv: str,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, input=input, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise CommandFailed(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


@dataclass
class Netns:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def ip(self, *args: str) -> Any:
        out = sh("ip", "-n", self.name, "-j", *args).stdout
        return json.loads(out) if out.strip() else []

    def run(
        self,
        *argv: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside this netns; ``env`` replaces the environment when given."""
        return sh(
            "ip",
            "netns",
            "exec",
            self.name,
            *argv,
            check=check,
            env=env,
            input=input,
            timeout=timeout,
        )

    def popen(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """A long-running ``argv`` inside this netns (``ip netns exec`` execs it in place, so
        the Popen's pid is the process itself: killing it leaves nothing behind)."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def iptables_restore(self, rules: str) -> None:
        """One ``iptables-restore --noflush`` transaction inside this netns."""
        self.run("iptables-restore", "--noflush", "-w", "5", input=rules)

    def links(self) -> dict[str, Any]:
        return {link["ifname"]: link for link in self.ip("-d", "link", "show")}

    def addrs(self, dev: str) -> list[str]:
        out = self.ip("addr", "show", "dev", dev)
        return (
            [
                f"{a['local']}/{a['prefixlen']}"
                for a in out[0]["addr_info"]
                if a.get("scope") != "link"
            ]
            if out
            else []
        )

    def routes(self, family: str = "-4") -> list[dict[str, Any]]:
        return list(self.ip(family, "route", "show"))


def new_netns(prefix: str) -> Netns:
    return create_netns(f"{prefix}-{uuid.uuid4().hex[:8]}")


def create_netns(name: str) -> Netns:
    """A netns by an exact name (e.g. a node recreated under its old name), lo up."""
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    return Netns(name)


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def veth(a: Netns, a_ifname: str, b: Netns, b_ifname: str, mtu: int | None = None) -> None:
    """A veth pair with one end in each netns, both up."""
    tmp = f"vt{uuid.uuid4().hex[:10]}"  # created in the root netns only for an instant
    extra = ["mtu", str(mtu)] if mtu else []
    sh(
        "ip",
        "link",
        "add",
        tmp,
        *extra,
        "netns",
        a.name,
        "type",
        "veth",
        "peer",
        "name",
        b_ifname,
        *extra,
        "netns",
        b.name,
    )
    a.run("ip", "link", "set", tmp, "name", a_ifname)
    a.run("ip", "link", "set", a_ifname, "up")
    b.run("ip", "link", "set", b_ifname, "up")


@dataclass
class Underlay:
    """A netns with one bridge: the L2 segment sandbox nodes (and routers) share."""

    ns: Netns
    bridge: str = "br0"
    mtu: int = 1500

    @classmethod
    def create(cls, prefix: str, mtu: int = 1500) -> Underlay:
        u = cls(new_netns(prefix), mtu=mtu)
        u.ns.run("ip", "link", "add", u.bridge, "mtu", str(mtu), "type", "bridge")
        u.ns.run("ip", "link", "set", u.bridge, "up")
        return u

    def attach(self, ns: Netns, ifname: str, cidr: str, port: str) -> None:
        """Plug ``ns`` into the segment as ``ifname`` with address ``cidr``; ``port`` is the
        bridge port's name in the underlay."""
        veth(self.ns, port, ns, ifname, self.mtu)
        self.ns.run("ip", "link", "set", port, "master", self.bridge)
        ns.run("ip", "addr", "add", cidr, "dev", ifname)

    def wait_port_gone(self, port: str, timeout: float = 30.0) -> None:
        """Until the port's veth is destroyed: a deleted netns takes its veths with it, but
        the kernel does that asynchronously."""
        deadline = time.monotonic() + timeout
        while self.ns.run("ip", "link", "show", "dev", port, check=False).returncode == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{port} still in {self.ns.name} after {timeout} s")
            time.sleep(0.05)


def delete_netns(ns: Netns) -> None:
    sh("ip", "netns", "del", ns.name, check=False)


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Node:
    """A sandbox node: a netns in which the plugin runs as the host, plus its files."""

    ns: Netns
    tmp: Path
    subnet_x: int = 0
    plugin: str = PLUGIN
    pods: list[Netns] = field(default_factory=list)

    @property
    def subnet_file(self) -> Path:
        return self.tmp / "subnet.env"

    @property
    def data_dir(self) -> Path:
        return self.tmp / "networks"

    def store_dir(self, network: str = "cbr0") -> Path:
        return self.data_dir / network

    def reservations(self, network: str = "cbr0") -> dict[str, bytes]:
        """Reservation files, as host-local defines them: named by an address (canonical)."""
        d = self.store_dir(network)
        if not d.exists():
            return {}
        return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and _is_ip(p.name)}

    def write_subnet(self, text: str | None = None) -> None:
        self.subnet_file.write_text(
            text if text is not None else K3S_SUBNET_ENV.format(x=self.subnet_x)
        )

    def conf(self, version: str = "1.0.0", **delegate: Any) -> dict[str, Any]:
        """The k3s flannel-shape config weft receives as the first plugin of cbr0."""
        d = {"hairpinMode": True, "forceAddress": True, "isDefaultGateway": True}
        d.update(delegate)
        return {
            "cniVersion": version,
            "name": "cbr0",
            "type": "weft",
            "subnetFile": str(self.subnet_file),
            "ipam": {"dataDir": str(self.data_dir)},
            "delegate": d,
        }

    def pod(self) -> Netns:
        ns = new_netns(self.ns.name + "-p")
        self.pods.append(ns)
        return ns

    def exec(
        self,
        command: str,
        conf: dict[str, Any] | str | bytes,
        cid: str = "",
        netns: str = "",
        ifname: str = "eth0",
        env: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
    ) -> Outcome:
        e = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": "/usr/lib/cni",
        }
        e.update(env or {})
        for k in drop:
            e.pop(k, None)
        data = conf if isinstance(conf, str | bytes) else json.dumps(conf)
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns.name, self.plugin],
            input=data.encode() if isinstance(data, str) else data,
            capture_output=True,
            env=e,
            timeout=120,
        )
        return Outcome(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    def add(self, pod: Netns, cid: str, conf: dict[str, Any] | None = None, **kw: Any) -> Outcome:
        return self.exec("ADD", conf or self.conf(), cid, pod.path, **kw)

    def delete(
        self, pod: Netns | None, cid: str, conf: dict[str, Any] | None = None, **kw: Any
    ) -> Outcome:
        return self.exec("DEL", conf or self.conf(), cid, pod.path if pod else "", **kw)

    def check(
        self,
        pod: Netns,
        cid: str,
        prev: dict[str, Any],
        conf: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Outcome:
        c = dict(conf or self.conf())
        c["prevResult"] = prev
        return self.exec("CHECK", c, cid, pod.path, **kw)

    def weft_files(self, network: str = "cbr0") -> list[str]:
        """Every file under the store's .weft/ (records and lock files), relative paths."""
        d = self.store_dir(network) / ".weft"
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if not p.is_dir())

    def veths(self) -> list[str]:
        return [
            n
            for n, link in self.ns.links().items()
            if link.get("linkinfo", {}).get("info_kind") == "veth"
        ]
