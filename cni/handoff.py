"""The exec path's first step: hand the request to a running ``weft serve`` helper.

Boundary module, imported before anything heavy: only builtin modules (``_socket``,
``struct``, ``os``, ``sys``), so that a node without a helper pays one failed ``connect()``
and a node with one pays no Python imports beyond what the interpreter has already loaded.

Protocol (one unix stream connection per request; integers in network order):

  client -> helper  ``REQUEST`` header, then identity, cwd, environment (``k=v\\0`` ...) and
                    stdin bytes; the first byte carries, as SCM_RIGHTS, stdout, stderr, the
                    client's own network namespace and, when CNI_NETNS could be opened, it
  helper -> client  ``A`` accepted (anything else, or a closed connection: run in-process)
  client -> helper  ``G`` go: from here on the request is the helper's and is never run here
  helper -> client  ``X`` + exit code, or ``S`` + signal number (the request's process was
                    killed by that signal, and so is this one)

The two-step accept keeps "never run a request twice" even when the client gives up waiting
for the ``A``: a helper child that never receives the ``G`` runs nothing.
"""

from __future__ import annotations

import _socket
import os
import struct
import sys

DEFAULT_SOCKET = "/run/weft/weft.sock"
SOCKET_ENV = "WEFT_SOCKET"
FALLBACK_LOG_ENV = "WEFT_FALLBACK_LOG"
DISABLED = "off"

MAGIC = b"WFT1"
# magic, flags, CNI_NETNS open errno, umask, identity length, cwd length, env length,
# stdin length
REQUEST = struct.Struct("!4sHiHHHII")
FLAG_POD_NETNS = 1
REPLY = struct.Struct("!ci")  # tag, value (exit code, signal number, or 0)
ACCEPTED, REFUSED, GO, EXITED, SIGNALED = b"A", b"R", b"G", b"X", b"S"

MAX_IDENTITY = 256
MAX_CWD = 4096
MAX_ENV = 256 * 1024
# jsondecode.MAX_BYTES + 1 (a unit test holds them together): as much as the in-process
# path reads, so an oversized config gets the same code 6 from the helper's child
MAX_STDIN = 4 * 1024 * 1024 + 1
MAX_FDS = 4

ACCEPT_TIMEOUT = 3.0  # connect + handshake; past it the request runs in-process
TRY_AGAIN = 11  # CNI "try again later"
BUILD_ID_FILE = "weft.build-id"


class HelperLost(Exception):
    """The helper accepted the request, then the connection broke before its exit status."""


def identity() -> bytes:
    """This build. Frozen: ``weft <version> <digest of the bundle>``, written by the build
    into the bundle. Source tree: a digest of the modules' names, sizes and mtimes (cheap,
    and any edit changes it)."""
    base = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and base:
        try:
            with open(os.path.join(base, BUILD_ID_FILE), "rb") as f:
                return f.read(MAX_IDENTITY).strip()
        except OSError:
            return b"weft frozen, no build id"
    return b"weft source " + _source_digest().encode()


def _source_digest() -> str:
    from cnispec.digest import sha256_hex

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = [root]
    for pkg in ("cni", "cnispec", "ipam"):
        d = os.path.join(root, pkg)
        for name in sorted(os.listdir(d)):
            if name.endswith(".py"):
                st = os.stat(os.path.join(d, name))
                parts.append(f"{pkg}/{name}:{st.st_size}:{st.st_mtime_ns}")
    return sha256_hex("\n".join(parts).encode())[:40]


def socket_path() -> str | None:
    path = os.environ.get(SOCKET_ENV, DEFAULT_SOCKET)
    return None if path in ("", DISABLED) else path


class Outcome:
    """What the helper attempt left: the request's exit status when the helper ran it, else
    the stdin bytes it consumed (None: stdin untouched) for the in-process run."""

    __slots__ = ("status", "stdin")

    def __init__(self, status: int | None, stdin: bytes | None) -> None:
        self.status = status
        self.stdin = stdin


def try_helper() -> Outcome:
    """Run this process's request in the helper if one accepts it. Never raises; the
    in-process path runs whenever this returns no status."""
    path = socket_path()
    if path is None:
        return Outcome(None, None)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    stdin: bytes | None = None
    try:
        sock.settimeout(ACCEPT_TIMEOUT)
        sock.connect(path)
        stdin = _read_stdin()
        if stdin is None:
            return _fallback(stdin, "stdin unreadable")
        if not _offer(sock, stdin):
            return _fallback(stdin, "not accepted")
    except Exception as e:  # whatever failed before GO: the helper has run nothing
        sock.close()
        return _fallback(stdin, f"{type(e).__name__}: {e}")
    try:
        sock.settimeout(None)  # from now on the runtime's own timeout bounds the request
        return Outcome(_wait(sock), None)
    except (OSError, HelperLost, struct.error) as e:
        return Outcome(_lost(stdin, e), None)
    finally:
        sock.close()


def _fallback(stdin: bytes | None, why: str) -> Outcome:
    """Run in-process. ``WEFT_FALLBACK_LOG`` (a test seam) records why, so that a run meant
    to go through the helper can tell a fall-back from a served request."""
    log = os.environ.get(FALLBACK_LOG_ENV)
    if log:
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                command = os.environ.get("CNI_COMMAND", "")
                os.write(fd, f"{os.getpid()} {command!r}: {why}\n".encode(errors="replace"))
            finally:
                os.close(fd)
        except OSError:
            pass
    return Outcome(None, stdin)


def _offer(sock: _socket.socket, stdin: bytes) -> bool:
    """Send the request; True once the helper accepted it and was told to go."""
    ident = identity()
    cwd = _cwd()
    env = b"".join(k + b"=" + v + b"\0" for k, v in os.environb.items())
    if len(ident) > MAX_IDENTITY or len(env) > MAX_ENV:
        return False
    pod_fd, pod_errno = _open_pod_netns()
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fds = [1, 2, own] + ([pod_fd] if pod_fd >= 0 else [])
        umask = os.umask(0o022)
        os.umask(umask)
        head = REQUEST.pack(
            MAGIC,
            FLAG_POD_NETNS if pod_fd >= 0 else 0,
            pod_errno,
            umask,
            len(ident),
            len(cwd),
            len(env),
            len(stdin),
        )
        payload = head + ident + cwd + env + stdin
        rights = struct.pack(f"{len(fds)}i", *fds)
        sent = sock.sendmsg([payload], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        if sent < len(payload):
            sock.sendall(payload[sent:])
    finally:
        os.close(own)
        if pod_fd >= 0:
            os.close(pod_fd)
    tag, _ = REPLY.unpack(_recv_exact(sock, REPLY.size))
    if tag != ACCEPTED:
        return False
    sock.sendall(REPLY.pack(GO, 0))
    return True


def _wait(sock: _socket.socket) -> int:
    tag, value = REPLY.unpack(_recv_exact(sock, REPLY.size))
    if tag == EXITED:
        return int(value)
    if tag == SIGNALED and 0 < value < 65:
        _die_of(value)
    raise HelperLost(f"unexpected answer {tag!r} {value}")


def _die_of(signo: int) -> None:
    """End this process the way the request's process ended (a runtime sees the same)."""
    import signal  # this process ends here: the import cost no longer matters

    try:  # noqa: SIM105 - contextlib is one import too many on this path
        signal.signal(signo, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), signo)
    os._exit(128 + signo)


def _lost(stdin: bytes | None, err: BaseException) -> int:
    """The helper took the request and vanished: the work may be half done, so this process
    must not redo it; a runtime retries on code 11 (and calls DEL after a failed ADD)."""
    import json

    version = "1.1.0"
    try:
        conf = json.loads(stdin or b"")
        if isinstance(conf, dict) and isinstance(conf.get("cniVersion"), str):
            version = conf["cniVersion"]
    except ValueError:
        pass
    body = {
        "cniVersion": version,
        "code": TRY_AGAIN,
        "msg": "weft helper lost the request",
        "details": f"{type(err).__name__}: {err}",
    }
    try:
        os.write(1, (json.dumps(body) + "\n").encode())
        os.write(2, f"weft: helper lost the request: {err}\n".encode())
    except OSError:
        pass
    return 1


def _read_stdin() -> bytes | None:
    """Stdin, up to MAX_STDIN bytes as the in-process path reads it (None when fd 0 cannot
    be read: then the in-process path reads it)."""
    chunks: list[bytes] = []
    left = MAX_STDIN
    try:
        while left > 0:
            b = os.read(0, min(65536, left))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
    except OSError:
        if not chunks:
            return None
    return b"".join(chunks)


def _recv_exact(sock: _socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        b = sock.recv(n - len(buf))
        if not b:
            raise HelperLost("helper closed the connection")
        buf += b
    return buf


def _cwd() -> bytes:
    try:
        cwd = os.getcwdb()
    except OSError:
        return b""
    return cwd if len(cwd) <= MAX_CWD else b""


def _open_pod_netns() -> tuple[int, int]:
    """(fd, 0), or (-1, errno) when CNI_NETNS cannot be opened, or (-1, 0) when it is unset or
    not absolute (then the helper's child judges the path exactly as the in-process run)."""
    path = os.environ.get("CNI_NETNS") or ""
    if not path.startswith("/"):
        return -1, 0
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), 0
    except OSError as e:
        return -1, e.errno or 0
