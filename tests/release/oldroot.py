"""A release bundle running in an old distribution's root: the sandbox for `make test-release`.

The cached Debian bullseye root of the bundle's architecture (glibc 2.31; arm64 runs under
qemu-user) under a throwaway overlay (the cache itself never changes), with the release tarball
unpacked in its /opt as an operator would. One long-lived holder process owns a mount
namespace in which that overlay is mounted and has /proc, /sys, /dev, the machine's /run and
its temp directory ($TMPDIR, else /tmp) bind-mounted (slave propagation, so netns files the
tests create later appear inside, and nothing mounted there leaks out); the machine reads the
root's files through /proc/<holder>/root. Every exec of the bundle enters that mount namespace
and chroots into the root (`wrapper`): the plugin sees the root's libraries, the sandbox's
netns paths and the tests' temp dirs, and a helper and its clients share one mount namespace,
as on a node.

    python3 tests/release/oldroot.py --arch amd64 -- pytest -q tests/kernel

runs a command with WEFT_PLUGIN pointing at the bundle in such a root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
RELEASE_DIR = Path(os.environ.get("WEFT_RELEASE_DIR") or REPO / "dist" / "release")
ROOTS_SH = REPO / "packaging" / "release" / "roots.sh"
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


class OldRoot(NamedTuple):
    arch: str
    path: Path  # the root, as the holder's mount namespace sees it
    top: str  # the unpacked tarball's top directory, inside the root
    holder: int  # pid of the process that owns the mount namespace

    def host_path(self, inside: str) -> Path:
        """A path inside the root, as this process can open it."""
        return Path(f"/proc/{self.holder}/root{self.path}") / inside.lstrip("/")

    def command(self, *argv: str) -> list[str]:
        """argv run inside the root (argv[0] is a path inside the root)."""
        # absolute: a wrapper may run with a PATH a test has narrowed
        nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        return [nsenter, f"--mount=/proc/{self.holder}/ns/mnt", "--", chroot,
                str(self.path), *argv]

    def run(self, *argv: str, env: dict[str, str] | None = None,
            stdin: bytes = b"", timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.command(*argv), input=stdin, capture_output=True,
                              env=env if env is not None else {"PATH": os.environ["PATH"]},
                              timeout=timeout)

    @property
    def bundle(self) -> str:
        """The plugin executable inside the root."""
        return f"{self.top}/weft/weft"


def tarball(arch: str) -> Path:
    found = sorted(RELEASE_DIR.glob(f"weft-*-linux-{arch}.tar.gz"))
    if not found:
        raise FileNotFoundError(f"no linux-{arch} tarball in {RELEASE_DIR} (run make release)")
    return found[-1]


def base_root(arch: str) -> Path:
    """The cached minimal bullseye root (built by packaging/release/roots.sh when missing)."""
    out = subprocess.run(["bash", str(ROOTS_SH), "base", arch], check=True,
                         capture_output=True, text=True)
    return Path(out.stdout.strip())


def wrapper(root: OldRoot, inside: str, where: Path) -> Path:
    """A script on the machine that runs ``inside`` (a path in the root) in the root, with the
    caller's arguments, environment, stdin and stdout: a drop-in WEFT_PLUGIN."""
    script = where / f"weft-in-{root.arch}-root"
    argv = " ".join(f"'{a}'" for a in root.command(inside))
    script.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
    script.chmod(0o755)
    return script


@contextlib.contextmanager
def old_root(arch: str, workdir: Path | None = None) -> Iterator[OldRoot]:
    """The root with the release tarball of ``arch`` unpacked in /opt, for the duration."""
    tar = tarball(arch)
    base = base_root(arch)
    # outside the temp directory: the root bind-mounts that into itself
    work = Path(tempfile.mkdtemp(prefix=f"weft-oldroot-{arch}-", dir=workdir or "/var/tmp"))
    path = work / "root"
    for d in ("root", "upper", "work"):
        (work / d).mkdir()
    holder: subprocess.Popen[bytes] | None = None
    tmp = tempfile.gettempdir()  # where the tests' files are (TMPDIR, else /tmp)
    try:
        mounts = " && ".join(
            [f"mount -t overlay overlay -o lowerdir={base},upperdir={work}/upper,"
             f"workdir={work}/work {path}",
             f"mount -t proc proc {path}/proc"]
            + [f"mount --rbind /{d} {path}/{d}" for d in ("sys", "dev", "run")]
            + [f"mkdir -p {path}{tmp} && mount --rbind {tmp} {path}{tmp}"]
        )
        holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c",
             f"{mounts} && echo ready && exec sleep infinity"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"could not set up the {arch} root's mounts")
        root = OldRoot(arch, path, "", holder.pid)
        with tarfile.open(tar) as t:
            top = t.getnames()[0].split("/")[0]
            t.extractall(root.host_path("/opt"), filter="tar")
        yield root._replace(top=f"/opt/{top}")
    finally:
        if holder is not None:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default=HOST_ARCH)
    p.add_argument("--on-host", action="store_true",
                   help="unpack the tarball on this machine and run the bundle here, no root")
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        p.error("no command")
    if a.on_host:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp, tarfile.open(tarball(a.arch)) as t:
            t.extractall(tmp, filter="tar")
            plugin = Path(tmp) / t.getnames()[0].split("/")[0] / "weft" / "weft"
            print(f"oldroot: {tarball(a.arch).name} on this machine: WEFT_PLUGIN={plugin}",
                  file=sys.stderr, flush=True)
            return subprocess.run(cmd, env={**os.environ, "WEFT_PLUGIN": str(plugin)}).returncode
    with old_root(a.arch) as root, tempfile.TemporaryDirectory() as tmp:
        plugin = wrapper(root, root.bundle, Path(tmp))
        print(f"oldroot: {tarball(a.arch).name} in a bullseye {a.arch} root: WEFT_PLUGIN={plugin}",
              file=sys.stderr, flush=True)
        return subprocess.run(cmd, env={**os.environ, "WEFT_PLUGIN": str(plugin)}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
