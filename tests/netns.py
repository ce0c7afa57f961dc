"""The sandbox every test tier shares: throwaway network namespaces, the oracles that read
kernel and store state back, and k3s's fixtures (the subnet file, weft's flannel-shape config,
the reference bridge + host-local config, k3s's conflist), each written once here.

Every network change happens inside namespaces created here; the machine's own
interfaces, routes, /etc/cni, /opt/cni and /var/lib/cni are never touched. Kernel state is
read back with iproute2 (``ip -j``) and ``iptables-save``, store state with directory listings:
oracles independent of the plugin.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import functools
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = os.environ.get("WEFT_PLUGIN") or str(ROOT / "tests" / "weft-from-source")
NETNS_DIR = "/run/netns"
REFERENCE_DIR = Path("/usr/lib/cni")
# k3s's stock conflist with weft first: the product's own file, so the fixtures follow it.
K3S_CONFLIST = ROOT / "packaging" / "10-weft.conflist"
NETWORK_NAME = "cbr0"
CLUSTER_CIDR = "10.42.0.0/16"
FLANNEL_MTU = 1450  # what flanneld writes for VXLAN on a 1500-byte underlay


# ---- running commands ---------------------------------------------------------------------
class CommandFailed(subprocess.CalledProcessError):
    """CalledProcessError that also says what the command printed on stderr."""

    def __str__(self) -> str:
        out = f"\nstdout: {self.stdout.strip()}" if self.stdout.strip() else ""
        return f"{super().__str__()}: {self.stderr.strip()}{out}"


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


def cni_env(command: str, cid: str = "", netns: str = "", ifname: str = "eth0") -> dict[str, str]:
    """The environment a runtime execs a CNI plugin with (PATH kept for iptables)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": str(REFERENCE_DIR),
    }


# ---- setns(2) -------------------------------------------------------------------------------
CLONE_NEWNET = 0x40000000


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def setns_fd(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def enter_netns(path: str) -> int:
    """setns(2) into the netns at ``path``; returns an fd of the netns left, for
    :func:`leave_netns`. Children started afterwards are born in ``path``'s netns, so no
    ``ip netns exec`` stands between the caller and what it runs."""
    orig = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns_fd(fd)
        finally:
            os.close(fd)
    except BaseException:
        os.close(orig)
        raise
    return orig


def leave_netns(orig: int) -> None:
    """Back into the netns :func:`enter_netns` returned, and close its fd."""
    try:
        setns_fd(orig)
    finally:
        os.close(orig)


# ---- network namespaces -----------------------------------------------------------------------
def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def netns_exists(name: str) -> bool:
    return os.path.exists(f"{NETNS_DIR}/{name}")


def ip_json_parse(argv: list[str], rc: int, out: str, err: str, missing_ok: bool = False) -> Any:
    """What an ``ip -j`` run printed, parsed; an absent device or netns is ``[]`` when
    ``missing_ok``."""
    if rc != 0:
        if missing_ok and ("does not exist" in err or "Cannot find device" in err):
            return []
        raise CommandFailed(rc, argv, out, err)
    return json.loads(out) if out.strip() else []


def _ip_json_run(argv: list[str], missing_ok: bool = False) -> Any:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    return ip_json_parse(argv, proc.returncode, proc.stdout, proc.stderr, missing_ok)


def ip_json(netns: str, *args: str, missing_ok: bool = False) -> Any:
    """``ip -n NETNS -j ARGS``, parsed: the kernel-state oracle."""
    return _ip_json_run(["ip", "-n", netns, "-j", *args], missing_ok)


def ip_json_behind(enter: list[str], *args: str) -> Any:
    """``ip -j ARGS`` behind ``enter``, an nsenter prefix: for a netns no name in /run/netns
    reaches (a container's, by its pid or by a path in another mount namespace)."""
    return _ip_json_run([*enter, "ip", "-j", *args])


def iptables_save(netns: str, table: str = "nat") -> str:
    """``iptables-save -t TABLE`` inside NETNS: the rules oracle."""
    return sh("ip", "netns", "exec", netns, "iptables-save", "-t", table).stdout


@dataclass
class Netns:
    name: str

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}"

    def ip(self, *args: str) -> Any:
        return ip_json(self.name, *args)

    def iptables_save(self, table: str = "nat") -> str:
        return iptables_save(self.name, table)

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
    return create_netns(unique_name(prefix))


def create_netns(name: str, lo_up: bool = True) -> Netns:
    """A netns by an exact name (e.g. a node recreated under its old name), lo up unless
    ``lo_up`` is false (as a runtime creates a pod's: bringing lo up is a plugin's job)."""
    sh("ip", "netns", "add", name)
    if lo_up:
        sh("ip", "-n", name, "link", "set", "lo", "up")
    return Netns(name)


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


def delete_netns(ns: Netns | str, check: bool = False) -> None:
    sh("ip", "netns", "del", ns if isinstance(ns, str) else ns.name, check=check)


# ---- the store oracle: host-local's files and weft's records, read as files -----------------
def is_ip(name: str) -> bool:
    """A canonical address: how host-local names a reservation file."""
    try:
        return str(ipaddress.ip_address(name)) == name
    except ValueError:
        return False


def store_reservations(store: Path) -> dict[str, bytes]:
    """Reservation files of one network's store (``<dataDir>/<network>``): address -> content."""
    if not store.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in store.iterdir() if p.is_file() and is_ip(p.name)}


def store_records(store: Path) -> dict[str, dict[str, Any]]:
    """weft's attachment records by file name (unparseable ones as {"<raw>": text})."""
    d = store / ".weft"
    out: dict[str, dict[str, Any]] = {}
    if not d.is_dir():
        return out
    for p in d.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        try:
            out[p.name] = json.loads(p.read_bytes())
        except ValueError:
            out[p.name] = {"<raw>": p.read_bytes().decode("latin-1")}
    return out


def store_weft_files(store: Path) -> list[str]:
    """Every file under the store's .weft/ (records and lock files), relative paths."""
    d = store / ".weft"
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if not p.is_dir())


def attachment_lock(store: Path, cid: str, ifname: str = "eth0") -> Path:
    """Where weft keeps the lock of one attachment, by the store's documented naming."""
    return store / ".weft" / "locks" / hashlib.sha256(f"{cid}\n{ifname}".encode()).hexdigest()


def host_veth_name(cid: str, ifname: str = "eth0") -> str:
    """The node-side veth weft names after an attachment."""
    return "veth" + hashlib.sha256(f"{cid}\0{ifname}".encode()).hexdigest()[:11]


# ---- k3s's fixtures ---------------------------------------------------------------------------
def subnet_env(
    subnet: str = "10.42.0.1/24",
    network: str = CLUSTER_CIDR,
    mtu: int | None = FLANNEL_MTU,
    ipmasq: bool | None = True,
    ipv6: tuple[str, str] | None = None,
) -> str:
    """The subnet file flanneld writes; ``ipv6`` = (network, subnet); a None line is left out."""
    lines = [f"FLANNEL_NETWORK={network}", f"FLANNEL_SUBNET={subnet}"]
    if ipv6 is not None:
        lines += [f"FLANNEL_IPV6_NETWORK={ipv6[0]}", f"FLANNEL_IPV6_SUBNET={ipv6[1]}"]
    if mtu is not None:
        lines.append(f"FLANNEL_MTU={mtu}")
    if ipmasq is not None:
        lines.append(f"FLANNEL_IPMASQ={'true' if ipmasq else 'false'}")
    return "".join(line + "\n" for line in lines)


def parse_subnet_env(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


@functools.cache
def _k3s_conflist_text() -> str:
    return K3S_CONFLIST.read_text()


def weft_plugin(subnet_file: Path | str, data_dir: Path | str, **delegate: Any) -> dict[str, Any]:
    """weft's entry of k3s's conflist (flannel shape) with this node's files; ``delegate``
    overrides keys of its ``delegate`` section."""
    plugin: dict[str, Any] = json.loads(_k3s_conflist_text())["plugins"][0]
    plugin["subnetFile"] = str(subnet_file)
    plugin["ipam"] = {"dataDir": str(data_dir)}
    plugin["delegate"].update(delegate)
    return plugin


def reference_plugin(subnet_text: str, data_dir: Path | str) -> dict[str, Any]:
    """What flannel's CNI plugin derives from the subnet file and hands to the reference
    bridge + host-local (ipMasq is !FLANNEL_IPMASQ: flannel masquerades itself)."""
    env = parse_subnet_env(subnet_text)
    return {
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        "isDefaultGateway": True,
        "hairpinMode": True,
        "forceAddress": True,
        "ipMasq": env.get("FLANNEL_IPMASQ") != "true",
        "mtu": int(env["FLANNEL_MTU"]),
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(ipaddress.ip_interface(env["FLANNEL_SUBNET"]).network)}]],
            "routes": [{"dst": env["FLANNEL_NETWORK"]}],
            "dataDir": str(data_dir),
        },
    }


def netconf(
    plugin: dict[str, Any], version: str = "1.0.0", name: str = NETWORK_NAME
) -> dict[str, Any]:
    """A single plugin's network config, as a runtime feeds it on stdin."""
    return {"cniVersion": version, "name": name, **copy.deepcopy(plugin)}


def k3s_conflist(first: dict[str, Any] | None = None) -> dict[str, Any]:
    """k3s's chain (weft, portmap, bandwidth) as shipped, ``first`` in weft's place if given."""
    conf: dict[str, Any] = json.loads(_k3s_conflist_text())
    if first is not None:
        conf["plugins"][0] = copy.deepcopy(first)
    return conf


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def expect_ok(out: Outcome) -> Any:
    """A successful exec: its JSON answer (None for an empty one, e.g. DEL's)."""
    assert out.rc == 0, f"rc={out.rc} stdout={out.stdout} stderr={out.stderr[-2000:]}"
    return out.json if out.stdout.strip() else None


def expect_error(out: Outcome, code: int) -> dict[str, Any]:
    """A failed exec answering CNI error ``code`` as JSON, never a traceback."""
    assert out.rc != 0, out.stdout
    e = json.loads(out.stdout)
    assert e["code"] == code, e
    assert isinstance(e["msg"], str) and e["msg"]
    assert "Traceback" not in out.stdout
    return dict(e)


@dataclass
class Node:
    """A sandbox node: a netns in which the plugin runs as the host, plus its files."""

    ns: Netns
    tmp: Path
    subnet_x: int = 0
    plugin: str = PLUGIN
    pods: list[Netns] = field(default_factory=list)
    nat_before: list[str] | None = None  # nat_table when set up, for nat_left

    @property
    def subnet_file(self) -> Path:
        return self.tmp / "subnet.env"

    @property
    def data_dir(self) -> Path:
        return self.tmp / "networks"

    def store_dir(self, network: str = NETWORK_NAME) -> Path:
        return self.data_dir / network

    def reservations(self, network: str = NETWORK_NAME) -> dict[str, bytes]:
        return store_reservations(self.store_dir(network))

    def records(self, network: str = NETWORK_NAME) -> dict[str, dict[str, Any]]:
        return store_records(self.store_dir(network))

    def write_subnet(self, text: str | None = None) -> None:
        """The subnet file: ``text``, or k3s's for this node (10.42.<subnet_x>.1/24)."""
        self.subnet_file.write_text(
            text if text is not None else subnet_env(f"10.42.{self.subnet_x}.1/24")
        )

    def conf(self, version: str = "1.0.0", **delegate: Any) -> dict[str, Any]:
        """The k3s flannel-shape config weft receives as the first plugin of cbr0."""
        return netconf(weft_plugin(self.subnet_file, self.data_dir, **delegate), version)

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
        timeout: float = 120,
    ) -> Outcome:
        e = cni_env(command, cid, netns, ifname)
        e.update(env or {})
        for k in drop:
            e.pop(k, None)
        data = conf if isinstance(conf, str | bytes) else json.dumps(conf)
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns.name, self.plugin],
            input=data.encode() if isinstance(data, str) else data,
            capture_output=True,
            env=e,
            timeout=timeout,
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

    def person(self, *args: str) -> Outcome:
        """The binary as a person runs it on the node: no CNI_* variables at all; the config
        from ``<tmp>/net.d`` (or ``--conf``), a helper socket nobody listens on."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "WEFT_CONF_DIRS": str(self.tmp / "net.d"),
            "WEFT_SOCKET": str(self.tmp / "weft.sock"),
        }
        if os.environ.get("WEFT_PYTHON"):
            env["WEFT_PYTHON"] = os.environ["WEFT_PYTHON"]
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns.name, self.plugin, *args],
            capture_output=True,
            env=env,
            timeout=120,
        )
        return Outcome(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    def weft_files(self, network: str = NETWORK_NAME) -> list[str]:
        return store_weft_files(self.store_dir(network))

    def veths(self) -> list[str]:
        return [
            n
            for n, link in self.ns.links().items()
            if link.get("linkinfo", {}).get("info_kind") == "veth"
        ]


@contextmanager
def sandbox_node(tmp: Path) -> Iterator[Node]:
    """A sandbox node (its netns, k3s's subnet file in ``tmp``, the nat tables as set up);
    its pods and netns deleted afterwards."""
    ns = new_netns("wt")
    n = Node(ns, tmp, nat_before=nat_table(ns))
    n.write_subnet()
    try:
        yield n
    finally:
        for p in n.pods:
            delete_netns(p)
        delete_netns(ns)


# ---- oracles over a sandbox node: what is left of an attachment ---------------------------------
def node_veths(node: Node) -> set[str]:
    return set(node.veths())


def pod_links(pod: Netns) -> set[str]:
    """Interface names in a pod netns other than lo ({} when the netns is gone)."""
    if not os.path.exists(pod.path):
        return set()
    return {n for n in pod.links() if n != "lo"}


def pod_addr(pod: Netns, dev: str = "eth0") -> list[str]:
    return [a.split("/")[0] for a in pod.addrs(dev)]


_COUNTERS = re.compile(r"\[\d+:\d+\]$")


def nat_table(ns: Netns) -> list[str]:
    """The whole nat table of ``ns``, IPv4 (``iptables-save``) and IPv6 (``ip6tables-save``):
    every chain and rule, each line prefixed with its family, without the save's timestamp
    comments and with chain counters zeroed, so two snapshots differ only by rules and
    chains. Whoever wrote a rule and whatever it is called, a diff of two snapshots shows it."""
    out: list[str] = []
    for family, tool in (("ipv4", "iptables-save"), ("ipv6", "ip6tables-save")):
        for line in ns.run(tool, "-t", "nat").stdout.splitlines():
            if line and not line.startswith("#"):
                out.append(f"{family} {_COUNTERS.sub('[0:0]', line)}")
    return out


def nat_diff(before: list[str], after: list[str]) -> list[str]:
    """What differs between two ``nat_table`` snapshots: '- line' gone, '+ line' new."""
    return [f"- {ln}" for ln in before if ln not in after] + [
        f"+ {ln}" for ln in after if ln not in before
    ]


def nat_left(node: Node) -> list[str]:
    """How the node's nat table differs from when the node was set up ([] = nothing left)."""
    assert node.nat_before is not None, "the node's fixture takes the nat table's first snapshot"
    return nat_diff(node.nat_before, nat_table(node.ns))


def masq_chain_of(cid: str, network: str = NETWORK_NAME) -> str:
    """The reference bridge plugin's masquerade chain of a container (libcni's
    FormatChainName: CNI- and sha512 of network name + container id, 28 characters)."""
    return ("CNI-" + hashlib.sha512(f"{network}{cid}".encode()).hexdigest())[:28]


def nat_mentions(node: Node, cid: str) -> list[str]:
    """Lines of the node's nat table (both families) that belong to ``cid``: its chain, or
    a rule whose comment names it."""
    chain = masq_chain_of(cid)
    return [ln for ln in nat_table(node.ns) if f'id: \\"{cid}\\"' in ln or chain in ln]


def records(node: Node, network: str = NETWORK_NAME) -> dict[str, dict[str, Any]]:
    return node.records(network)


def owners(node: Node, network: str = NETWORK_NAME) -> dict[str, str]:
    """Reservation file name -> owner (content, bytes decoded)."""
    return {k: v.decode("latin-1") for k, v in node.reservations(network).items()}


def reserved_by(node: Node, cid: str, ifname: str = "eth0") -> list[str]:
    want = f"{cid}\r\n{ifname}"
    return [ip for ip, who in owners(node).items() if who.strip() in (want, cid)]


def records_for(node: Node, cid: str) -> list[dict[str, Any]]:
    return [r for r in node.records().values() if r.get("containerID") == cid]


def tree(root: Path) -> dict[str, str]:
    """relative path -> 'dir' | 'link:<target>' | sha256 of the content, for a whole tree."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath, d)
            out[str(p.relative_to(root))] = "link:" + os.readlink(p) if p.is_symlink() else "dir"
        for f in filenames:
            p = Path(dirpath, f)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            else:
                try:
                    out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
                except OSError as e:
                    out[rel] = f"unreadable:{e.errno}"
    return out


# The machine's own CNI paths: no test may create or change anything there (every tier
# works in its own temp dirs and namespaces). A session fixture compares them before/after.
MACHINE_PATHS = ("/etc/cni", "/opt/cni", "/var/lib/cni", "/run/flannel")


def machine_paths_snapshot() -> dict[str, tuple[int, int] | None]:
    """(inode, mtime_ns) of each machine path and everything below it; None where absent."""
    out: dict[str, tuple[int, int] | None] = {}
    for top in MACHINE_PATHS:
        if not os.path.lexists(top):
            out[top] = None
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                try:
                    st = os.lstat(name)
                except FileNotFoundError:
                    continue
                out[name] = (st.st_ino, st.st_mtime_ns)
    return out


def guard_machine_paths() -> Iterator[None]:
    """A session fixture's body: fail the session if anything below MACHINE_PATHS changed."""
    before = machine_paths_snapshot()
    yield
    after = machine_paths_snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the test session changed the machine's own paths: {changed[:20]}"
