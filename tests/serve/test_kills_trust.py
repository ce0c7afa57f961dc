"""Kills and restarts of either side, steady state over 1,000 requests, and trust."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni.helper import protocol as helperproto
from tests.netns import Node
from tests.serve._support import (
    Helper,
    connect,
    held_lock,
    identity_of,
    outcome,
    recv_reply,
    request_bytes,
    send_with_fds,
    spawn,
    version_request,
    via,
    wait_for,
)

pytestmark = pytest.mark.root


def _slow_conf(node: Node) -> dict[str, object]:
    conf = node.conf()
    conf["lockTimeout"] = 60
    return conf


def _clean(node: Node) -> None:
    assert node.veths() == []
    assert node.reservations() == {}


def test_killed_client_kills_its_request_and_del_cleans_up(node: Node, tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        pod = node.pod()
        with held_lock(node):
            proc = spawn(node, "ADD", _slow_conf(node), "client-killed", pod.path, via(helper))
            wait_for(lambda: helper.waiting_on(node.store_dir() / "lock"), what="the request")
            child = helper.children()[0]
            proc.kill()  # what libcni does on timeout
            proc.wait(timeout=30)
            wait_for(lambda: not Path(f"/proc/{child}").exists(), what="the child to die")
        helper.wait_log(r"container=client-killed .*signal=9 \(client gone\)")
        assert helper.zombies() == []
        assert outcome(spawn(node, "DEL", node.conf(), "client-killed", pod.path,
                             via(helper))).rc == 0
        _clean(node)


def test_helper_killed_alone_the_accepted_request_still_finishes(
    node: Node, tmp_path: Path
) -> None:
    helper = Helper(tmp_path).start()
    with helper:
        pod = node.pod()
        with held_lock(node):
            proc = spawn(node, "ADD", _slow_conf(node), "orphaned", pod.path, via(helper))
            wait_for(lambda: helper.waiting_on(node.store_dir() / "lock"), what="the request")
            assert helper.proc is not None
            helper.proc.kill()  # the helper only (KillMode=process): its child lives on
            helper.proc.wait(timeout=30)
        out = outcome(proc)
        assert out.rc == 0, out
        assert pod.addrs("eth0") == [out.json["ips"][0]["address"]]
        # nobody listens now (stale socket file: ECONNREFUSED): new requests run in-process
        assert helper.sock.exists()
        res = outcome(spawn(node, "DEL", node.conf(), "orphaned", pod.path, via(helper)))
        assert res.rc == 0, res
        _clean(node)
        # a new helper takes over the stale socket path
        with Helper(tmp_path, sock=helper.sock).start() as again:
            p2 = node.pod()
            res = outcome(spawn(node, "ADD", node.conf(), "again", p2.path, via(again)))
            assert res.rc == 0, res
            assert [s[:2] for s in again.served()] == [("ADD", "again")]
            assert outcome(spawn(node, "DEL", node.conf(), "again", p2.path, via(again))).rc == 0
        _clean(node)


def test_helper_and_children_killed_mid_request_is_a_code_11_and_del_cleans_up(
    node: Node, tmp_path: Path
) -> None:
    helper = Helper(tmp_path).start()
    pod = node.pod()
    with held_lock(node):
        proc = spawn(node, "ADD", _slow_conf(node), "group-killed", pod.path, via(helper))
        wait_for(lambda: helper.waiting_on(node.store_dir() / "lock"), what="the request")
        helper.kill_group()  # KillMode=control-group: the helper and the request
    out = outcome(proc)
    assert out.rc == 1, out
    err = json.loads(out.stdout)
    assert err["code"] == 11 and err["cniVersion"] == "1.0.0", err
    res = outcome(spawn(node, "DEL", node.conf(), "group-killed", pod.path, via(helper)))
    assert res.rc == 0, res
    _clean(node)


def test_killed_mid_add_after_it_made_things_del_cleans_up(node: Node, tmp_path: Path) -> None:
    """WEFT_FAULT_AT kills the request's process at an ADD step: through the helper the
    client dies of the same signal (the runtime sees what it sees in-process)."""
    with Helper(tmp_path).start() as helper:
        pod = node.pod()
        out = node.add(pod, "faulted", env={**via(helper), "WEFT_FAULT_AT": "veth"})
        assert out.rc == -signal.SIGKILL, out
        assert [s[:2] for s in helper.served()] == [("ADD", "faulted")]
        assert node.delete(pod, "faulted", env=via(helper)).rc == 0
        _clean(node)


def test_thousand_requests_no_zombies_flat_fds_and_rss(tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        ident = identity_of(helper.plugin)
        for _ in range(20):  # warm up (first allocations, lazily created objects)
            assert version_request(helper.sock, ident)[0] == 0
        wait_for(lambda: helper.children() == [], what="warm-up children reaped")
        fds0, rss0 = helper.fds(), helper.rss_kib()
        t0 = time.monotonic()
        for i in range(1000):
            code, out = version_request(helper.sock, ident)
            assert code == 0 and b"supportedVersions" in out, (i, code, out)
        took = time.monotonic() - t0
        wait_for(lambda: helper.children() == [], what="all children reaped")
        fds1, rss1 = helper.fds(), helper.rss_kib()
        print(f"\n1000 requests in {took:.1f} s; helper fds {fds0} -> {fds1}, "
              f"RSS {rss0} -> {rss1} KiB")
        assert fds1 == fds0
        assert rss1 - rss0 < 2048, (rss0, rss1)  # flat: no per-request growth
        assert helper.zombies() == []
        assert len(helper.served()) == 1020


# ---------------------------------------------------------------------------- trust


def test_socket_is_root_only(tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        assert helper.sock.stat().st_mode & 0o777 == 0o600
        assert helper.sock.parent.stat().st_mode & 0o777 == 0o700


def _connect_as(uid: int, path: Path) -> str:
    """Connect as ``uid`` in a forked process; what the helper answered."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(str(path))
            except PermissionError:
                os.write(w, b"EACCES")
                os._exit(0)
            reply = s.recv(16)
            os.write(w, b"closed" if not reply else b"answered " + reply)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out = os.read(r, 100).decode()
    os.close(r)
    return out


def test_non_root_peer_is_refused(tmp_path: Path) -> None:
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="weft-trust-"))  # /tmp itself: reachable by nobody
    base.chmod(0o755)
    with Helper(tmp_path, sock=base / "run" / "weft.sock").start() as helper:
        assert _connect_as(65534, helper.sock) == "EACCES"  # 0700 dir, 0600 socket
        # open the path to everyone: SO_PEERCRED still refuses the peer
        helper.sock.parent.chmod(0o755)
        helper.sock.chmod(0o666)
        assert _connect_as(65534, helper.sock) == "closed"
        helper.wait_log("refused peer pid=[0-9]+ uid=65534")
        assert version_request(helper.sock, identity_of(helper.plugin))[0] == 0
    shutil.rmtree(base, ignore_errors=True)


def _expect_closed_without_accept(
    sock: Path, data: bytes, fds: list[int], end: bool = False
) -> None:
    """Send ``data`` (and ``fds``); the helper must close without accepting. ``end``: say
    there is no more, so the helper must not wait for its deadline."""
    s = connect(sock)
    try:
        send_with_fds(s, data, fds)
        if end:
            s.shutdown(socket.SHUT_WR)
        reply = recv_reply(s)
        assert reply is None or reply[0] != helperproto.ACCEPTED, reply
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()


def _refused_at_the_go(sock: Path, data: bytes, go: bytes, fds: list[int]) -> None:
    """Send ``data``; the helper accepts; answer ``go`` with ``fds``: it must refuse (or
    close) and run nothing."""
    s = connect(sock)
    try:
        s.sendall(data)
        assert recv_reply(s) == (helperproto.ACCEPTED, 0)
        try:
            send_with_fds(s, go, fds)  # and no shutdown: a hang-up kills the child unlogged
            reply = recv_reply(s)
        except (BrokenPipeError, ConnectionResetError):  # closed with our bytes unread
            reply = None
        assert reply is None or reply[0] == helperproto.REFUSED, reply
    finally:
        s.close()


def test_oversized_and_malformed_handshakes_are_refused(tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        ident = identity_of(helper.plugin)
        null = os.open(os.devnull, os.O_RDWR)
        try:
            env = {"CNI_COMMAND": "VERSION"}
            cases = [
                request_bytes(ident, {"X": "y" * (helperproto.MAX_ENV + 1)}, b""),
                request_bytes(ident, env, b" " * (helperproto.MAX_STDIN + 1)),
                request_bytes(ident, env, b"", magic=b"EVIL"),
                request_bytes(ident * 100, env, b""),
                helperproto.REQUEST.pack(helperproto.MAGIC, 0, 0, 0, 0, 0, 2**31, 0),
                helperproto.REQUEST.pack(helperproto.MAGIC, 0, 0, 0o22, len(ident), 1, 3, 0)
                + ident + b"/" + b"A=b",  # environment entry without its NUL
                helperproto.REQUEST.pack(helperproto.MAGIC, 0, 0, 0o22, len(ident), 1, 4, 0)
                + ident + b"/" + b"=no\0",  # entry without a name
            ]
            for data in cases:
                _expect_closed_without_accept(helper.sock, data, [])
            # no descriptor may come before the accept, however many
            for fds in ([null], [null, null], [null] * 3, [null] * 4, [null] * 12):
                _expect_closed_without_accept(
                    helper.sock, request_bytes(ident, env, b""), fds)
            go = helperproto.REPLY.pack(helperproto.GO, 0)
            ok = request_bytes(ident, env, b"")
            # the go carries stdout and stderr, and the pod netns when the flag says so
            for fds in ([], [null], [null] * 3, [null] * 4, [null] * 12):
                _refused_at_the_go(helper.sock, ok, go, fds)
            _refused_at_the_go(helper.sock, request_bytes(ident, env, b"", flags=1), go,
                               [null, null])
            # anything but a go, or half of one
            _refused_at_the_go(helper.sock, ok, helperproto.REPLY.pack(b"Z", 0), [null, null])
            _refused_at_the_go(helper.sock, ok, go[:2], [null, null])
        finally:
            os.close(null)
        assert helper.served() == []
        assert helper.log().count("refused handshake") == 20, helper.log()
        wait_for(lambda: helper.children() == [], what="refused children reaped")
        assert helper.zombies() == []
        assert version_request(helper.sock, ident)[0] == 0
        assert helper.proc is not None and helper.proc.poll() is None


def test_slow_handshake_times_out_and_others_are_served_meanwhile(tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        ident = identity_of(helper.plugin)
        slow = connect(helper.sock, timeout=30)
        slow.sendall(request_bytes(ident, {"CNI_COMMAND": "VERSION"}, b"")[:7])
        t0 = time.monotonic()
        assert version_request(helper.sock, ident)[0] == 0  # not blocked by the slow one
        # refused and closed by the helper at its deadline
        assert slow.recv(16) in (b"", helperproto.REPLY.pack(helperproto.REFUSED, 0))
        waited = time.monotonic() - t0
        slow.close()
        assert waited < 30
        helper.wait_log("refused handshake")
        assert helper.proc is not None and helper.proc.poll() is None


@pytest.fixture(scope="module")
def fuzz_helper(tmp_path_factory: pytest.TempPathFactory) -> Helper:
    h = Helper(tmp_path_factory.mktemp("fuzz")).start()
    yield h  # type: ignore[misc]
    h.__exit__()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda fl, e, um, a, b, c, d, tail: helperproto.REQUEST.pack(
                helperproto.MAGIC, fl, e, um, a, b, c, d) + tail,
            st.integers(0, 0xFFFF), st.integers(-2**31, 2**31 - 1), st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1), st.binary(max_size=100),
        ),
    ),
    n_fds=st.integers(0, 6),
)
def test_fuzzed_handshakes_never_crash_the_helper(
    fuzz_helper: Helper, data: bytes, n_fds: int
) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        _expect_closed_without_accept(fuzz_helper.sock, data, [null] * n_fds, end=True)
    finally:
        os.close(null)
    assert fuzz_helper.proc is not None and fuzz_helper.proc.poll() is None


def test_after_fuzzing_the_helper_still_serves(fuzz_helper: Helper) -> None:
    wait_for(lambda: fuzz_helper.children() == [], what="fuzz children reaped")
    assert fuzz_helper.zombies() == []
    assert version_request(fuzz_helper.sock, identity_of(fuzz_helper.plugin))[0] == 0
