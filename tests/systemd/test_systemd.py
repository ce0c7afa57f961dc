"""`./install.sh` from the release tarball on a node that systemd runs (a real systemd, PID 1 of
its own namespaces: tests/systemd/sdroot.py): weft.socket enabled and listening, the first pod's
ADD and DEL served by the helper systemd starts on that socket, uninstall leaving nothing of
weft enabled.

Oracles: systemctl and the unit files and wants symlinks on disk, the helper's journal
(``journalctl -u weft.service``: one line per request it served), ``ip -j`` in the sandbox
netns, the store on disk.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.netns import Node, Outcome
from tests.systemd.conftest import top_of
from tests.systemd.sdroot import SystemdRoot

UNITS = ("/etc/systemd/system/weft.socket", "/etc/systemd/system/weft.service")
WANTS = "/etc/systemd/system/sockets.target.wants/weft.socket"
SERVED = re.compile(r"request command=(\S+) container=(\S+) ifname=\S+ pid=\d+ exit=(\d+)")


def ok(o: Outcome) -> Outcome:
    assert o.rc == 0, (o.rc, o.stdout, o.stderr)
    return o


def weft_on_disk(root: SystemdRoot) -> list[str]:
    """Every weft unit file and wants link under the root's systemd dirs."""
    return sorted(str(p.relative_to(root.host_path("/"))) for d in ("etc/systemd", "lib/systemd")
                  for p in root.host_path(d).rglob("weft*"))


def served(root: SystemdRoot) -> list[tuple[str, str, str]]:
    journal = root.run("journalctl", "-u", "weft.service", "--no-pager", "-o", "cat")
    return SERVED.findall(journal.stdout)


def install(root: SystemdRoot, env: str = "") -> str:
    out = root.run("/bin/sh", "-c", f"cd {top_of(root)} && {env} ./install.sh")
    assert out.returncode == 0, out
    return out.stdout


def uninstall(root: SystemdRoot) -> str:
    out = root.run("/bin/sh", "-c", f"cd {top_of(root)} && ./uninstall.sh")
    assert out.returncode == 0, out
    return out.stdout


def test_the_boot_left_the_machines_tmp_alone(sdroot: SystemdRoot, machine_tmp_file: Path) -> None:
    assert machine_tmp_file.exists()
    inside, outside = sdroot.host_path("/tmp").stat(), Path("/tmp").stat()
    assert (inside.st_dev, inside.st_ino) != (outside.st_dev, outside.st_ino)


def test_install_serves_the_first_pod_through_the_helper_and_uninstall_leaves_nothing(
        sdroot: SystemdRoot, node: Node, tmp_path: Path) -> None:
    root = sdroot
    assert root.systemctl("is-system-running").stdout.strip() in ("running", "degraded")
    out = install(root)
    helper_lines = [line for line in out.splitlines() if line.startswith("weft helper:")]
    assert len(helper_lines) == 1 and "weft.socket enabled" in helper_lines[0], out
    assert root.systemctl("is-enabled", "weft.socket").stdout.strip() == "enabled"
    assert root.systemctl("is-active", "weft.socket").stdout.strip() == "active"
    # socket activation: nothing runs until the first pod
    assert root.systemctl("is-active", "weft.service").stdout.strip() == "inactive"
    assert root.host_path(WANTS).is_symlink()
    assert root.host_path("/run/weft/weft.sock").is_socket()

    node.plugin = str(root.wrapper("/opt/cni/bin/weft", tmp_path))
    pod = node.pod()
    added = ok(node.add(pod, "first-pod"))
    ip = json.loads(added.stdout)["ips"][0]["address"]
    assert [a["local"] + "/" + str(a["prefixlen"]) for a in pod.ip("-4", "addr", "show", "eth0")[0]
            ["addr_info"]] == [ip]
    assert set(node.reservations()) == {ip.split("/")[0]}
    assert root.systemctl("is-active", "weft.service").stdout.strip() == "active"
    ok(node.delete(pod, "first-pod"))
    assert "eth0" not in pod.links()
    assert node.reservations() == {} and node.veths() == []
    assert served(root) == [("ADD", "first-pod", "0"), ("DEL", "first-pod", "0")]

    out = uninstall(root)
    for unit in ("weft.socket", "weft.service"):
        assert root.systemctl("is-active", unit).stdout.strip() == "inactive"
        # systemd no longer knows the unit at all
        assert root.systemctl("is-enabled", unit).returncode != 0
    assert weft_on_disk(root) == []
    assert not root.host_path("/run/weft/weft.sock").exists()
    assert "weft.socket and weft.service stopped and disabled" in out, out


def test_no_helper_installs_the_units_without_enabling_them(
        sdroot: SystemdRoot, node: Node, tmp_path: Path) -> None:
    """WEFT_NO_HELPER=1: units on disk, nothing enabled or listening, pods run in-process."""
    root = sdroot
    before = served(root)
    out = install(root, "WEFT_NO_HELPER=1")
    assert "WEFT_NO_HELPER=1" in out and "enabled and listening" not in out, out
    assert all(root.host_path(u).is_file() for u in UNITS)
    assert root.systemctl("is-enabled", "weft.socket").stdout.strip() == "disabled"
    assert root.systemctl("is-active", "weft.socket").stdout.strip() == "inactive"
    assert not root.host_path(WANTS).exists()
    node.plugin = str(root.wrapper("/opt/cni/bin/weft", tmp_path))
    pod = node.pod()
    ok(node.add(pod, "in-process"))
    ok(node.delete(pod, "in-process"))
    assert node.reservations() == {} and node.veths() == []
    assert served(root) == before  # the helper served nothing
    uninstall(root)
    assert weft_on_disk(root) == []


def test_reinstall_with_no_helper_leaves_an_enabled_helper_enabled(
        sdroot: SystemdRoot, node: Node, tmp_path: Path) -> None:
    """WEFT_NO_HELPER=1 enables nothing and disables nothing: an operator's enabled helper
    stays enabled across a reinstall, and keeps serving."""
    root = sdroot
    install(root)
    out = install(root, "WEFT_NO_HELPER=1")
    assert "left enabled as it was" in out, out
    assert root.systemctl("is-enabled", "weft.socket").stdout.strip() == "enabled"
    assert root.systemctl("is-active", "weft.socket").stdout.strip() == "active"
    before = served(root)
    node.plugin = str(root.wrapper("/opt/cni/bin/weft", tmp_path))
    pod = node.pod()
    ok(node.add(pod, "after-reinstall"))
    ok(node.delete(pod, "after-reinstall"))
    assert node.reservations() == {} and node.veths() == []
    assert served(root)[len(before):] == [("ADD", "after-reinstall", "0"),
                                         ("DEL", "after-reinstall", "0")]
    uninstall(root)
    assert weft_on_disk(root) == []
    assert root.systemctl("is-enabled", "weft.socket").returncode != 0
