"""Sandbox harness for the CNI conformance suite.

Everything happens inside throwaway network namespaces whose names start with ``wc-``: a
"node" netns per test, in which the plugins run as if on the host (``ip netns exec <node>``),
and pod netns. The namespaces, the subnet file, the ``ip -j`` oracle and the store listing are
the test sandbox library's (tests/netns.py); the runner is the suite's own, since it drives
any plugin through libcni. Files (conflists, subnet file, IPAM store,
libcni cache) live in a per-test temp directory. Kernel state is read back with ``ip -j``,
``tc -j``, ``iptables-save`` run inside the netns: an oracle independent of the plugin.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import schema
from tests import netns as sandbox

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver" / "bin" / "cnidriver"
REFERENCE_DIR = Path("/usr/lib/cni")
# Reference plugins the chains may need next to the plugin under test.
COMPANIONS = ("bridge", "host-local", "portmap", "bandwidth", "loopback")
NETNS_PREFIX = "wc"
# Spec versions the suite knows about (negotiation is exercised for each of them).
KNOWN_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# Highest spec version libcni 1.1.2 (the driver) can parse results for; above: direct exec.
LIBCNI_MAX = "1.0.0"
NETWORK = "10.42.0.0/16"
MTU = 1450
CMD_TIMEOUT = 60.0
PYTHON = sys.executable

_counter = itertools.count(1)

Json = dict[str, Any]

# How many objects of each kind were checked against conformance/schema.py in this run.
validated: dict[str, int] = {}


def _count(kind: str) -> None:
    validated[kind] = validated.get(kind, 0) + 1


def _stdout_json(proc_stdout: str, what: str) -> Any:
    try:
        return json.loads(proc_stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{what}: output is not JSON: {proc_stdout!r}") from exc


def check_plugin_output(command: str | None, requested: str | None, res: PluginResult) -> None:
    """Everything a plugin prints, checked against the spec's shapes as it is received: an ADD
    result in the requested version, VERSION's answer, an error object on failure."""
    if res.ok:
        if command == "ADD":
            data = _stdout_json(res.stdout, "ADD")
            version = requested if requested in schema.RESULT_MODELS else data.get("cniVersion")
            schema.validate_result(data, str(version))
            _count("result")
        elif command == "VERSION":
            schema.validate_version_info(_stdout_json(res.stdout, "VERSION"))
            _count("version")
    elif res.stdout.strip():  # an empty stdout on failure is judged by PluginResult.error()
        schema.validate_error(_stdout_json(res.stdout, f"{command} error"))
        _count("error")


def check_driver_output(command: str, list_version: str | None, res: PluginResult) -> None:
    """What the libcni driver prints: libcni's re-encoded result (in the list's version), its
    version info, or its failure line (a plugin's error as libcni returned it)."""
    if res.ok:
        if command == "add":
            assert list_version is not None
            schema.validate_result(_stdout_json(res.stdout, "libcni ADD"), list_version)
            _count("result")
        elif command == "version":
            schema.validate_driver_version(_stdout_json(res.stdout, "libcni version"))
            _count("version")
    else:
        schema.validate_driver_failure(_stdout_json(res.stdout, f"libcni {command} failure"))
        _count("error")


def vtuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def sh(
    argv: Sequence[str],
    *,
    input_: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = CMD_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise with full output on unexpected failure."""
    proc = subprocess.run(
        list(argv),
        input=input_,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(argv)}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def ip_json(netns: str, *args: str) -> Any:
    """``ip -j -d -n <netns> ...`` parsed (the oracle)."""
    return sandbox.ip_json(netns, "-d", *args)


def unique_name(role: str) -> str:
    return f"{NETNS_PREFIX}-{os.getpid()}-{next(_counter)}-{role}"


@dataclass
class PluginResult:
    """Outcome of one plugin/driver invocation."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> Json:
        """The CNI error object printed on stdout of a failed call (asserted well-formed)."""
        assert self.returncode != 0, f"expected failure, got success: {self.stdout}"
        try:
            err = json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(
                f"error output is not JSON: {self.stdout!r} (stderr {self.stderr!r})"
            ) from exc
        assert isinstance(err, dict), err
        assert isinstance(err.get("code"), int), f"error without integer code: {err}"
        assert isinstance(err.get("msg"), str) and err["msg"], f"error without msg: {err}"
        if "details" in err:
            assert isinstance(err["details"], str), err
        return err

    def __str__(self) -> str:
        return f"rc={self.returncode} stdout={self.stdout!r} stderr={self.stderr!r}"


@dataclass
class Pod:
    netns: str
    container_id: str
    ifname: str = "eth0"

    @property
    def path(self) -> str:
        return f"{sandbox.NETNS_DIR}/{self.netns}"


@dataclass
class Sandbox:
    """One node netns + temp files + pods; torn down by ``close``."""

    plugin: Path
    template: Json
    workdir: Path
    subnet_index: int
    node: str = ""
    cni_path: Path = field(init=False)
    data_dir: Path = field(init=False)
    cache_dir: Path = field(init=False)
    subnet_file: Path = field(init=False)
    pods: list[Pod] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cni_path = self.workdir / "bin"
        self.data_dir = self.workdir / "store"
        self.cache_dir = self.workdir / "cache"
        self.subnet_file = self.workdir / "subnet.env"
        for d in (self.cni_path, self.data_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.subnet_file.write_text(sandbox.subnet_env(f"{self.gateway}/24", NETWORK, MTU))
        # The plugin under test under the name of its type, the reference companions beside it.
        (self.cni_path / self.plugin_type).symlink_to(self.plugin)
        for name in COMPANIONS:
            target = self.cni_path / name
            if not target.exists() and (REFERENCE_DIR / name).exists():
                target.symlink_to(REFERENCE_DIR / name)
        self.node = unique_name("node")
        try:
            sandbox.create_netns(self.node)
        except BaseException:
            self.close()
            raise

    # ---- configuration -------------------------------------------------------------------

    @property
    def plugin_type(self) -> str:
        return str(self.template["plugins"][0]["type"])

    @property
    def pod_subnet(self) -> str:
        return f"10.42.{self.subnet_index}.0/24"

    @property
    def gateway(self) -> str:
        return f"10.42.{self.subnet_index}.1"

    @property
    def network_name(self) -> str:
        return str(self.template["name"])

    def _fill(self, value: Any) -> Any:
        if isinstance(value, str):
            subst = {
                "@SUBNET_FILE@": str(self.subnet_file),
                "@DATA_DIR@": str(self.data_dir),
                "@POD_SUBNET@": self.pod_subnet,
                "@POD_NETWORK@": NETWORK,
            }
            for key, repl in subst.items():
                value = value.replace(key, repl)
            if value == "@MTU@":
                return MTU
            return value
        if isinstance(value, list):
            return [self._fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self._fill(v) for k, v in value.items()}
        return value

    def conflist(self, version: str | None = None, *, first_only: bool = False) -> Json:
        conf: Json = self._fill(copy.deepcopy(self.template))
        if version is not None:
            conf["cniVersion"] = version
        if first_only:
            conf["plugins"] = conf["plugins"][:1]
        return conf

    def plugin_conf(self, version: str | None = None) -> Json:
        """The first plugin's standalone network config (what a runtime feeds on stdin)."""
        conf = self.conflist(version)
        single: Json = dict(conf["plugins"][0])
        single["name"] = conf["name"]
        single["cniVersion"] = conf["cniVersion"]
        return single

    def write_conflist(self, conf: Json) -> Path:
        path = self.workdir / f"net-{next(_counter)}.conflist"
        path.write_text(json.dumps(conf, indent=1))
        return path

    # ---- pods ----------------------------------------------------------------------------

    def new_pod(self, *, create_netns: bool = True) -> Pod:
        name = unique_name("pod")
        pod = Pod(netns=name, container_id=f"wc{os.getpid()}c{next(_counter):04d}" + "0" * 40)
        if create_netns:
            sandbox.create_netns(name, lo_up=False)
        self.pods.append(pod)
        return pod

    def delete_netns(self, pod: Pod) -> None:
        if sandbox.netns_exists(pod.netns):
            sandbox.delete_netns(pod.netns, check=True)

    # ---- invocations ---------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_PATH": str(self.cni_path),
            "CNI_CACHE_DIR": str(self.cache_dir),
        }

    def driver(
        self,
        command: str,
        *args: str,
        pod: Pod | None = None,
        cap_args: Json | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> PluginResult:
        """Run ``cnidriver <command> <args...>`` (libcni) inside the node netns."""
        env = self.base_env()
        if pod is not None:
            env["CNI_CONTAINERID"] = pod.container_id
            env["CNI_IFNAME"] = pod.ifname
        if cap_args is not None:
            env["CAP_ARGS"] = json.dumps(cap_args)
        env.update(extra_env or {})
        proc = sh(
            ["ip", "netns", "exec", self.node, str(DRIVER), command, *args], env=env, check=False
        )
        res = PluginResult(proc.returncode, proc.stdout, proc.stderr)
        list_version = None
        if command in ("add", "check", "del", "gc", "status") and args:
            list_version = str(json.loads(Path(args[0]).read_text()).get("cniVersion"))
        check_driver_output(command, list_version, res)
        return res

    def lib(
        self,
        command: str,
        pod: Pod,
        conf: Json | None = None,
        *,
        cap_args: Json | None = None,
        netns_path: str | None = None,
    ) -> PluginResult:
        """add/check/del of ``pod`` through libcni with the (default: full chain) conflist."""
        path = self.write_conflist(conf if conf is not None else self.conflist())
        return self.driver(
            command,
            str(path),
            pod.path if netns_path is None else netns_path,
            pod=pod,
            cap_args=cap_args,
        )

    def direct(
        self,
        stdin: str | Json,
        env: Mapping[str, str | None],
        *,
        plugin: Path | None = None,
    ) -> PluginResult:
        """Exec the plugin binary directly (no libcni) in the node netns.

        ``env`` entries with value None are left out (to test missing variables).
        """
        full: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_PATH": str(self.cni_path),
        }
        for k, v in env.items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = v
        data = stdin if isinstance(stdin, str) else json.dumps(stdin)
        exe = plugin if plugin is not None else self.cni_path / self.plugin_type
        proc = sh(["ip", "netns", "exec", self.node, str(exe)], input_=data, env=full, check=False)
        res = PluginResult(proc.returncode, proc.stdout, proc.stderr)
        requested = stdin.get("cniVersion") if isinstance(stdin, dict) else None
        check_plugin_output(full.get("CNI_COMMAND"), requested, res)
        return res

    def direct_env(self, command: str, pod: Pod | None) -> dict[str, str | None]:
        env: dict[str, str | None] = {"CNI_COMMAND": command}
        if pod is not None:
            env.update(CNI_CONTAINERID=pod.container_id, CNI_NETNS=pod.path, CNI_IFNAME=pod.ifname)
        return env

    def add(
        self,
        pod: Pod,
        version: str | None = None,
        *,
        first_only: bool = False,
        cap_args: Json | None = None,
    ) -> Json:
        """ADD that must succeed; via libcni up to 1.0.0, direct exec above."""
        conf = self.conflist(version, first_only=first_only)
        if vtuple(conf["cniVersion"]) > vtuple(LIBCNI_MAX):
            assert first_only, "chains above libcni's max version are not drivable"
            res = self.direct(self.plugin_conf(version), self.direct_env("ADD", pod))
        else:
            res = self.lib("add", pod, conf, cap_args=cap_args)
        assert res.ok, f"ADD failed: {res}"
        result: Json = res.json()
        return result

    # ---- oracle helpers ------------------------------------------------------------------

    def pod_addrs(self, pod: Pod) -> list[str]:
        links = ip_json(pod.netns, "addr", "show", "dev", pod.ifname)
        return [
            f"{a['local']}/{a['prefixlen']}"
            for link in links
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        ]

    def node_links(self) -> list[Json]:
        links: list[Json] = ip_json(self.node, "link", "show")
        return links

    def bridge_ports(self) -> list[Json]:
        return [
            link
            for link in self.node_links()
            if link.get("linkinfo", {}).get("info_slave_kind") == "bridge"
        ]

    def veths(self) -> list[Json]:
        return [
            link
            for link in self.node_links()
            if link.get("linkinfo", {}).get("info_kind") == "veth"
        ]

    def reservations(self) -> dict[str, str]:
        """host-local store: ip -> file content, for this network."""
        held = sandbox.store_reservations(self.data_dir / self.network_name)
        return {ip: who.decode() for ip, who in held.items()}

    def reservations_of(self, pod: Pod) -> list[str]:
        return [
            ip
            for ip, content in self.reservations().items()
            if content.split("\r\n")[0].strip() == pod.container_id
        ]

    def run_in(
        self, netns: str, argv: Sequence[str], timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        return sh(["ip", "netns", "exec", netns, *argv], check=False, timeout=timeout)

    def ping(self, netns: str, dst: str) -> bool:
        # A few tries: the bridge port may still be in learning/forwarding transition.
        for _ in range(5):
            if self.run_in(netns, ["ping", "-c", "1", "-W", "1", dst]).returncode == 0:
                return True
            time.sleep(0.5)
        return False

    @contextmanager
    def tcp_listener(self, netns: str, port: int, token: str) -> Iterator[None]:
        """A one-shot TCP server in ``netns`` that sends ``token`` (bounded lifetime)."""
        code = (
            "import socket,sys\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {port})); s.listen(1); s.settimeout(20)\n"
            "print('ready', flush=True)\n"
            "c,_=s.accept(); c.sendall(sys.argv[1].encode()); c.close()\n"
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, PYTHON, "-c", code, token],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == b"ready", f"listener failed: {line!r}"
        try:
            yield
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)

    def tcp_fetch(self, netns: str, host: str, port: int) -> str:
        code = (
            "import socket,sys\n"
            "c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
            "c.settimeout(5); print(c.recv(100).decode())\n"
        )
        res = self.run_in(netns, [PYTHON, "-c", code, host, str(port)])
        assert res.returncode == 0, f"connect {host}:{port} failed: {res.stderr}"
        return res.stdout.strip()

    # ---- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for pod in self.pods:
            if sandbox.netns_exists(pod.netns):
                sandbox.delete_netns(pod.netns)
        if self.node and sandbox.netns_exists(self.node):
            sandbox.delete_netns(self.node)


def version_info(plugin: Path) -> Json:
    """VERSION by direct exec (no netns needed: VERSION touches nothing)."""
    proc = sh(
        [str(plugin)],
        input_="{}",
        env={"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "")},
    )
    check_plugin_output("VERSION", None, PluginResult(proc.returncode, proc.stdout, proc.stderr))
    info: Json = json.loads(proc.stdout)
    return info


def build_driver() -> None:
    """Build the libcni driver if missing or older than its source."""
    src = HERE / "driver" / "main.go"
    if DRIVER.exists() and DRIVER.stat().st_mtime >= src.stat().st_mtime:
        return
    sh([str(HERE / "driver" / "build.sh")], timeout=300)
