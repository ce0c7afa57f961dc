"""A private containerd inside a throwaway "node": netns + private mount namespace.

Layout (everything below one temp dir ``base``):

* ``Node``: a network namespace (the sandbox library's, tests/netns.py) plus a *holder* process
  (``sleep infinity``) living in that netns and in its own private mount namespace.
  In that mount namespace ``/etc``, ``/opt``, ``/var/lib`` and ``/run`` are overlayfs
  mounts whose upper dirs live on a tmpfs that only the holder can see, and ``/sys``
  is a sysfs of the node netns (the cgroup hierarchy is moved back under it). So
  ``/etc/cni/net.d``, ``/opt/cni/bin``, ``/var/lib/cni`` (libcni's result cache) and
  ``/run/containerd`` (shim sockets, IO FIFOs) exist only in there; the machine's own
  paths are never written. Every process we run "on the node" (containerd, ctr, and
  thus the CNI plugins that ctr execs) is entered with ``nsenter -t <holder> -m -n``.
  When the last process in it exits, the mount namespace and all its mounts go away.
* ``PrivateContainerd``: containerd with its own root/state/grpc socket/config under
  ``base``, its log in ``base/containerd.log``; a ``ctr`` helper bound to its socket and
  to a private containerd namespace name. By default the CRI plugin is disabled; with a
  ``CriSettings`` it is enabled (namespace ``k8s.io``) with its own CNI ``conf_dir`` and
  ``bin_dir``, a local sandbox image and ``restrict_oom_score_adj`` (root here lacks
  CAP_SYS_RESOURCE; runc fails with "can't get final child's PID" otherwise).

Cleanup is explicit (``close()``), idempotent and tolerant of half-started states, so
that fixtures can call it from finalizers also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns import NETNS_DIR, create_netns, delete_netns, ip_json, netns_exists, sh

CTR = "ctr"
CONTAINERD = "containerd"

# Mount-namespace setup run by the holder. $1 = scratch dir (tmpfs mount point),
# $2 = ready-file path. Directories that the machine lacks (/etc/cni, /opt/cni,
# /var/lib/cni, /run/containerd) are created in the overlays' upper dirs only.
_HOLDER_SCRIPT = r"""
set -eu
scratch=$1
ready=$2
mount -t tmpfs -o mode=0700 wd-scratch "$scratch"
for d in etc opt var/lib run; do
    n=$(echo "$d" | tr / _)
    mkdir -p "$scratch/$n/upper" "$scratch/$n/work"
    mount -t overlay "wd-$n" \
        -o "lowerdir=/$d,upperdir=$scratch/$n/upper,workdir=$scratch/$n/work" "/$d"
done
# A sysfs that shows the node netns, as on a real node; keep the cgroup tree under it.
mkdir -p "$scratch/cgroup"
mount --rbind /sys/fs/cgroup "$scratch/cgroup"
mount -t sysfs wd-sysfs /sys
mount --move "$scratch/cgroup" /sys/fs/cgroup
mkdir -p /etc/cni/net.d /opt/cni/bin /var/lib/cni
echo ready > "$ready"
exec sleep infinity
"""


def _kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _stop_popen(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


@dataclass
class Node:
    """A sandbox node: netns ``name`` + holder process owning a private mount namespace."""

    name: str
    base: Path
    holder: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        create_netns(self.name)
        scratch = self.base / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        ready = self.base / "holder.ready"
        log = (self.base / "holder.log").open("wb")
        self.holder = subprocess.Popen(
            [
                "nsenter",
                f"--net={NETNS_DIR}/{self.name}",
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                _HOLDER_SCRIPT,
                "wd-holder",
                str(scratch),
                str(ready),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.holder.poll() is not None or time.monotonic() > deadline:
                text = (self.base / "holder.log").read_text(errors="replace")
                raise RuntimeError(f"node holder failed to start: {text}")
            time.sleep(0.05)

    @property
    def holder_pid(self) -> int:
        assert self.holder is not None, "node not started"
        return self.holder.pid

    def enter(self, argv: Sequence[str]) -> list[str]:
        """argv prefixed so that it runs in the node's netns and private mount namespace."""
        return ["nsenter", "-t", str(self.holder_pid), "-m", "-n", *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return sh(*self.enter(argv), check=check, timeout=timeout)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file at ``path`` as seen inside the node's mount namespace."""
        proc = subprocess.run(
            self.enter(["sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "w", path, oct(mode)[2:]]),
            input=data,
            capture_output=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"writing {path} in node failed: {proc.stderr!r}")

    def ip_json(self, *args: str) -> list[dict[str, object]]:
        """``ip -j ARGS`` in the node netns (an oracle independent of any CNI plugin)."""
        result: list[dict[str, object]] = ip_json(self.name, *args)
        return result

    def close(self) -> None:
        if self.holder is not None:
            _stop_popen(self.holder, grace=5)
            self.holder = None
        if netns_exists(self.name):
            delete_netns(self.name)


@dataclass(frozen=True)
class CriSettings:
    """What the CRI plugin needs here: CNI dirs (as seen in the node's mount namespace), the
    locally imported sandbox image, and the cgroup parent the test's pods use (removed on
    close)."""

    conf_dir: str
    bin_dir: str
    sandbox_image: str
    cgroup_parent: str


CRI_NAMESPACE = "k8s.io"


@dataclass
class PrivateContainerd:
    """containerd with private root/state/socket, running on a ``Node``."""

    node: Node
    base: Path
    namespace: str
    proc: subprocess.Popen[bytes] | None = None
    task_pids: dict[str, int] = field(default_factory=dict)
    cri: CriSettings | None = None

    @property
    def address(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def log_path(self) -> Path:
        return self.base / "containerd.log"

    def config_toml(self) -> str:
        root, state = self.base / "root", self.base / "state"
        # Without CriSettings no CRI: it would run its own CNI + streaming port.
        cri_plugin = [] if self.cri else ["io.containerd.grpc.v1.cri"]
        disabled = [
            *cri_plugin,
            "io.containerd.internal.v1.opt",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
        ]
        return "\n".join(
            [
                "version = 2",
                f'root = "{root}"',
                f'state = "{state}"',
                "disabled_plugins = [" + ", ".join(f'"{p}"' for p in disabled) + "]",
                "[grpc]",
                f'  address = "{self.address}"',
                "[ttrpc]",
                f'  address = "{self.address}.ttrpc"',
                "[debug]",
                '  level = "info"',
                '[plugins."io.containerd.internal.v1.opt"]',
                f'  path = "{self.base / "opt"}"',
                *self._cri_toml(),
                "",
            ]
        )

    def _cri_toml(self) -> list[str]:
        if self.cri is None:
            return []
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        return [
            cri + "]",
            f'  sandbox_image = "{self.cri.sandbox_image}"',
            "  restrict_oom_score_adj = true",
            "  disable_apparmor = true",
            "  enable_selinux = false",
            # Streaming (exec/attach) server: loopback of the node netns, any free port.
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            cri + ".containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            cri + ".containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            cri + ".cni]",
            f'  bin_dir = "{self.cri.bin_dir}"',
            f'  conf_dir = "{self.cri.conf_dir}"',
            "  max_conf_num = 1",
        ]

    def start(self, timeout: float = 30.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        cfg = self.base / "config.toml"
        cfg.write_text(self.config_toml())
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.node.enter([CONTAINERD, "--config", str(cfg)]),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited early:\n{self.log_tail()}")
            if self.address.exists():
                probe = self.ctr("version", check=False, timeout=10)
                if probe.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd not ready in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, limit: int = 20000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no containerd log)"
        return text[-limit:]

    def ctr_argv(self, *args: str) -> list[str]:
        return self.node.enter(
            [CTR, "--address", str(self.address), "--namespace", self.namespace, *args]
        )

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return sh(*self.ctr_argv(*args), check=check, timeout=timeout)

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive), timeout=120)

    def tasks(self) -> dict[str, tuple[int, str]]:
        """container id -> (pid, status), from ``ctr task ls``."""
        out = self.ctr("tasks", "ls").stdout.splitlines()[1:]
        result: dict[str, tuple[int, str]] = {}
        for line in out:
            parts = line.split()
            if len(parts) >= 3:
                result[parts[0]] = (int(parts[1]), parts[2])
        return result

    def containers(self) -> list[str]:
        return [c for c in self.ctr("containers", "ls", "-q").stdout.split() if c]

    def exec_in(self, container: str, *argv: str, timeout: float = 30) -> str:
        """Run argv in a running container via ``ctr task exec``; return stdout."""
        exec_id = f"x{time.monotonic_ns()}"
        return self.ctr(
            "tasks", "exec", "--exec-id", exec_id, container, *argv, timeout=timeout
        ).stdout

    def close(self) -> None:
        """Remove tasks and containers, stop containerd, reap shims, drop cgroups."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                for cid, (pid, _status) in self.tasks().items():
                    self.task_pids.setdefault(cid, pid)
                    self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False, timeout=20)
                for cid in list(self.tasks()):
                    self.ctr("tasks", "delete", "-f", cid, check=False, timeout=30)
                for cid in self.containers():
                    self.ctr("containers", "delete", cid, check=False, timeout=30)
        _stop_popen(self.proc)
        self.proc = None
        # Last resort for a containerd that died: shims and container inits we started.
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            argv = _cmdline(int(pid_dir.name))
            if argv and "containerd-shim" in argv[0] and str(self.address) in argv:
                _kill_pid(int(pid_dir.name))
        for pid in self.task_pids.values():
            if "sleep" in " ".join(_cmdline(pid)):
                _kill_pid(pid)
        # runc left /sys/fs/cgroup/[<controller>/]<namespace or cgroup parent>/ behind (empty
        # by now).
        cg = Path("/sys/fs/cgroup")
        tops = [self.namespace] if self.cri is None else [self.cri.cgroup_parent.strip("/")]
        for top in [p for name in tops for p in (cg / name, *cg.glob(f"*/{name}"))]:
            if top.is_dir():
                for d in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if d.is_dir():
                        with contextlib.suppress(OSError):
                            d.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()
