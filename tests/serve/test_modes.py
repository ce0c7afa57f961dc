"""The exec path with and without the helper: same results, and every way of falling back.

Each test reads what happened from outside: the helper's log (served or not), the kernel
(``ip -j``) and the store on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cni.helper import client as handoff
from cni.helper import protocol as helperproto
from tests.netns import Node
from tests.netns import expect_ok as ok
from tests.serve._support import (
    Helper,
    held_lock,
    identity_of,
    outcome,
    spawn,
    via,
    wait_for,
)

pytestmark = pytest.mark.root


def _normalised(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what differs by design between two pods (MACs, sandbox path, addr)."""
    r = json.loads(json.dumps(result))
    for i in r.get("interfaces", []):
        i.pop("mac", None)
        i.pop("sandbox", None)
        i.pop("name", None)
    for ip in r.get("ips", []):
        ip.pop("address", None)
    return r


def test_add_check_del_through_the_helper_match_in_process(node: Node, tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        a, b = node.pod(), node.pod()
        res_h = ok(node.add(a, "via-helper", env=via(helper)))
        res_p = ok(node.add(b, "in-process", env={helperproto.SOCKET_ENV: "off"}))
        assert _normalised(res_h) == _normalised(res_p)
        assert [s[:2] for s in helper.served()] == [("ADD", "via-helper")]
        # the pod really got its address, read from the kernel
        assert a.addrs("eth0") == [res_h["ips"][0]["address"]]
        assert ok(node.check(a, "via-helper", res_h, env=via(helper))) is None
        assert ok(node.check(b, "in-process", res_p, env=via(helper))) is None
        assert ok(node.delete(a, "via-helper", env=via(helper))) is None
        assert ok(node.delete(b, "in-process", env={helperproto.SOCKET_ENV: "off"})) is None
        assert node.veths() == []
        assert node.reservations() == {}
        assert [s[0] for s in helper.served()] == ["ADD", "CHECK", "CHECK", "DEL"]


@pytest.mark.parametrize(
    "stdin, env",
    [
        (b"{not json", {}),
        (json.dumps({"cniVersion": "0.4.0", "name": "x", "type": "weft"}).encode(), {}),
        (b"", {"CNI_COMMAND": "BOGUS"}),
        (json.dumps({"cniVersion": "9.9.9", "name": "x", "type": "weft"}).encode(), {}),
    ],
)
def test_errors_are_the_same_bytes_and_exit_codes(
    node: Node, tmp_path: Path, stdin: bytes, env: dict[str, str]
) -> None:
    with Helper(tmp_path).start() as helper:
        pod = node.pod()
        h = node.exec("ADD", stdin, "err", pod.path, env={**via(helper), **env})
        p = node.exec("ADD", stdin, "err", pod.path, env={helperproto.SOCKET_ENV: "off", **env})
        assert (h.rc, h.stdout) == (p.rc, p.stdout)
        assert h.rc == 1 and "code" in json.loads(h.stdout)
        assert len(helper.served()) == 1
        assert _strip_log_prefix(h.stderr) == _strip_log_prefix(p.stderr)


def _strip_log_prefix(text: str) -> list[str]:
    return [line.split(": ", 1)[-1] for line in text.splitlines()]


def test_version_and_log_file_through_the_helper(node: Node, tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        v_h = node.exec("VERSION", b'{"cniVersion":"0.4.0"}', env=via(helper))
        v_p = node.exec("VERSION", b'{"cniVersion":"0.4.0"}', env={helperproto.SOCKET_ENV: "off"})
        assert (v_h.rc, v_h.stdout) == (v_p.rc, v_p.stdout) == (0, v_p.stdout)
        conf = node.conf()
        conf["logFile"] = str(tmp_path / "weft.log")
        conf["logLevel"] = "debug"
        pod = node.pod()
        ok(node.add(pod, "logged", conf, env=via(helper)))
        ok(node.delete(pod, "logged", conf, env={helperproto.SOCKET_ENV: "off"}))
        lines = (tmp_path / "weft.log").read_text().splitlines()
        assert any("ADD container=logged" in ln for ln in lines)
        assert any("DEL container=logged" in ln for ln in lines)
        assert [s[0] for s in helper.served()] == ["VERSION", "ADD"]


def test_the_request_env_is_the_childs_whole_env(node: Node, tmp_path: Path) -> None:
    """ipMasq runs iptables found on the request's PATH, not the helper's: with an
    iptables-restore that fails, the ADD fails the same way in both modes (nothing left)."""
    with Helper(tmp_path).start() as helper:
        conf = node.conf()
        conf["delegate"]["ipMasq"] = True
        fake = tmp_path / "fake-bin"
        fake.mkdir()
        for tool in ("iptables-restore", "iptables-save"):
            (fake / tool).write_text("#!/bin/sh\necho fake $0 failed >&2\nexit 3\n")
            (fake / tool).chmod(0o755)
        pod = node.pod()
        env = {"PATH": str(fake), "WEFT_PYTHON": sys.executable}
        h = outcome(spawn(node, "ADD", conf, "fake-tools", pod.path, {**env, **via(helper)}))
        p = outcome(spawn(node, "ADD", conf, "fake-tools", pod.path,
                          {**env, helperproto.SOCKET_ENV: "off"}))
        assert (h.rc, h.stdout) == (p.rc, p.stdout)
        assert h.rc == 1 and "fake" in h.stdout, h.stdout
        assert [s[0] for s in helper.served()] == ["ADD"]
        assert node.reservations() == {}
        assert node.veths() == []


# ------------------------------------------------------------------------- fall-backs


def _fallback_ok(node: Node, env: dict[str, str], cid: str) -> None:
    pod = node.pod()
    res = ok(node.add(pod, cid, env=env))
    assert pod.addrs("eth0") == [res["ips"][0]["address"]]
    ok(node.delete(pod, cid, env=env))
    assert node.veths() == [] and node.reservations() == {}


def test_no_socket_runs_in_process(node: Node, tmp_path: Path) -> None:
    _fallback_ok(node, {helperproto.SOCKET_ENV: str(tmp_path / "nothing" / "weft.sock")}, "nosock")


def test_refused_connection_runs_in_process(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))  # bound, never listening: connect() gets ECONNREFUSED
    try:
        _fallback_ok(node, {helperproto.SOCKET_ENV: str(path)}, "refused")
    finally:
        s.close()


@pytest.mark.parametrize("answer", [b"", helperproto.REPLY.pack(helperproto.REFUSED, 0), b"Z" * 8,
                                    b"A"])
def test_a_helper_that_does_not_accept_means_in_process(
    node: Node, tmp_path: Path, answer: bytes
) -> None:
    """A fake helper that reads the request and answers anything but ACCEPTED (or closes,
    or answers half a reply): the request runs in-process, once."""
    import threading

    path = tmp_path / "fake.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    seen: list[int] = []
    errors: list[OSError] = []

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            try:
                data, anc, _, _ = c.recvmsg(65536, socket.CMSG_SPACE(16))
                seen.append(len(data))
                for _level, _kind, blob in anc:
                    for fd in memoryview(blob).cast("i"):
                        os.close(fd)
                if answer:
                    c.sendall(answer)
            except OSError as e:
                errors.append(e)
            finally:
                c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        _fallback_ok(node, {helperproto.SOCKET_ENV: str(path),
                            handoff.FALLBACK_LOG_ENV: str(tmp_path / "fallbacks")}, "fake")
    finally:
        srv.close()
    why = (tmp_path / "fallbacks").read_text().splitlines()
    assert [w.split()[1] for w in why] == ["'ADD':", "'DEL':"], why
    # both connected and were not taken (the reasons can only follow a connect)
    assert seen and not errors, (seen, errors)


def test_weft_socket_off_never_connects(node: Node, tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        _fallback_ok(node, {helperproto.SOCKET_ENV: "off"}, "off")
        assert helper.served() == []


def test_person_mode_never_goes_to_the_helper(tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        out = subprocess.run([helper.plugin, "--version"], capture_output=True, text=True,
                             env={"PATH": os.environ["PATH"], **via(helper)}, timeout=60)
        assert out.returncode == 0 and "weft" in out.stdout
        assert helper.served() == []
        assert "connection closed before a request" not in helper.log()


def test_client_of_another_build_falls_back_and_helper_keeps_serving(
    node: Node, tmp_path: Path
) -> None:
    from tests.serve._support import connect, recv_reply, request_bytes

    with Helper(tmp_path).start() as helper:
        s = connect(helper.sock)
        s.sendall(request_bytes(b"weft 0.0.0 some-other-build", {"CNI_COMMAND": "VERSION"}, b""))
        assert recv_reply(s) == (helperproto.REFUSED, 0)
        s.close()
        helper.wait_log("refused a client of another build")
        assert helper.proc is not None and helper.proc.poll() is None
        _fallback_ok(node, via(helper), "after-other-build")
        assert [s[0] for s in helper.served()] == ["ADD", "DEL"]


def _old_build(plugin: Path, tmp: Path) -> tuple[Path, Path]:
    """A copy of the plugin under test (the frozen bundle, or the source tree with its
    launcher) and the file whose change makes the copy another build."""
    build_id = plugin.parent / "_internal" / handoff.BUILD_ID_FILE
    copy = tmp / "old"
    if build_id.exists():
        shutil.copytree(plugin.parent, copy, symlinks=True)
        (copy / "_internal" / handoff.BUILD_ID_FILE).write_bytes(b"weft 0.0.1 an-older-build\n")
        return copy / plugin.name, copy / "_internal" / handoff.BUILD_ID_FILE
    root = Path(handoff.source_root())
    for pkg in handoff.SOURCE_PACKAGES:
        shutil.copytree(root / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "tests").mkdir()
    shutil.copy2(root / "tests" / "weft-from-source", copy / "tests" / "weft-from-source")
    return copy / "tests" / "weft-from-source", copy / "cni" / "protocol" / "spec.py"


def test_helper_whose_bundle_was_replaced_exits_and_the_client_falls_back(
    node: Node, tmp_path: Path
) -> None:
    """An install replaced the bundle on disk: the running helper (the old build) refuses
    the new client, which runs in-process; the helper drains and exits 0 (systemd then
    starts the new build)."""
    plugin, marker = _old_build(Path(node.plugin).resolve(), tmp_path)
    # cwd: `python -m cni` puts it first on sys.path
    with Helper(tmp_path, plugin=str(plugin)).start(cwd=str(tmp_path / "old")) as old:
        # "install" another build (the client's) over the running one
        if marker.name == handoff.BUILD_ID_FILE:
            marker.write_bytes(identity_of(node.plugin) + b"\n")
        else:
            marker.write_bytes(marker.read_bytes() + b"\n")
        _fallback_ok(node, via(old), "replaced")
        assert old.proc is not None
        assert old.proc.wait(timeout=60) == 0
        assert "draining, then exiting" in old.log()
        assert old.served() == []
        assert not old.sock.exists()


# What systemd does for an activated service: the socket as fd 3, LISTEN_FDS, and
# LISTEN_PID set to the service's own pid (exec keeps it).
_ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], [sys.argv[2], "serve"])
"""


def test_systemd_socket_activation(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "activated.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(16)
    fd = srv.fileno()
    helper = Helper(tmp_path, sock=tmp_path / "unused.sock")
    # LISTEN_PID must be the helper's own pid: exec'ing from a shell keeps it
    with open(helper.logfile, "wb") as log:
        helper.proc = subprocess.Popen(
            [sys.executable, "-c", _ACTIVATE, str(fd), helper.plugin],
            pass_fds=(fd,), stdin=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )
    try:
        helper.wait_ready()
        assert "systemd" in helper.log()
        pod = node.pod()
        env = {helperproto.SOCKET_ENV: str(path)}
        ok(node.add(pod, "activated", env=env))
        ok(node.delete(pod, "activated", env=env))
        assert [s[0] for s in helper.served()] == ["ADD", "DEL"]
        assert helper.stop() == 0
        assert path.exists()  # systemd's socket: never unlinked by the helper
    finally:
        srv.close()
        with helper:
            pass


def test_sigterm_finishes_accepted_requests_and_new_ones_fall_back(
    node: Node, tmp_path: Path
) -> None:
    with Helper(tmp_path).start() as helper:
        conf = node.conf()
        conf["lockTimeout"] = 60
        pod = node.pod()
        with held_lock(node):
            proc = spawn(node, "ADD", conf, "in-flight", pod.path, via(helper))
            wait_for(lambda: helper.waiting_on(node.store_dir() / "lock"), what="the request")
            helper.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            wait_for(lambda: not helper.sock.exists(), what="the socket to go")
            assert helper.proc.poll() is None  # type: ignore[union-attr]
        res = ok(outcome(proc))
        assert helper.stop() == 0
        assert pod.addrs("eth0") == [res["ips"][0]["address"]]
        ok(node.delete(pod, "in-flight", env=via(helper)))  # no helper now: in-process
        assert node.veths() == [] and node.reservations() == {}
        _fallback_ok(node, via(helper), "after-stop")
        assert [s[:2] for s in helper.served()] == [("ADD", "in-flight")]


def test_a_fall_back_that_cannot_be_recorded_fails_the_exec(tmp_path: Path) -> None:
    """``WEFT_FALLBACK_LOG`` is how a helper run tells a fall-back from a served request: a
    fall-back it cannot record must not pass unseen (the exec fails, and says why)."""
    from tests.netns import PLUGIN

    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "VERSION",
           helperproto.SOCKET_ENV: str(tmp_path / "no-helper.sock"),
           handoff.FALLBACK_LOG_ENV: str(tmp_path / "no-such-dir" / "fallbacks")}
    if os.environ.get("WEFT_PYTHON"):
        env["WEFT_PYTHON"] = os.environ["WEFT_PYTHON"]
    out = subprocess.run([PLUGIN], input=b"{}", capture_output=True, env=env, timeout=60)
    assert out.returncode == 70, out
    assert out.stdout == b""
    assert b"cannot record a fall-back" in out.stderr
    # recordable: the same exec falls back, runs in-process and says why in the log
    env[handoff.FALLBACK_LOG_ENV] = str(tmp_path / "fallbacks")
    out = subprocess.run([PLUGIN], input=b"{}", capture_output=True, env=env, timeout=60)
    assert out.returncode == 0 and b"supportedVersions" in out.stdout, out
    assert "'VERSION': FileNotFoundError" in (tmp_path / "fallbacks").read_text()
