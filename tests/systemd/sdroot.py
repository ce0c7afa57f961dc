"""A node that systemd runs: the cached bullseye root with systemd (packaging/release/roots.sh
systemd) booted as PID 1 of its own pid, mount and cgroup namespaces, for `make test-systemd`.

The cache never changes: the root is an overlay with a throwaway upper dir. Inside: /proc of
the new pid namespace, a read-only sysfs (systemd then starts no udev, which would act on the
machine's devices), a cgroup2 filesystem whose root is a cgroup made for this root alone (the
machine's cgroups get one directory, removed afterwards), a tmpfs /run as on any systemd node,
a minimal /dev. No directory of the machine is mounted in before systemd has booted: its
systemd-tmpfiles empties /tmp at boot, and would empty the machine's. After the boot, `share`
mounts the machine's /run/netns and the tests' node directories in at the same paths (slave
propagation: netns the sandbox adds later appear inside, nothing mounted inside leaks out).
``container=`` tells systemd it is not the machine's init. Commands reach it with
``nsenter -m -p`` + ``chroot``, as a runtime on that node would: a plugin exec'd that way
shares the helper's mount and pid namespaces.

Leaving kills the namespace's PID 1 (the kernel then kills every process in it, and its mounts
go with its mount namespace), removes the cgroups systemd made and the overlay's upper dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from tests.netns import delete_netns, new_netns

REPO = Path(__file__).resolve().parents[2]
ROOTS_SH = REPO / "packaging" / "release" / "roots.sh"

# Mounted by boot_script inside the new namespaces, then PID 1 of the pid namespace.
BOOT = r"""
set -eu
base=$1 work=$2 r=$2/root
mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/upper,workdir=$work/work" "$r"
mount -t proc proc "$r/proc"
mount -t sysfs -o ro sysfs "$r/sys"
mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
mount -t tmpfs -o mode=755 tmpfs "$r/run"
mount -t tmpfs -o mode=755 tmpfs "$r/dev"
for d in null zero full random urandom tty; do
    touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"
done
mkdir "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
# nothing here may load modules into or trigger devices of the machine's kernel
for u in modprobe@.service systemd-udevd.service systemd-udev-trigger.service \
        systemd-modules-load.service; do
    ln -sf /dev/null "$r/etc/systemd/system/$u"
done
echo ready
exec chroot "$r" env -i container=weft-test /lib/systemd/systemd --system
"""


class SystemdRoot(NamedTuple):
    path: Path  # the root, as its mount namespace sees it
    pid: int  # its PID 1 (systemd), as the machine sees it
    work: Path  # the machine's directory that holds the root's mount point and upper dir

    def share(self, host_dir: Path | str) -> None:
        """The machine's ``host_dir`` at the same path inside the root (a recursive bind in
        the root's mount namespace, gone with it)."""
        inside = f"{self.path}/{str(host_dir).lstrip('/')}"
        subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", "sh", "-c",
                        'mkdir -p "$2" && mount --rbind "$1" "$2"', "share", str(host_dir),
                        inside], check=True, capture_output=True, timeout=30)

    def node_dir(self, name: str) -> Path:
        """A new directory on the machine, seen at the same path inside the root."""
        d = self.work / "nodes" / name
        d.mkdir(parents=True)
        self.share(d)
        return d

    def host_path(self, inside: str) -> Path:
        """A path inside the root, as this process can open it."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def command(self, *argv: str) -> list[str]:
        """argv run inside the root, in its mount and pid namespaces."""
        # absolute: a wrapper may run with a PATH a test has narrowed
        nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        return [nsenter, "-t", str(self.pid), "-m", "-p", "--", chroot, str(self.path), *argv]

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), capture_output=True, text=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                              timeout=timeout)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args)

    def wrapper(self, inside: str, where: Path) -> Path:
        """A drop-in WEFT_PLUGIN on the machine: execs ``inside`` (a path in the root) there,
        with the caller's arguments, environment, stdin and stdout, as the node's runtime would."""
        script = where / "weft-in-systemd-root"
        argv = " ".join(f"'{a}'" for a in self.command(inside))
        script.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        script.chmod(0o755)
        return script


def cached_root(arch: str) -> Path:
    out = subprocess.run(["bash", str(ROOTS_SH), "systemd", arch], check=True,
                         capture_output=True, text=True)
    return Path(out.stdout.strip())


def own_cgroup2() -> Path:
    """This process's cgroup in the machine's cgroup2 hierarchy (a new one goes under it)."""
    mount = next(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                 if line.split(" - ")[1].startswith("cgroup2 "))
    rel = next(line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines()
               if line.startswith("0::"))
    return Path(mount) / rel.lstrip("/")


def remove_cgroup(cg: Path) -> None:
    for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        d.rmdir()
    cg.rmdir()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@contextlib.contextmanager
def systemd_root(arch: str = "amd64", boot_timeout: float = 120) -> Iterator[SystemdRoot]:
    base = cached_root(arch)
    # outside /tmp: tests in the root see the node dirs under it at the same path
    work = Path(tempfile.mkdtemp(prefix="weft-systemd-", dir="/var/tmp"))
    for d in ("root", "upper", "work"):
        (work / d).mkdir()
    # /run/netns a mount point of its own (ip makes it one, shared, at its first netns), so
    # that the root's bind of it receives the netns mounted there later
    delete_netns(new_netns("wsd"))
    cg = own_cgroup2() / work.name
    cg.mkdir()
    holder: subprocess.Popen[bytes] | None = None
    try:
        holder = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cg),
             "unshare", "--cgroup", "--pid", "--fork", "--mount", "--propagation", "slave", "--",
             "sh", "-c", BOOT, "boot", str(base), str(work)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        assert holder.stdout is not None and holder.stderr is not None
        if holder.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"systemd root mounts failed: {holder.stderr.read().decode()}")
        end = time.monotonic() + 10
        while not (kids := children(holder.pid)) and time.monotonic() < end:
            time.sleep(0.05)
        root = SystemdRoot(work / "root", kids[0], work)
        end = time.monotonic() + boot_timeout
        while True:  # "offline" until systemd listens; --wait then waits for the boot's end
            state = root.run("systemctl", "is-system-running", "--wait", timeout=boot_timeout)
            if state.stdout.strip() in ("running", "degraded"):
                break
            if time.monotonic() > end:
                raise RuntimeError(f"systemd did not come up: {state}")
            time.sleep(0.1)
        root.share("/run/netns")
        yield root
    finally:
        if holder is not None:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                for pid1 in children(holder.pid):
                    os.kill(pid1, signal.SIGKILL)
            holder.wait(timeout=30)
        for _ in range(100):  # the kernel reaps the namespace's processes asynchronously
            try:
                remove_cgroup(cg)
                break
            except OSError:
                time.sleep(0.1)
        shutil.rmtree(work, ignore_errors=True)
