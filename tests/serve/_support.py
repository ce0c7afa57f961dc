"""A ``weft serve`` helper under test, and a raw client speaking its protocol.

The helper is the plugin under test (``WEFT_PLUGIN``, frozen or from source) started with
``serve --socket <tmp>``; what it did is read from outside: its stderr log, ``/proc`` (its
children, fds, RSS), the kernel (``ip -j``) and the store on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cni.helper import client as handoff
from cni.helper import protocol as helperproto
from cni.helper import server as serve
from tests.netns import PLUGIN, Node, Outcome

SERVED = re.compile(r"\]: request command=(\S+) container=(\S+) ifname=\S+ pid=\d+ (\S+)")


def identity_of(plugin: str) -> bytes:
    """The build identity the helper started from ``plugin`` expects from its clients."""
    real = Path(plugin).resolve()
    build_id = real.parent / "_internal" / handoff.BUILD_ID_FILE
    if build_id.exists():
        return build_id.read_bytes().strip()
    return handoff.identity()  # the source tree, as tests/weft-from-source runs it


class Helper:
    def __init__(self, tmp: Path, plugin: str = PLUGIN, sock: Path | None = None) -> None:
        self.tmp = tmp
        self.plugin = plugin
        self.sock = sock or tmp / "run" / "weft" / "weft.sock"
        self.logfile = tmp / f"serve-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str, **popen: object) -> Helper:
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(  # type: ignore[call-overload]
                [self.plugin, "serve", "--socket", str(self.sock), *extra],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # its own process group: killpg = systemd's stop
                **popen,
            )
        self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            assert self.proc.poll() is None, f"helper exited: {self.log()}"
            if "serving on" in self.log():
                return
            time.sleep(0.02)
        raise AssertionError(f"helper not ready: {self.log()}")

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def served(self) -> list[tuple[str, str, str]]:
        """(command, container, outcome) of every request the helper logged, once every
        child it has is reaped and logged."""
        if self.proc is not None and self.proc.poll() is None:
            wait_for(lambda: self.children() == [] and self.idle(),
                     what="the helper's children reaped and logged")
        return SERVED.findall(self.log())

    def idle(self) -> bool:
        """The helper asleep in its poll loop: a child it reaped has been logged by then
        (it logs a request in the same turn of the loop as it reaps its child)."""
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()[0]
            wchan = Path(f"/proc/{self.pid}/wchan").read_text()
        except OSError:
            return True  # gone: nothing more will be logged
        return state == "S" and "poll" in wchan

    def wait_log(self, pattern: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.log()):
                return
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} never logged: {self.log()}")

    def children(self) -> list[int]:
        """The helper's children that took a request (named so once they did: a spare,
        waiting for the next one, is not one of them, nor a child just forked)."""
        return [pid for pid in self.all_children() if comm(pid) == REQUEST]

    def all_children(self) -> list[int]:
        """Every process whose parent is the helper, by /proc/<pid>/stat: a child stays
        listed there until it is reaped (/proc/<pid>/task/<tid>/children may skip one that
        is exiting)."""
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == self.pid:
                found.append(int(entry.name))
        return found

    def spares(self) -> list[int]:
        return [pid for pid in self.all_children() if comm(pid) == SPARE]

    def waiting_on(self, path: Path) -> bool:
        """True once a child of the helper has ``path`` open: it runs a request (past the
        handshake) that got as far as opening, e.g., the store's lock."""
        for pid in self.children():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                            return True
        return False

    def zombies(self) -> list[int]:
        out = []
        for pid in self.all_children():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, IndexError):
                continue
            if state == "Z":
                out.append(pid)
        return out

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        """The helper's resident memory and its spare's (pages they share count twice)."""
        return sum(rss_kib(pid) for pid in [self.pid, *self.spares()])

    def stop(self, signo: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signo)
        return self.proc.wait(timeout=timeout)

    def kill_group(self) -> None:
        """What systemd's KillMode=control-group does: the helper and every child, SIGKILL."""
        assert self.proc is not None
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


SPARE = serve.SPARE_NAME.decode()
REQUEST = serve.REQUEST_NAME.decode()


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def via(helper: Helper) -> dict[str, str]:
    return {helperproto.SOCKET_ENV: str(helper.sock)}


def spawn(node: Node, command: str, conf: dict[str, object], cid: str, netns: str,
          env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A plugin exec in the node netns that the test can kill (``Node.exec`` waits)."""
    import json

    e = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", **env,
    }
    # exec the plugin in place of `ip netns exec`'s process: its pid is the plugin's
    proc = subprocess.Popen(
        [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", node.ns.name, node.plugin],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(conf).encode())
    proc.stdin.close()
    return proc


def outcome(proc: subprocess.Popen[bytes], timeout: float = 120) -> Outcome:
    proc.stdin = None  # written and closed by spawn
    out, err = proc.communicate(timeout=timeout)
    return Outcome(proc.returncode, out.decode(), err.decode())


@contextmanager
def held_lock(node: Node, network: str = "cbr0") -> Iterator[None]:
    """Hold the network's store lock, as a concurrent plugin would: requests queue on it."""
    d = node.store_dir(network)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def wait_for(pred: object, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ----------------------------------------------------------------------- raw protocol


def request_bytes(identity: bytes, env: dict[str, str], stdin: bytes, flags: int = 0,
                  cwd: bytes = b"/", magic: bytes = helperproto.MAGIC) -> bytes:
    raw_env = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
    head = helperproto.REQUEST.pack(magic, flags, 0, 0o022, len(identity), len(cwd), len(raw_env),
                                len(stdin))
    return head + identity + cwd + raw_env + stdin


def connect(sock: Path, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock))
    return s


def send_with_fds(s: socket.socket, data: bytes, fds: list[int]) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    sent = s.sendmsg([data], anc)
    if sent < len(data):  # never an empty send: the peer may have finished and closed
        s.sendall(data[sent:])


def recv_reply(s: socket.socket) -> tuple[bytes, int] | None:
    """The helper's next reply, or None when it closed the connection."""
    buf = b""
    while len(buf) < helperproto.REPLY.size:
        b = s.recv(helperproto.REPLY.size - len(buf))
        if not b:
            return None
        buf += b
    tag, value = helperproto.REPLY.unpack(buf)
    return tag, value


def version_request(sock: Path, identity: bytes) -> tuple[int, bytes]:
    """A whole VERSION request spoken by hand: (exit code, stdout)."""
    r, w = os.pipe()
    try:
        s = connect(sock)
        try:
            s.sendall(request_bytes(identity, {"CNI_COMMAND": "VERSION"}, b""))
            assert recv_reply(s) == (helperproto.ACCEPTED, 0)
            send_with_fds(s, helperproto.REPLY.pack(helperproto.GO, 0), [w, w])
            os.close(w)
            w = -1
            reply = recv_reply(s)
            assert reply is not None and reply[0] == helperproto.EXITED, reply
        finally:
            s.close()
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        return reply[1], out
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
