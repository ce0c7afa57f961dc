"""The release tarballs on the oldest distribution they support: each architecture's bundle in
a Debian bullseye root of that architecture (glibc 2.31; arm64 under qemu-user), unpacked
from its tarball as an operator would, driving a sandbox node on the real kernel.

Oracles: ``ip -j`` in the sandbox netns, the store on disk, the helper's own log line for a
request, the files in the root after install and uninstall, ``readelf`` on the bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Node, ip_json
from tests.release.conftest import ARCHS
from tests.release.oldroot import OldRoot, tarball

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
GLIBC_FLOOR = (2, 31)


def ok(out: Any) -> Any:
    assert out.rc == 0, f"rc={out.rc} stdout={out.stdout} stderr={out.stderr[-2000:]}"
    return out.json if out.stdout.strip() else None


def files_of(root: OldRoot) -> set[str]:
    """Every path in the root's own file systems (not the mounted /proc, /sys, /dev, /run,
    /tmp, nor the unpacked tarball)."""
    top = root.host_path("/")
    skip = {"proc", "sys", "dev", "run", "tmp"}
    out: set[str] = set()
    for entry in top.iterdir():
        if entry.name in skip:
            continue
        out.add(entry.name)
        if entry.is_dir() and not entry.is_symlink():
            out.update(str(p.relative_to(top)) for p in entry.rglob("*"))
    return {p for p in out if not p.startswith(root.top.lstrip("/"))}


def test_tarball_layout_and_checksums(root: OldRoot) -> None:
    tar = tarball(root.arch)
    with tarfile.open(tar) as t:
        names = t.getnames()
    top = names[0].split("/")[0]
    assert top == tar.name.removesuffix(".tar.gz")
    assert all(n == top or n.startswith(top + "/") for n in names), "one top directory"
    for f in ("weft/weft", "weft/_internal", "install.sh", "uninstall.sh", "10-weft.conflist",
              "weft.socket", "weft.service", "README"):
        assert f"{top}/{f}" in names, f
    sums = (tar.parent / "SHA256SUMS").read_text()
    check = subprocess.run(["sha256sum", "-c", "--ignore-missing", "SHA256SUMS"],
                           cwd=tar.parent, capture_output=True, text=True)
    assert check.returncode == 0 and f"{tar.name}: OK" in check.stdout, (sums, check)


def test_no_elf_file_needs_more_than_glibc_2_31(root: OldRoot) -> None:
    """readelf, not the build's own check: the highest GLIBC_ version any ELF file needs."""
    bundle = root.host_path(root.top) / "weft"
    highest = (0,)
    seen = 0
    for path in bundle.rglob("*"):
        if path.is_symlink() or not path.is_file() or path.open("rb").read(4) != b"\x7fELF":
            continue
        seen += 1
        text = subprocess.run(["readelf", "-W", "-V", str(path)], capture_output=True,
                              text=True, check=True).stdout
        needs = text.split("Version needs section", 1)[-1] if "Version needs" in text else ""
        for word in needs.split():
            if word.startswith("GLIBC_2."):
                highest = max(highest, tuple(int(x) for x in word[6:].split(".")))
    assert seen > 5, "the bundle's ELF files (bootloader, libpython, extension modules)"
    assert (2, 17) <= highest <= GLIBC_FLOOR, highest
    machine = {"amd64": "X86-64", "arm64": "AArch64"}[root.arch]
    header = subprocess.run(["readelf", "-h", str(bundle / "weft")], capture_output=True,
                            text=True, check=True).stdout
    assert machine in header


def test_version_in_the_root(root: OldRoot) -> None:
    out = root.run(root.bundle, env={"CNI_COMMAND": "VERSION"})
    assert out.returncode == 0, out
    answer = json.loads(out.stdout)
    assert "1.1.0" in answer["supportedVersions"] and answer["cniVersion"]
    human = root.run(root.bundle, "--version")
    line = human.stdout.decode()
    assert human.returncode == 0 and f"linux/{root.arch}," in line, human
    floor = line.split("needs glibc >= ", 1)[1].split(",", 1)[0]
    assert tuple(int(x) for x in floor.split(".")) <= GLIBC_FLOOR and "release build" in line
    # the root really is the old distribution the bundle must start on
    libc = root.run("/usr/bin/ldd", "--version")
    assert b"2.31" in libc.stdout.splitlines()[0], libc


def test_add_check_status_gc_del_on_a_sandbox_node(release_node: Node) -> None:
    node = release_node
    conf = node.conf("1.1.0")
    ok(node.exec("STATUS", conf))
    keep, drop = node.pod(), node.pod()
    result = ok(node.add(keep, "keep", node.conf("1.0.0")))
    ok(node.add(drop, "drop", node.conf("1.0.0")))
    (addr,) = [a for a in ip_json(keep.name, "addr", "show", "dev", "eth0")[0]["addr_info"]
               if a["family"] == "inet"]
    assert (addr["local"], addr["prefixlen"]) == ("10.42.0.2", 24)
    assert ip_json(keep.name, "link", "show", "dev", "eth0")[0]["mtu"] == 1450
    assert node.reservations() == {"10.42.0.2": b"keep\r\neth0", "10.42.0.3": b"drop\r\neth0"}
    ok(node.check(keep, "keep", result, node.conf("1.0.0")))
    gc = dict(conf)
    gc["cni.dev/valid-attachments"] = [{"containerID": "keep", "ifname": "eth0"}]
    ok(node.exec("GC", gc))
    assert node.reservations() == {"10.42.0.2": b"keep\r\neth0"}
    assert "eth0" not in drop.links() and len(node.veths()) == 1
    ok(node.delete(keep, "keep", node.conf("1.0.0")))
    assert node.reservations() == {} and node.veths() == []
    assert "eth0" not in keep.links()


def test_one_request_through_the_helper(release_node: Node, tmp_path: Path) -> None:
    """`weft serve` and its client, both the release bundle in the root: the helper's log
    names the request, so it was served there and not in-process."""
    from tests.serve._support import Helper, via

    node = release_node
    pod = node.pod()
    with Helper(tmp_path, plugin=node.plugin).start() as helper:
        ok(node.add(pod, "served", env=via(helper)))
        ok(node.delete(pod, "served", env=via(helper)))
        served = helper.served()
        log = helper.log()
    assert [(c, cid) for c, cid, _ in served] == [("ADD", "served"), ("DEL", "served")], log
    assert node.reservations() == {} and node.veths() == []


def test_install_and_uninstall_from_the_unpacked_tarball(root: OldRoot) -> None:
    """As an operator on the node: no make, no Python, no checkout; the root's own /opt and
    /etc (a copy), never the machine's."""
    top = root.top
    before = files_of(root)
    assert "usr/bin/env" in before and "etc/os-release" in before  # the walk sees the root
    out = root.run("/bin/sh", "-c", f"cd {top} && ./install.sh")
    assert out.returncode == 0, out
    entry = root.host_path("/opt/cni/bin/weft")
    assert entry.is_symlink() and os.readlink(entry) == "weft.d/weft"
    assert root.host_path("/etc/cni/net.d/10-weft.conflist").is_file()
    assert root.host_path("/etc/systemd/system/weft.socket").is_file()
    version = root.run("/opt/cni/bin/weft", "--version")
    assert version.returncode == 0 and f"linux/{root.arch}" in version.stdout.decode()
    answer = root.run("/opt/cni/bin/weft", env={"CNI_COMMAND": "VERSION"})
    assert answer.returncode == 0 and b"supportedVersions" in answer.stdout
    out = root.run("/bin/sh", "-c", f"cd {top} && ./uninstall.sh")
    assert out.returncode == 0, out
    after = files_of(root)
    assert after == before, sorted(str(p) for p in after ^ before)[:20]


def test_installer_refuses_another_architecture(root: OldRoot) -> None:
    """The other architecture's tarball, unpacked in this root: one clear line, nothing
    installed."""
    other = {"amd64": "arm64", "arm64": "amd64"}[root.arch]
    if other not in ARCHS:
        pytest.skip(f"only {root.arch} is under test (WEFT_RELEASE_ARCHS)")
    foreign = tarball(other)
    dest = root.host_path("/opt/foreign")
    with tarfile.open(foreign) as t:
        t.extractall(dest, filter="tar")
        top = t.getnames()[0].split("/")[0]
    out = root.run("/bin/sh", "-c", f"cd /opt/foreign/{top} && ./install.sh")
    err = out.stderr.decode().strip()
    assert out.returncode != 0 and len(err.splitlines()) == 1, out
    assert f"for linux/{other}" in err and f"this machine is linux/{root.arch}" in err
    assert not root.host_path("/opt/cni/bin/weft").exists()
    assert not root.host_path("/etc/cni/net.d/10-weft.conflist").exists()
