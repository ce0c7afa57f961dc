"""The helper's systemd units (packaging/weft.socket, weft.service) as install.sh installs
them under a DESTDIR, and the installed ExecStart serving through an activated socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cni.helper import protocol as helperproto
from tests.packaging.test_packaging import _sh, _tree, dist  # noqa: F401 - fixture
from tests.serve._support import Helper, identity_of, version_request, wait_for

UNITS = "etc/systemd/system"


def _units(root: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name in ("weft.socket", "weft.service"):
        keys: dict[str, str] = {}
        for line in (root / UNITS / name).read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                keys[k] = v
        out[name] = keys
    return out


def test_units_installed_filled_in_and_removed(dist: Path, tmp_path: Path) -> None:  # noqa: F811
    dest = tmp_path / "root"
    dest.mkdir()
    env = {"DESTDIR": str(dest), "WEFT_DIST": str(dist), "WEFT_LIB_DIR": "/opt/weft"}
    p = _sh("install.sh", env)
    assert p.returncode == 0, p.stderr
    units = _units(dest)
    sock, svc = units["weft.socket"], units["weft.service"]
    assert sock["ListenStream"] == helperproto.DEFAULT_SOCKET
    assert (sock["SocketMode"], sock["DirectoryMode"], sock["SocketUser"]) == ("0600", "0700",
                                                                              "root")
    assert sock["WantedBy"] == "sockets.target"
    assert svc["ExecStart"] == "/opt/weft/weft serve"
    assert (dest / "opt/weft/weft").is_file()  # what ExecStart names was installed
    assert svc["Restart"] == "on-failure"
    assert svc["KillMode"] == "process"  # a helper restart never kills accepted requests
    assert svc["Requires"] == "weft.socket"
    for name in ("weft.socket", "weft.service"):
        assert oct((dest / UNITS / name).stat().st_mode & 0o777) == "0o644"
        assert "@" not in (dest / UNITS / name).read_text().replace("@WEFT", "")
    manifest = (dest / "opt/weft/.install-manifest").read_text()
    assert f"/{UNITS}/weft.socket\n" in manifest and f"/{UNITS}/weft.service\n" in manifest
    p = _sh("uninstall.sh", {k: v for k, v in env.items() if k != "WEFT_DIST"})
    assert p.returncode == 0, p.stderr
    assert _tree(dest) == {}


def test_no_units_on_request(dist: Path, tmp_path: Path) -> None:  # noqa: F811
    dest = tmp_path / "root"
    dest.mkdir()
    env = {"DESTDIR": str(dest), "WEFT_DIST": str(dist), "WEFT_NO_UNITS": "1"}
    assert _sh("install.sh", env).returncode == 0
    assert not (dest / UNITS).exists()
    assert _sh("uninstall.sh", {"DESTDIR": str(dest)}).returncode == 0


def test_edited_unit_is_kept_by_uninstall(dist: Path, tmp_path: Path) -> None:  # noqa: F811
    dest = tmp_path / "root"
    dest.mkdir()
    env = {"DESTDIR": str(dest), "WEFT_DIST": str(dist)}
    assert _sh("install.sh", env).returncode == 0
    svc = dest / UNITS / "weft.service"
    svc.write_text(svc.read_text() + "\n# local edit\n")
    p = _sh("uninstall.sh", {"DESTDIR": str(dest)})
    assert p.returncode == 0 and "kept" in p.stderr
    assert svc.exists() and not (dest / UNITS / "weft.socket").exists()


# what systemd does for weft.service: the listening socket as fd 3, LISTEN_FDS=1 and
# LISTEN_PID = the service's pid, then exec ExecStart
_ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.mark.root
def test_installed_exec_start_serves_an_activated_socket(
    dist: Path, tmp_path: Path  # noqa: F811
) -> None:
    dest = tmp_path / "root"
    dest.mkdir()
    env = {"DESTDIR": str(dest), "WEFT_DIST": str(dist), "WEFT_LIB_DIR": "/opt/weft"}
    assert _sh("install.sh", env).returncode == 0
    argv = _units(dest)["weft.service"]["ExecStart"].split()
    argv[0] = str(dest) + argv[0]
    path = tmp_path / "weft.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(16)
    helper = Helper(tmp_path, plugin=argv[0], sock=path)
    with open(helper.logfile, "wb") as log:
        helper.proc = subprocess.Popen(
            [sys.executable, "-c", _ACTIVATE, str(srv.fileno()), *argv],
            pass_fds=(srv.fileno(),), stdin=subprocess.DEVNULL, stderr=log,
            start_new_session=True, env={"PATH": os.environ["PATH"]},
        )
    with helper:
        helper.wait_ready()
        code, out = version_request(path, identity_of(argv[0]))
        assert code == 0 and b"supportedVersions" in out
        helper.wait_log(r"\]: request command=VERSION")  # logged when its child is reaped
        assert len(helper.served()) == 1, helper.log()
        assert helper.stop() == 0
        wait_for(lambda: path.exists(), what="socket")  # the activator's, never unlinked
    srv.close()
