"""The exec path's first step: hand the request to a running ``weft serve`` helper.

Boundary module, imported before anything heavy: like ``cni.helper.protocol`` (the protocol,
described there), it imports only modules without Python source and ``os``/``sys``/``time``
(loaded by the interpreter's start-up), so that a node without a helper pays one failed
``connect()`` and a node with one pays no Python imports beyond what the interpreter has
already loaded.

Everything before the ``G`` is bounded by one deadline (``ACCEPT_TIMEOUT``): past it, or on
any failure before the ``G``, the request runs in-process, and since no descriptor was sent
yet, nothing of this process outlives it. After the ``G`` a broken connection is CNI error
11: the helper may have done part of the work.
"""

import _socket
import os
import sys
import time

from cni.helper import protocol as proto

FALLBACK_LOG_ENV = "WEFT_FALLBACK_LOG"
ACCEPT_TIMEOUT = 3.0  # connect + handshake up to the helper's A; past it: in-process
TRY_AGAIN = 11  # CNI "try again later"
BUILD_ID_FILE = "weft.build-id"
SOURCE_PACKAGES = ("cni", "cnispec", "ipam")  # the source tree's code, all of it


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
                return f.read(proto.MAX_IDENTITY).strip()
        except OSError:
            return b"weft frozen, no build id"
    return b"weft source " + _source_digest().encode()


def source_root() -> str:
    """The source tree this module runs from (the directory holding ``cni/``)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _source_digest() -> str:
    from cnispec.digest import sha256_hex

    root = source_root()
    parts = [root]
    try:  # the version lives there
        st = os.stat(os.path.join(root, "pyproject.toml"))
        parts.append(f"pyproject.toml:{st.st_size}:{st.st_mtime_ns}")
    except OSError:
        pass
    for pkg in SOURCE_PACKAGES:
        for d, subdirs, names in os.walk(os.path.join(root, pkg)):
            subdirs[:] = sorted(s for s in subdirs if s != "__pycache__")
            for name in sorted(names):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(d, name))
                    rel = os.path.relpath(os.path.join(d, name), root)
                    parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
    return sha256_hex("\n".join(parts).encode())[:40]


class Outcome:
    """What the helper attempt left: the request's exit status when the helper ran it, else
    the stdin bytes it consumed (None: stdin untouched) for the in-process run."""

    __slots__ = ("status", "stdin")

    def __init__(self, status: int | None, stdin: bytes | None) -> None:
        self.status = status
        self.stdin = stdin


def try_helper() -> Outcome:
    """Run this process's request in the helper if one accepts it. Never raises (but for
    an unwritable ``WEFT_FALLBACK_LOG``); the in-process path runs whenever this returns no
    status."""
    path = proto.socket_path()
    if path is None:
        return Outcome(None, None)
    deadline = time.monotonic() + ACCEPT_TIMEOUT
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    stdin: bytes | None = None
    try:
        _until(sock, deadline)
        sock.connect(path)
        stdin = _read_stdin()
        if stdin is None:
            return _fallback(sock, stdin, "stdin unreadable")
        if not _offer(sock, stdin, deadline):
            return _fallback(sock, stdin, "not accepted")
    except Exception as e:  # whatever failed before GO: the helper has run nothing
        return _fallback(sock, stdin, f"{type(e).__name__}: {e}")
    try:
        sock.settimeout(None)  # from now on the runtime's own timeout bounds the request
        return Outcome(_wait(sock), None)
    except Exception as e:  # after GO: the helper may have done part of the work
        return Outcome(_lost(stdin, e), None)
    finally:
        sock.close()


def _until(sock: _socket.socket, deadline: float) -> None:
    """Bound the next socket call by what is left of the accept deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no accept from the helper in time")
    sock.settimeout(left)


def _fallback(sock: _socket.socket, stdin: bytes | None, why: str) -> Outcome:
    """Run in-process. ``WEFT_FALLBACK_LOG`` (a test seam) records why, so that a run meant
    to go through the helper can tell a fall-back from a served request; when it cannot be
    written the exec fails rather than let a fall-back pass unrecorded."""
    sock.close()
    log = os.environ.get(FALLBACK_LOG_ENV)
    if log:
        command = os.environ.get("CNI_COMMAND", "")
        line = f"{os.getpid()} {command!r}: {why}\n".encode(errors="replace")
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(0, "short write")
            finally:
                os.close(fd)
        except OSError as e:
            sys.stderr.write(f"weft: cannot record a fall-back in {FALLBACK_LOG_ENV}={log}: "
                             f"{e.strerror or e}\n")
            raise SystemExit(70) from None
    return Outcome(None, stdin)


def _offer(sock: _socket.socket, stdin: bytes, deadline: float) -> bool:
    """Send the request; True once the helper accepted it and was told to go (with the
    descriptors: only now, see ``cni.helper.protocol``)."""
    ident = identity()
    cwd = _cwd()
    env = b"".join(k + b"=" + v + b"\0" for k, v in os.environb.items())
    if len(ident) > proto.MAX_IDENTITY or len(env) > proto.MAX_ENV:
        return False
    pod_fd, pod_errno = _open_pod_netns()
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        head = proto.REQUEST.pack(
            proto.MAGIC,
            proto.FLAG_POD_NETNS if pod_fd >= 0 else 0,
            pod_errno,
            umask,
            len(ident),
            len(cwd),
            len(env),
            len(stdin),
        )
        _until(sock, deadline)
        sock.sendall(head + ident + cwd + env + stdin)
        _until(sock, deadline)
        tag, _ = proto.REPLY.unpack(_recv_exact(sock, proto.REPLY.size))
        if tag != proto.ACCEPTED:
            return False
        fds = [1, 2] + ([pod_fd] if pod_fd >= 0 else [])
        _until(sock, deadline)
        # a 5-byte send on a stream socket goes whole or not at all; from here the
        # request is the helper's
        sock.sendmsg([proto.REPLY.pack(proto.GO, 0)],
                     [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, proto.rights(fds))])
        return True
    finally:
        if pod_fd >= 0:
            os.close(pod_fd)


def _wait(sock: _socket.socket) -> int:
    tag, value = proto.REPLY.unpack(_recv_exact(sock, proto.REPLY.size))
    if tag == proto.EXITED:
        return int(value)
    if tag == proto.SIGNALED and 0 < value < 65:
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
    """Stdin, up to ``MAX_STDIN`` bytes as the in-process path reads it (None when fd 0 cannot
    be read: then the in-process path reads it)."""
    chunks: list[bytes] = []
    left = proto.MAX_STDIN
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
    return cwd if len(cwd) <= proto.MAX_CWD else b""


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
