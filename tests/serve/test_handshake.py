"""The two-step accept and what the request carries: a stuck helper never holds the
runtime's stdout, a request is never run twice, the child cap, umask, cwd and mount
namespace.

Oracles: EOF on a pipe the test reads (what a runtime waits for), the helper's log, the
kernel (``ip -j``), the store on disk and the files the request created.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cni.helper import client as handoff
from cni.helper import protocol as helperproto
from tests.netns import Node, cni_env
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
    via,
    wait_for,
)

pytestmark = pytest.mark.root

# the accept deadline the README promises (not read from the code under test), and what a
# runtime may wait past it for the in-process result and EOF: an exec of the plugin on a
# loaded machine; a descriptor held by a stuck helper is never released at all
ACCEPT_DEADLINE = 3.0
MARGIN = 30.0


def _run_to_eof(node: Node, cid: str, pod_path: str, env: dict[str, str],
                limit: float) -> tuple[int, bytes, float]:
    """An ADD exec'd as a runtime does it: stdout is a pipe read to EOF (not merely until
    the plugin exits). (exit code, stdout, seconds until EOF); fails past ``limit``."""
    proc = spawn(node, "ADD", node.conf(), cid, pod_path, env)
    assert proc.stdout is not None and proc.stderr is not None
    t0 = time.monotonic()
    out = b""
    fd = proc.stdout.fileno()
    while True:
        left = limit - (time.monotonic() - t0)
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            exited = proc.poll()
            proc.kill()
            proc.wait()
            raise AssertionError(f"no EOF on stdout after {limit:.0f} s (plugin exit code "
                                 f"{exited}, stdout so far {out!r})")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    took = time.monotonic() - t0
    proc.stderr.read()
    return proc.wait(timeout=60), out, took


def _in_process_result(node: Node, pod: Any, rc: int, out: bytes, fallbacks: Path) -> None:
    assert rc == 0, out
    res = json.loads(out)
    assert pod.addrs("eth0") == [res["ips"][0]["address"]]
    assert list(node.reservations()) == [res["ips"][0]["address"].split("/")[0]]
    why = fallbacks.read_text().splitlines()
    assert [w.split()[1] for w in why] == ["'ADD':"], why


def test_a_stopped_helper_never_holds_the_runtimes_stdout(node: Node, tmp_path: Path) -> None:
    """SIGSTOP the helper: the connection waits in its backlog. The plugin gives up at the
    accept deadline and runs in-process; the runtime gets the result and EOF. Woken, the
    helper finds the client gone and runs nothing: the request ran once."""
    fallbacks = tmp_path / "fallbacks"
    with Helper(tmp_path).start() as helper:
        pod = node.pod()
        os.kill(helper.pid, signal.SIGSTOP)
        try:
            rc, out, _ = _run_to_eof(
                node, "stopped", pod.path,
                {**via(helper), handoff.FALLBACK_LOG_ENV: str(fallbacks)},
                ACCEPT_DEADLINE + MARGIN)
        finally:
            os.kill(helper.pid, signal.SIGCONT)
        _in_process_result(node, pod, rc, out, fallbacks)
        helper.wait_log("closed before a request|refused handshake")
        assert helper.served() == []
        assert len(node.reservations()) == 1 and len(node.veths()) == 1
        assert node.delete(pod, "stopped", env=via(helper)).rc == 0
        assert node.veths() == [] and node.reservations() == {}


def _mute_helper(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    """A listener that accepts, then never reads nor answers: it only holds the
    connections."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            held.append(c)

    threading.Thread(target=accept, daemon=True).start()
    return srv, held


def test_a_helper_that_accepts_and_never_reads_never_holds_stdout(
    node: Node, tmp_path: Path
) -> None:
    """The connection is accepted and held, nothing is ever read or answered: the plugin
    runs in-process within the accept deadline and the runtime gets its result and EOF
    (kills an infinite accept timeout too)."""
    path = tmp_path / "mute.sock"
    fallbacks = tmp_path / "fallbacks"
    srv, held = _mute_helper(path)
    try:
        pod = node.pod()
        rc, out, _ = _run_to_eof(
            node, "mute", pod.path,
            {helperproto.SOCKET_ENV: str(path), handoff.FALLBACK_LOG_ENV: str(fallbacks)},
            ACCEPT_DEADLINE + MARGIN)
        _in_process_result(node, pod, rc, out, fallbacks)
        assert len(held) == 1  # it did connect, and was held
        assert "TimeoutError" in fallbacks.read_text()
    finally:
        srv.close()
        for c in held:
            c.close()
    assert node.delete(pod, "mute", env={helperproto.SOCKET_ENV: "off"}).rc == 0


# A raw client in the node's netns (the helper's child enters its client's namespaces):
# sends a real ADD, waits for the accept, then closes without the go.
_CLOSE_BEFORE_GO = """
import json, os, socket, sys
from cni.helper import protocol as p
sock, ident, env, stdin = sys.argv[1], sys.argv[2].encode(), json.loads(sys.argv[3]), sys.argv[4]
raw_env = b"".join(f"{k}={v}".encode() + b"\\0" for k, v in env.items())
data = stdin.encode()
head = p.REQUEST.pack(p.MAGIC, 0, 0, 0o022, len(ident), 1, len(raw_env), len(data))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sock)
s.sendall(head + ident + b"/" + raw_env + data)
reply = s.recv(p.REPLY.size)
print(p.REPLY.unpack(reply)[0].decode() if len(reply) == p.REPLY.size else "closed")
s.close()
"""


def test_a_client_gone_between_accept_and_go_runs_nothing(node: Node, tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        pod = node.pod()
        env = {**cni_env("ADD", "no-go", pod.path), "PATH": os.environ["PATH"]}
        root = Path(handoff.source_root())
        r = node.ns.run(sys.executable, "-c", _CLOSE_BEFORE_GO, str(helper.sock),
                        identity_of(helper.plugin).decode(), json.dumps(env),
                        json.dumps(node.conf()),
                        env={"PYTHONPATH": str(root), "PATH": os.environ["PATH"]})
        assert r.stdout.strip() == "A", r
        # the child sees the close, or the parent kills it first (its client hung up)
        helper.wait_log("refused handshake: .*before the go|closed before a request")
        assert helper.served() == []  # no child ever reported a request
        time.sleep(1.0)  # a request that runs anyway would have made its veth by now
        assert node.veths() == [] and node.reservations() == {} and node.records() == {}
        assert pod.links().keys() <= {"lo"}


def test_the_child_cap_keeps_extra_connections_in_the_backlog(
    node: Node, tmp_path: Path
) -> None:
    """``--max-children 2``: two requests queued on the store lock hold both children; a
    third connection is not accepted (no child, no A) until one of them ends."""
    with Helper(tmp_path).start("--max-children", "2") as helper:
        conf = node.conf()
        conf["lockTimeout"] = 60
        pods = [node.pod(), node.pod()]
        ident = identity_of(helper.plugin)
        with held_lock(node):
            procs = [spawn(node, "ADD", conf, f"cap-{i}", p.path, via(helper))
                     for i, p in enumerate(pods)]
            wait_for(lambda: _holding(helper, node.store_dir() / "lock") == 2,
                     what="two requests holding both children")
            third = connect(helper.sock, timeout=3)
            third.sendall(request_bytes(ident, {"CNI_COMMAND": "VERSION"}, b""))
            with pytest.raises(TimeoutError):
                recv_reply(third)  # not accepted: no child took it
            assert len(helper.children()) == 2
        for proc in procs:
            assert outcome(proc).rc == 0
        third.settimeout(60)
        assert recv_reply(third) == (helperproto.ACCEPTED, 0)  # its turn came
        r, w = os.pipe()
        send_with_fds(third, helperproto.REPLY.pack(helperproto.GO, 0), [w, w])
        os.close(w)
        assert recv_reply(third) == (helperproto.EXITED, 0)
        third.close()
        assert b"supportedVersions" in os.read(r, 65536)
        os.close(r)
        # logged as reaped: the third may end before the second ADD
        assert sorted(s[0] for s in helper.served()) == ["ADD", "ADD", "VERSION"]
        for i, p in enumerate(pods):
            assert node.delete(p, f"cap-{i}", env=via(helper)).rc == 0
        assert node.veths() == [] and node.reservations() == {}


def _holding(helper: Helper, path: Path) -> int:
    """How many of the helper's children have ``path`` open."""
    n = 0
    for pid in helper.children():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    n += 1
                    break
            except OSError:
                continue
    return n


def _spawn_in(node: Node, cid: str, pod_path: str, env: dict[str, str], cwd: Path,
              umask: int, conf: dict[str, Any], wrap: list[str] | None = None
              ) -> subprocess.CompletedProcess[bytes]:
    e = {**cni_env("ADD", cid, pod_path), "PATH": os.environ["PATH"], **env}
    if os.environ.get("WEFT_PYTHON"):
        e["WEFT_PYTHON"] = os.environ["WEFT_PYTHON"]
    return subprocess.run(
        ["ip", "netns", "exec", node.ns.name, *(wrap or []), node.plugin],
        input=json.dumps(conf).encode(), capture_output=True, env=e, cwd=cwd, timeout=120,
        preexec_fn=lambda: os.umask(umask),  # noqa: PLW1509 - single-threaded test
    )


def test_the_request_runs_with_the_clients_umask_and_cwd(node: Node, tmp_path: Path) -> None:
    """A relative logFile is created in the client's cwd with the client's umask, through
    the helper as in-process (the helper itself runs elsewhere with umask 022)."""
    helper_cwd = tmp_path / "helper-cwd"
    helper_cwd.mkdir()
    old = os.umask(0o022)
    try:
        helper = Helper(tmp_path).start(cwd=str(helper_cwd))
    finally:
        os.umask(old)
    with helper:
        conf = node.conf()
        conf["logFile"] = "logs/weft.log"  # relative: the client's cwd decides
        for mode, env in (("helper", via(helper)), ("in-process", {"WEFT_SOCKET": "off"})):
            cwd = tmp_path / f"client-{mode}"
            (cwd / "logs").mkdir(parents=True)
            pod = node.pod()
            r = _spawn_in(node, f"um-{mode}", pod.path, env, cwd, 0o077, conf)
            assert r.returncode == 0, r.stderr
            log = cwd / "logs" / "weft.log"
            assert log.exists(), (mode, r.stderr)
            assert log.stat().st_mode & 0o777 == 0o600, (mode, oct(log.stat().st_mode))
            assert f"ADD container=um-{mode}" in log.read_text()
            assert node.delete(pod, f"um-{mode}", env=env).rc == 0
        assert [s[:2] for s in helper.served()] == [("ADD", "um-helper"), ("DEL", "um-helper")]
        assert list(helper_cwd.iterdir()) == []
    assert node.veths() == [] and node.reservations() == {}


def test_a_client_in_another_mount_namespace_is_served_with_its_own_paths(
    node: Node, tmp_path: Path
) -> None:
    """The runtime's dataDir is another directory in its own mount namespace (as in a
    container with its own state): the reservation lands in the runtime's store, never in
    the helper's view of the same path."""
    theirs = tmp_path / "runtime-store"
    theirs.mkdir()
    node.data_dir.mkdir(parents=True, exist_ok=True)
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount --bind "{theirs}" "{node.data_dir}" && exec "$0" "$@"']
    with Helper(tmp_path).start() as helper:
        pod = node.pod()
        r = _spawn_in(node, "other-mnt", pod.path, via(helper), tmp_path, 0o022, node.conf(),
                      wrap)
        assert r.returncode == 0, r.stderr
        addr = json.loads(r.stdout)["ips"][0]["address"].split("/")[0]
        assert [s[:2] for s in helper.served()] == [("ADD", "other-mnt")]
        assert (theirs / "cbr0" / addr).read_bytes() == b"other-mnt\r\neth0"
        assert node.reservations() == {}  # the helper's own view of the path: untouched
        assert pod.addrs("eth0") == [f"{addr}/24"]
        r = subprocess.run(
            ["ip", "netns", "exec", node.ns.name, *wrap, node.plugin],
            input=json.dumps(node.conf()).encode(), capture_output=True, timeout=120,
            env={**cni_env("DEL", "other-mnt", pod.path), "PATH": os.environ["PATH"],
                 **via(helper), **({"WEFT_PYTHON": os.environ["WEFT_PYTHON"]}
                                   if os.environ.get("WEFT_PYTHON") else {})})
        assert r.returncode == 0, r.stderr
        assert [s[:2] for s in helper.served()] == [("ADD", "other-mnt"), ("DEL", "other-mnt")]
        assert not (theirs / "cbr0" / addr).exists()
    assert node.veths() == [] and node.reservations() == {}


def _code_root(plugin: str) -> Path:
    """Where the helper started from ``plugin`` loads its code (``serve._code_root``)."""
    internal = Path(plugin).resolve().parent / "_internal"
    return internal if internal.is_dir() else Path(handoff.source_root())


def test_a_client_that_sees_other_weft_files_runs_in_process(node: Node, tmp_path: Path) -> None:
    """Same build, but at the helper's code path the client's mount namespace has other
    files (a copy): the helper refuses before the accept (a late import in its child would
    load them) and the request runs in-process, in the client's own mount namespace."""
    code = _code_root(node.plugin)
    copy = tmp_path / "code-copy"
    if code.name == "_internal":
        shutil.copytree(code, copy, symlinks=True)
    else:
        for pkg in handoff.SOURCE_PACKAGES:
            shutil.copytree(code / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        (copy / "tests").mkdir()
        shutil.copy2(code / "tests" / "weft-from-source", copy / "tests" / "weft-from-source")
        shutil.copy2(code / "pyproject.toml", copy / "pyproject.toml")  # the version: same build
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount --bind "{copy}" "{code}" && exec "$0" "$@"']
    fallbacks = tmp_path / "fallbacks"
    with Helper(tmp_path).start() as helper:
        pod = node.pod()
        r = _spawn_in(node, "copied", pod.path,
                      {**via(helper), handoff.FALLBACK_LOG_ENV: str(fallbacks)}, tmp_path,
                      0o022, node.conf(), wrap)
        assert r.returncode == 0, r.stderr
        addr = json.loads(r.stdout)["ips"][0]["address"].split("/")[0]
        helper.wait_log("refused handshake: weft's own files at .* are other files")
        assert helper.served() == []
        assert "'ADD': not accepted" in fallbacks.read_text()
        assert list(node.reservations()) == [addr]
        assert node.delete(pod, "copied", env=via(helper)).rc == 0
    assert node.veths() == [] and node.reservations() == {}
