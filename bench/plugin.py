"""Driving a CNI plugin the way libcni does: direct exec, CNI_* env, network config on stdin.

Each exec is reaped with ``os.wait4`` so that its rusage (user+sys CPU and ``ru_maxrss``,
including any child the plugin itself waited for, e.g. bridge -> host-local) is captured.
"""

from __future__ import annotations

import ipaddress
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.netns import netconf, reference_plugin, subnet_env, weft_plugin

Style = Literal["flannel", "bridge"]
REFERENCE_DIR = "/usr/lib/cni"
NETWORK_NAME = "cbr0"
CNI_VERSION = "1.0.0"

# Children still running; killed by kill_live() if the bench is torn down mid-flight.
LIVE: set[subprocess.Popen[bytes]] = set()

LAUNCHER_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wbexec.c")
# Path of the compiled wbexec launcher, or None for direct exec from this process (then
# ru_maxrss has this process's RSS as a floor, see wbexec.c).
_launcher: str | None = None


def setup_launcher(build_dir: str, mode: str = "auto") -> str | None:
    """Compile bench/wbexec.c into ``build_dir`` (mode auto|launcher|direct); return its path.

    ``auto`` falls back to direct exec when no C compiler is available.
    """
    global _launcher
    _launcher = None
    if mode == "direct":
        return None
    cc = shutil.which("cc") or shutil.which("gcc")
    out = os.path.join(build_dir, "wbexec")
    if cc:
        proc = subprocess.run(
            [cc, "-O2", "-Wall", "-o", out, LAUNCHER_SRC], capture_output=True, text=True
        )
        if proc.returncode == 0:
            _launcher = out
            return out
        if mode == "launcher":
            raise RuntimeError(f"cannot build {LAUNCHER_SRC}: {proc.stderr.strip()}")
    elif mode == "launcher":
        raise RuntimeError("no C compiler (cc/gcc) to build the wbexec launcher")
    return None


@dataclass(frozen=True)
class Subnet:
    """The flannel subnet file's content."""

    network: ipaddress.IPv4Network
    subnet: ipaddress.IPv4Interface
    mtu: int
    ipmasq: bool

    def render(self) -> str:
        return subnet_env(str(self.subnet), str(self.network), self.mtu, self.ipmasq)

    @property
    def capacity(self) -> int:
        """host-local addresses in the subnet: all hosts minus the gateway (.1)."""
        return self.subnet.network.num_addresses - 3


@dataclass
class Plugin:
    """One plugin under test: its executable and the config shape it is driven with."""

    label: str
    path: str
    style: Style
    data_dir: str
    subnet_file: str
    subnet: Subnet
    cni_path: str = REFERENCE_DIR
    env: dict[str, str] = field(default_factory=dict)  # e.g. WEFT_SOCKET: helper or not

    def config(self) -> dict[str, Any]:
        if self.style == "flannel":
            return netconf(weft_plugin(self.subnet_file, self.data_dir), CNI_VERSION)
        return netconf(reference_plugin(self.subnet.render(), self.data_dir), CNI_VERSION)

    @property
    def store(self) -> str:
        return os.path.join(self.data_dir, NETWORK_NAME)

    def reservations(self) -> list[str]:
        """IP files in the host-local store (not ``last_reserved_ip.*`` / ``lock``)."""
        try:
            names = os.listdir(self.store)
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            try:
                ipaddress.ip_address(n)
            except ValueError:
                continue
            out.append(n)
        return out

    def store_leftovers(self) -> list[str]:
        """Every file under the store but ``lock`` and ``last_reserved_ip.*`` (recursive):
        reservations and any per-attachment record (weft's ``.weft/*.json``) a DEL must remove.
        """
        left: list[str] = []
        for root, _dirs, files in os.walk(self.store):
            for n in files:
                if root == self.store and (n == "lock" or n.startswith("last_reserved_ip")):
                    continue
                left.append(os.path.relpath(os.path.join(root, n), self.store))
        return left


@dataclass
class Exec:
    """One plugin exec: exit status, output and the child's rusage."""

    command: str
    container_id: str
    rc: int
    stdout: bytes
    stderr: bytes
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    _parsed: Any = field(default=None, repr=False)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def json(self) -> Any:
        if self._parsed is None and self.stdout.strip():
            try:
                self._parsed = json.loads(self.stdout)
            except ValueError:
                self._parsed = {}
        return self._parsed

    def ipv4(self) -> list[str]:
        """IPv4 addresses (CIDR) of an ADD result."""
        res = self.json()
        if not isinstance(res, dict):
            return []
        return [
            str(ip["address"])
            for ip in res.get("ips", [])
            if isinstance(ip, dict) and ":" not in str(ip.get("address", ""))
        ]

    def describe(self) -> str:
        out = self.stdout.decode(errors="replace").strip()
        err = self.stderr.decode(errors="replace").strip()
        return f"{self.command} {self.container_id}: rc={self.rc} stdout={out!r} stderr={err!r}"


@dataclass
class Pending:
    proc: subprocess.Popen[bytes]
    command: str
    container_id: str
    t0: float
    report_fd: int | None = None  # read end of the wbexec report pipe


def spawn(
    plugin: Plugin,
    command: str,
    container_id: str,
    netns_path: str,
    conf: dict[str, Any],
    ifname: str = "eth0",
) -> Pending:
    """Exec the plugin for one CNI command; stdin is written and closed before returning."""
    env = dict(os.environ)
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=container_id,
        CNI_NETNS=netns_path,
        CNI_IFNAME=ifname,
        CNI_PATH=plugin.cni_path,
        CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={container_id}",
    )
    env.update(plugin.env)
    data = json.dumps(conf).encode()
    argv = [plugin.path]
    rfd: int | None = None
    wfd: int | None = None
    if _launcher is not None:
        rfd, wfd = os.pipe()
        argv = [_launcher, str(wfd), plugin.path]
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            pass_fds=(wfd,) if wfd is not None else (),
            process_group=0,  # so that kill_live() also reaches the plugin under wbexec
        )
    except BaseException:
        if rfd is not None:
            os.close(rfd)
        raise
    finally:
        if wfd is not None:
            os.close(wfd)
    LIVE.add(proc)
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)  # a config is far below the pipe buffer: never blocks
        proc.stdin.close()
    except BrokenPipeError:
        pass
    return Pending(proc, command, container_id, t0, rfd)


def finish(p: Pending) -> Exec:
    """Drain the child's stdout/stderr to EOF, then reap it with wait4 for its rusage."""
    proc = p.proc
    assert proc.stdout is not None and proc.stderr is not None
    bufs: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        while sel.get_map():
            for key, _ in sel.select():
                fd = key.fd
                chunk = os.read(fd, 65536)
                if chunk:
                    bufs[fd].append(chunk)
                else:
                    sel.unregister(key.fileobj)
    out = b"".join(bufs[proc.stdout.fileno()])
    err = b"".join(bufs[proc.stderr.fileno()])
    proc.stdout.close()
    proc.stderr.close()
    _, status, ru = os.wait4(proc.pid, 0)
    t1 = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    LIVE.discard(proc)
    result = Exec(
        command=p.command,
        container_id=p.container_id,
        rc=proc.returncode,
        stdout=out,
        stderr=err,
        wall_s=t1 - p.t0,
        user_s=ru.ru_utime,
        sys_s=ru.ru_stime,
        maxrss_kib=ru.ru_maxrss,
    )
    if p.report_fd is not None:
        try:
            line = os.read(p.report_fd, 256).decode().split()
        finally:
            os.close(p.report_fd)
        if len(line) != 5 or proc.returncode != 0:
            raise RuntimeError(
                f"wbexec gave no report (rc={proc.returncode}): {err.decode(errors='replace')}"
            )
        st, wall_ns, user_us, sys_us, rss = (int(x) for x in line)
        result.rc = os.waitstatus_to_exitcode(st)
        result.wall_s = wall_ns / 1e9
        result.user_s = user_us / 1e6
        result.sys_s = sys_us / 1e6
        result.maxrss_kib = rss
    return result


def exec_mode() -> str:
    return "wbexec launcher" if _launcher is not None else "direct (ru_maxrss floored)"


def run(
    plugin: Plugin,
    command: str,
    container_id: str,
    netns_path: str,
    conf: dict[str, Any],
    ifname: str = "eth0",
) -> Exec:
    return finish(spawn(plugin, command, container_id, netns_path, conf, ifname))


def with_prev(conf: dict[str, Any], add: Exec) -> dict[str, Any]:
    """The config as a runtime sends it for CHECK/DEL: ``prevResult`` = the ADD result."""
    out = dict(conf)
    res = add.json()
    if isinstance(res, dict) and res:
        out["prevResult"] = res
    return out


def version_of(path: str) -> str:
    """The plugin's answer to CNI_COMMAND=VERSION (for the machine-info block)."""
    try:
        proc = subprocess.run(
            [path],
            input=b'{"cniVersion":"1.0.0"}',
            capture_output=True,
            env={**os.environ, "CNI_COMMAND": "VERSION"},
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    return proc.stdout.decode(errors="replace").strip() or proc.stderr.decode(errors="replace")


def kill_live() -> None:
    for proc in list(LIVE):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        LIVE.discard(proc)
