"""``weft serve``: a per-node helper that runs CNI requests in pre-imported, forked children.

Usage: ``weft serve [--socket PATH] [--max-children N]`` (default ``/run/weft/weft.sock``;
under systemd socket activation, the socket it is given; at most 256 requests at once, the
next ones wait in the listen backlog and, past the client's accept deadline, run
in-process). Runs in the foreground; SIGTERM (or SIGINT) stops accepting, lets the accepted
requests finish, and exits 0.

The parent never parses what a client sends: it checks the peer's uid (SO_PEERCRED, root
only), hands the connection to a child it forked ahead (the spare, waiting on a socket pair:
the request pays no fork; EOF there, when the parent stops or dies, ends it before it reads
any request), and watches; it forks the next spare once no request runs, or at once when
another connection is waiting. The child reads the bounded handshake
(``cni.helper.protocol``) under a deadline, enters the client's mount namespace, root and
network namespace (so every path in the request means what it means to the runtime),
accepts, takes the GO with the client's stdout/stderr and CNI_NETNS, makes the request's
environment, umask and cwd its own, and runs exactly the code of the in-process path
(``cni.__main__.run``), with the boot id and the subnet files the parent loaded ahead
(``Ahead``: used only while the file is the one parsed). The child writes the exit status
to the client itself, so a request accepted before the parent is killed still completes.
The parent SIGKILLs a child whose client went away (a runtime kills a plugin on timeout:
the request dies with it), tells the client when its child was killed by a signal, reaps
every child, and logs one line per request to stderr. A client of another build is refused
(it runs in-process); when the bundle on disk is no longer the one this helper runs, the
helper drains and exits so that systemd starts the new one.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from typing import NamedTuple

from cni.helper import client as handoff
from cni.helper import protocol as proto
from cni.linux import netns
from cni.plugin.config import DEFAULT_SUBNET_FILE
from cnispec.errors import CNIError
from ipam.subnetfile import SubnetFile, parse_subnet_file

HANDSHAKE_DEADLINE = 2.0  # seconds for a child to receive the whole request (and the GO)
MAX_CHILDREN = 256  # beyond that, connections wait in the listen backlog
SD_LISTEN_FDS_START = 3
_DONE = "done"
_SUBNET = "subnet "  # a child's report: a subnet file it read itself (the parent parses it)
_PEER = struct.Struct("i")  # the client's pid, with the connection handed to the spare
SPARE_NAME = b"weft-spare"  # the process name of the child waiting for a request
REQUEST_NAME = b"weft-request"  # and of a child serving one
AHEAD_MAX_FILES = 8  # subnet files parsed ahead (one per network on a node)
AHEAD_MAX_BYTES = 64 * 1024
SETTLED = 2.0  # seconds a file must be unchanged before it is parsed ahead
USAGE = "usage: weft serve [--socket PATH] [--max-children N]\n"


class Refused(Exception):
    """A handshake the child will not serve (the client then runs the request itself)."""


class Ahead:
    """What the parent loads before a request arrives, for every child it forks: the boot
    id (read once) and the subnet files requests named, parsed. A child uses a parsed file
    only while the path, as the child sees it in the client's namespaces, still has the
    (st_dev, st_ino, st_mtime_ns, st_size) of what was parsed; otherwise it reads the file
    itself, exactly as the exec path does, and reports the path so the parent parses it
    for the next child. The parent opens only what a child reported, non-blocking, and keeps
    only a small regular file: a path in a config never stalls the helper."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[tuple[int, int, int, int], SubnetFile]] = {}
        self.missed: list[str] = []  # in a child: the paths it had to read itself

    def install(self) -> None:
        from cni.plugin import network

        network.preparsed_subnet = self.lookup
        with contextlib.suppress(CNIError):
            network.known_boot_id = network.boot_id()

    def lookup(self, path: str) -> SubnetFile | None:
        entry = self.files.get(path)
        if entry is not None:
            with contextlib.suppress(OSError):
                if _file_key(os.stat(path)) == entry[0]:
                    return entry[1]
        if path not in self.missed:
            self.missed.append(path)
        return None

    def refresh(self, path: str) -> bool:
        """Parse ``path`` unless its entry is current; True when the entry changed. Only an
        absolute path to a small regular file that has not changed for ``SETTLED`` seconds
        is kept (a later change then has a later mtime, even on a coarse clock)."""
        if not path.startswith("/"):
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            return self.files.pop(path, None) is not None
        try:
            st = os.fstat(fd)
            key = _file_key(st)
            entry = self.files.get(path)
            if entry is not None and entry[0] == key:
                return False
            data = b""
            if (
                stat.S_ISREG(st.st_mode)
                and st.st_size <= AHEAD_MAX_BYTES
                and time.time() - st.st_mtime >= SETTLED
            ):
                data = os.read(fd, AHEAD_MAX_BYTES + 1)
            if len(data) != st.st_size or not data or _file_key(os.fstat(fd)) != key:
                return self.files.pop(path, None) is not None
        except OSError:
            return self.files.pop(path, None) is not None
        finally:
            os.close(fd)
        from cni.plugin.network import as_text

        try:  # read as read_subnet_file reads it
            parsed = parse_subnet_file(as_text(data), path)
        except (ValueError, CNIError):  # the child reads it and reports what is wrong
            return self.files.pop(path, None) is not None
        if path not in self.files and len(self.files) >= AHEAD_MAX_FILES:
            del self.files[next(iter(self.files))]
        self.files[path] = (key, parsed)
        return True


def _file_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class Spare:
    """A child forked ahead of the next request, waiting on ``hand`` (its end of a socket
    pair) for a connection: the request pays no fork. EOF there (the parent closed it, or
    died) ends it before it ever reads a request."""

    __slots__ = ("pid", "hand", "report")

    def __init__(self, pid: int, hand: socket.socket, report: int) -> None:
        self.pid = pid
        self.hand = hand
        self.report = report


class Child:
    """A forked request: its client connection, and the pipe it reports on (``request ...``
    once it took the request, ``done`` right before it sends the exit status)."""

    __slots__ = ("pid", "conn", "report", "started", "said")

    def __init__(self, pid: int, conn: socket.socket, report: int) -> None:
        self.pid = pid
        self.conn = conn
        self.report = report
        self.started = time.monotonic()
        self.said = b""

    def listen(self) -> str:
        """What the child has reported so far (non-blocking)."""
        with contextlib.suppress(OSError):
            while chunk := os.read(self.report, 4096):
                self.said += chunk
        return self.said.decode(errors="replace")


def main(argv: list[str]) -> int:
    path = proto.DEFAULT_SOCKET
    cap = MAX_CHILDREN
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--socket" and args:
            path = args.pop(0)
        elif a.startswith("--socket="):
            path = a.split("=", 1)[1]
        elif a == "--max-children" and args and args[0].isdigit() and int(args[0]) > 0:
            cap = int(args.pop(0))
        elif a in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        else:
            sys.stderr.write(USAGE)
            return 2
    _preload()
    try:
        listener, owned = _listener(path)
    except OSError as e:
        sys.stderr.write(f"weft serve: cannot listen on {path}: {e.strerror or e}\n")
        return 1
    return Server(listener, owned, handoff.identity(), cap).run()


def _preload() -> None:
    """Import, once, everything a request may need, so that no child pays for it."""
    import json  # noqa: F401
    import subprocess  # noqa: F401
    import traceback  # noqa: F401

    import cni.__main__  # noqa: F401
    import cni.linux.masq  # noqa: F401
    import cni.plugin.config  # noqa: F401
    import cni.plugin.handlers  # noqa: F401
    import cni.protocol.dispatch  # noqa: F401
    import cni.protocol.version  # noqa: F401


def _listener(path: str) -> tuple[socket.socket, str | None]:
    """The systemd-activated socket if we were given one, else our own at ``path`` (dir
    0700, socket 0600); the second item is the path to unlink on exit."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
        os.set_inheritable(sock.fileno(), False)
        return sock, None
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o700, exist_ok=True)
    if _serving(path):
        raise OSError(errno.EADDRINUSE, "another weft serve answers there")
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # left by a helper that died
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock, path


def _serving(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _log(msg: str) -> None:
    try:
        sys.stderr.write(f"weft serve[{os.getpid()}]: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Server:
    def __init__(
        self, listener: socket.socket, owned: str | None, ident: bytes, cap: int = MAX_CHILDREN
    ) -> None:
        self.listener: socket.socket | None = listener
        self.cap = cap
        self.owned = owned
        self.owned_ino = os.stat(owned).st_ino if owned else 0
        self.ident = ident
        self.children: dict[int, Child] = {}
        self.by_conn: dict[int, int] = {}  # conn fd -> child pid
        self.ahead = Ahead()
        self.spare: Spare | None = None
        self.leaving: set[int] = set()  # spares told to go (or killed), not yet reaped
        # fork spares ahead; off from a spare's death before a request to its next hand-over,
        # so that spares that keep dying cannot make the helper fork in a loop
        self.eager = True
        self.stopping = False
        self.served = 0
        self.poll = select.poll()

    # ----------------------------------------------------------------------- parent

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self.wake = (wake_r, wake_w)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGCHLD, lambda signo, frame: None)
        self.poll.register(wake_r, select.POLLIN)
        assert self.listener is not None
        self.poll.register(self.listener.fileno(), select.POLLIN)
        import gc

        self.ahead.install()
        self.ahead.refresh(DEFAULT_SUBNET_FILE)
        gc.collect()
        gc.freeze()  # forked children then share the pre-imported heap instead of copying it
        self._next_spare()
        where = self.owned or f"fd {SD_LISTEN_FDS_START} (systemd)"
        _log(f"serving on {where}, build {self.ident.decode(errors='replace')}")
        while True:
            self._reap()
            if self.stopping and self.listener is not None:
                self._close_listener()
            if self.stopping and self.spare is not None:
                self._drop_spare()  # EOF on its hand: it exits without a request
            if self.stopping and not self.children and not self.leaving:
                break
            if not self.children and self.eager:
                self._next_spare()  # idle: the next request pays no fork
            self._listen_only_below_cap()
            try:
                events = self.poll.poll(1000)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            for fd, _ in events:
                if fd == wake_r:
                    _drain(wake_r)
                elif self.listener is not None and fd == self.listener.fileno():
                    self._accept()
                elif fd in self.by_conn:
                    self._hangup(fd)
        for signo in (signal.SIGTERM, signal.SIGINT):  # a repeated stop must not turn exit 0
            signal.signal(signo, signal.SIG_IGN)  # into death by signal while exiting
        _log(f"stopped after {self.served} requests")
        return 0

    def _stop(self, signo: int, frame: object) -> None:
        self.stopping = True

    def _close_listener(self) -> None:
        assert self.listener is not None
        fd = self.listener.fileno()
        with contextlib.suppress(KeyError):
            self.poll.unregister(fd)
        if self.owned:
            with contextlib.suppress(OSError):
                if os.stat(self.owned).st_ino == self.owned_ino:  # not a successor's socket
                    os.unlink(self.owned)
        self.listener.close()
        self.listener = None

    def _listen_only_below_cap(self) -> None:
        if self.listener is None:
            return
        fd = self.listener.fileno()
        self.poll.register(fd, select.POLLIN if len(self.children) < self.cap else 0)

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                _log(f"accept failed: {e}")
                time.sleep(0.05)  # EMFILE and friends: do not spin
            return
        try:
            peer, uid, _gid = proto.peer_credentials(conn)
            if not proto.served(uid):
                _log(f"refused peer pid={peer} uid={uid}: only root is served")
                conn.close()
                return
            self._fork(conn, peer)
        except OSError as e:
            _log(f"cannot serve a connection: {e}")
            conn.close()

    def _fork(self, conn: socket.socket, peer: int) -> None:
        """Hand the connection to the waiting spare (forked now if there is none), then fork
        the next spare while this request runs."""
        spare = self.spare or self._fork_spare()
        self.spare = None
        try:
            socket.send_fds(spare.hand, [_PEER.pack(peer)], [conn.fileno()])
        except OSError:  # it died since: a fresh one takes the connection
            self._lost_spare(spare)
            spare = self._fork_spare()
            try:
                socket.send_fds(spare.hand, [_PEER.pack(peer)], [conn.fileno()])
            except OSError:
                self._lost_spare(spare)
                raise
        spare.hand.close()
        self.eager = True
        self.children[spare.pid] = Child(spare.pid, conn, spare.report)
        self.by_conn[conn.fileno()] = spare.pid
        self.poll.register(conn.fileno(), select.POLLRDHUP)
        if self._connection_waiting():
            self._next_spare()  # a burst: the next connection takes it right away
        # otherwise the next spare is forked once no request runs (see run): forking now
        # would take CPU from the request just handed over

    def _connection_waiting(self) -> bool:
        if self.listener is None:
            return False
        probe = select.poll()
        probe.register(self.listener.fileno(), select.POLLIN)
        return bool(probe.poll(0))

    def _next_spare(self) -> None:
        if self.spare is not None or self.stopping:
            return
        try:
            self.spare = self._fork_spare()
        except OSError as e:  # the next accept tries again
            _log(f"cannot fork a spare child: {e}")

    def _fork_spare(self) -> Spare:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        report_r, report_w = os.pipe()
        os.set_blocking(report_r, False)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            for end in (ours, theirs):
                end.close()
            for fd in (report_r, report_w):
                os.close(fd)
            raise
        if pid == 0:  # pragma: no cover - measured through the tests' clients
            code = 70
            try:
                ours.close()
                os.close(report_r)
                code = self._spare(theirs, report_w)
            except BaseException:  # noqa: BLE001 - a child never returns into the loop
                code = 70
            finally:
                os._exit(code)
        theirs.close()
        os.close(report_w)
        return Spare(pid, ours, report_r)

    def _parse_ahead(self, paths: list[str]) -> None:
        """Parse the files a child had to read itself; a spare forked before that is
        replaced, so that the next request finds them parsed."""
        changed = [path for path in paths if self.ahead.refresh(path)]
        for path in changed:
            _log(f"parsed {path} ahead" if path in self.ahead.files else f"dropped {path}")
        if changed and self.spare is not None and not self.stopping:
            self._drop_spare()
            self._next_spare()

    def _drop_spare(self) -> None:
        """Close the spare's hand: it exits; the helper exits only once it is reaped."""
        assert self.spare is not None
        self.spare.hand.close()
        os.close(self.spare.report)
        self.leaving.add(self.spare.pid)
        self.spare = None

    def _lost_spare(self, spare: Spare) -> None:
        spare.hand.close()
        os.close(spare.report)
        self.leaving.add(spare.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(spare.pid, signal.SIGKILL)

    def _hangup(self, fd: int) -> None:
        """The client went away: its request goes with it, as a killed plugin would."""
        pid = self.by_conn.pop(fd)
        self.poll.unregister(fd)
        if _DONE in self.children[pid].listen().splitlines():
            return  # it has sent the exit status and is on its way out
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                if self.spare is not None and pid == self.spare.pid:
                    # killed from outside while waiting: the next accept forks another
                    if not self.stopping:
                        _log(f"the spare child ended before a request: {_status(status)}")
                    self._drop_spare()
                    self.eager = False
                self.leaving.discard(pid)
                continue
            self._finish(child, status)

    def _finish(self, child: Child, status: int) -> None:
        fd = child.conn.fileno()
        client_there = self.by_conn.pop(fd, None) is not None
        if client_there:
            self.poll.unregister(fd)
        said = child.listen().splitlines()
        what = said[0] if said else ""
        read = [line[len(_SUBNET):] for line in said if line.startswith(_SUBNET)]
        os.close(child.report)
        took = (time.monotonic() - child.started) * 1000.0
        if os.WIFSIGNALED(status):
            signo = os.WTERMSIG(status)
            if client_there:
                # the child shares the connection (and its blocking mode): never wait
                with contextlib.suppress(OSError):
                    child.conn.send(
                        proto.REPLY.pack(proto.SIGNALED, signo), socket.MSG_DONTWAIT
                    )
            result = f"signal={signo}" + ("" if client_there else " (client gone)")
        else:
            result = _status(status)
        child.conn.close()
        if what.startswith("request "):
            self.served += 1
            extra = f" subnet-files-read={len(read)}" if read else ""
            _log(f"{what} {result} ms={took:.1f}{extra}")
        elif what.startswith("stale"):
            _log("the bundle on disk is another build: draining, then exiting")
            self.stopping = True
        elif what:
            _log(f"{what} ms={took:.1f}")
        else:
            _log(f"connection closed before a request ms={took:.1f}")
        self._parse_ahead(read)  # for the next requests, once this one is told and logged

    # ----------------------------------------------------------------------- child

    def _spare(self, hand: socket.socket, report: int) -> int:
        """The spare's life: leave the parent's state behind, wait for one connection on
        ``hand``, serve it. Nothing read before the hand-over is about the request: what the
        request needs is read after it, in the client's namespaces."""
        signal.set_wakeup_fd(-1)
        for signo in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signo, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in self.wake:
            os.close(fd)
        if self.listener is not None:
            self.listener.close()
        for other in self.children.values():
            other.conn.close()
            os.close(other.report)
        _name(SPARE_NAME)
        try:
            msg, fds, _flags, _addr = socket.recv_fds(hand, _PEER.size, 1)
        except OSError:
            return 0
        hand.close()
        for fd in fds:
            os.set_inheritable(fd, False)
        if len(msg) != _PEER.size or len(fds) != 1:  # EOF: the helper stops or is gone
            for fd in fds:
                os.close(fd)
            return 0
        _name(REQUEST_NAME)
        (peer,) = _PEER.unpack(msg)
        return self._child(socket.socket(fileno=fds[0]), peer, report)

    def _child(self, conn: socket.socket, peer: int, report: int) -> int:
        try:
            req = _receive(conn, peer, self.ident)
        except Refused as e:
            _report(report, f"refused handshake: {e}")
            _refuse(conn)
            return 0
        except _OtherBuild as e:
            stale = handoff.identity() != self.ident
            _report(report, "stale" if stale else f"refused a client of another build: {e}")
            _refuse(conn)
            return 0
        _report(report, req.describe())
        return _execute(conn, req, report, self.ahead)


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal={os.WTERMSIG(status)}"
    return f"exit={os.WEXITSTATUS(status)}"


def _name(comm: bytes) -> None:
    """The process name ``ps`` shows (and the tests tell a spare by)."""
    with contextlib.suppress(OSError):
        fd = os.open("/proc/thread-self/comm", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, comm)
        finally:
            os.close(fd)


class _OtherBuild(Exception):
    pass


class _Request(NamedTuple):
    fds: list[int]  # stdout, stderr[, pod netns]
    pod_netns_errno: int
    umask: int
    cwd: bytes
    env: dict[bytes, bytes]
    stdin: bytes
    peer: int  # the client's pid

    def describe(self) -> str:
        """One report line; the values are not validated yet, so only printable, no spaces."""

        def get(k: bytes) -> str:
            text = self.env.get(k, b"").decode(errors="replace")[:80]
            return "".join(c if c.isprintable() and not c.isspace() else "?" for c in text) or "-"

        return (
            f"request command={get(b'CNI_COMMAND')} container={get(b'CNI_CONTAINERID')}"
            f" ifname={get(b'CNI_IFNAME')} pid={self.peer}"
        )


def _receive(conn: socket.socket, peer: int, ident: bytes) -> _Request:
    """Read and check the handshake (bounded sizes, deadline), enter the client's
    namespaces, accept, and take the GO with its descriptors."""
    deadline = time.monotonic() + HANDSHAKE_DEADLINE
    conn.settimeout(HANDSHAKE_DEADLINE)
    fds: list[int] = []
    try:
        data = _recv_no_fds(conn, proto.REQUEST.size, deadline)
        if not data:
            raise Refused("closed before the request")
        magic, fl, netns_errno, umask, n_id, n_cwd, n_env, n_stdin = proto.REQUEST.unpack(data)
        if magic != proto.MAGIC:
            raise Refused("bad magic")
        if (
            n_id > proto.MAX_IDENTITY
            or n_cwd > proto.MAX_CWD
            or n_env > proto.MAX_ENV
            or n_stdin > proto.MAX_STDIN
        ):
            raise Refused(f"too large (identity {n_id}, cwd {n_cwd}, env {n_env}, stdin {n_stdin})")
        client_ident = _recv_no_fds(conn, n_id, deadline)
        cwd = _recv_no_fds(conn, n_cwd, deadline)
        raw_env = _recv_no_fds(conn, n_env, deadline)
        stdin = _recv_no_fds(conn, n_stdin, deadline)
        if client_ident != ident:
            raise _OtherBuild(client_ident.decode(errors="replace")[:80])
        env = _parse_env(raw_env)
        _enter_client(conn, peer)  # before accepting: what fails here runs in-process
        conn.sendall(proto.REPLY.pack(proto.ACCEPTED, 0))
        tag, fds = _recv_go(conn, deadline)
        if tag != proto.GO:
            raise Refused("no go")
        want = proto.GO_FDS + (1 if fl & proto.FLAG_POD_NETNS else 0)
        if len(fds) != want:
            raise Refused(f"{len(fds)} file descriptors with the go, expected {want}")
        for fd in fds:
            os.set_inheritable(fd, False)
        return _Request(fds, netns_errno, umask & 0o777, cwd, env, stdin, peer)
    except (OSError, ValueError, EOFError) as e:
        for fd in fds:
            os.close(fd)
        raise Refused(f"{type(e).__name__}: {e}") from None
    except (Refused, _OtherBuild):
        for fd in fds:
            os.close(fd)
        raise


def _enter_client(conn: socket.socket, peer: int) -> None:
    """Join the client's mount namespace and root, then its network namespace, found through
    its pid: config paths, the subnet file, the store, CNI_NETNS and the request's PATH then
    mean what they mean to the runtime. Refused when the client is gone (its pid may name
    another process by now), when a namespace cannot be entered, or when weft's own code is
    not at the same place there (a late import would load something else, or nothing)."""
    if peer <= 0:
        raise Refused("the client's pid is not visible from the helper")
    code = _code_root()
    ours = os.stat(code)
    opened: list[int] = []
    try:
        for what in ("ns/mnt", "root", "ns/net"):
            opened.append(os.open(f"/proc/{peer}/{what}", os.O_RDONLY | os.O_CLOEXEC))
        mnt, root, net = opened
        # the client waits for our answer: while its end is open its pid is still its own,
        # so what was just opened is the client's
        alive = select.poll()
        alive.register(conn.fileno(), select.POLLRDHUP)
        if alive.poll(0):
            raise Refused("the client went away before the accept")
        # Entering the namespace the child is already in changes nothing, and the kernel
        # refuses it to a process whose file-system state is shared (qemu-user's threads).
        if not _same_file(os.fstat(mnt), os.stat("/proc/self/ns/mnt")):
            try:
                netns.enter(mnt, netns.CLONE_NEWNS)
            except OSError as e:
                raise Refused(
                    f"cannot enter the client's mount namespace: {e.strerror}"
                ) from None
        os.fchdir(root)
        os.chroot(".")
        try:
            theirs = os.stat(code)
        except OSError as e:
            raise Refused(f"weft's own files are not at {code} for the client: {e}") from None
        if not _same_file(theirs, ours):
            raise Refused(f"weft's own files at {code} are other files for the client")
        try:
            netns.setns(net, "the client's network namespace")
        except CNIError as e:
            raise Refused(str(e)) from None
    finally:
        for fd in opened:
            os.close(fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _code_root() -> str:
    """Where this process loads its code from: the bundle, or the source tree."""
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        return str(bundle)
    return handoff.source_root()


def _recv_no_fds(conn: socket.socket, n: int, deadline: float) -> bytes:
    """``n`` bytes of the request (b"" when the connection closes before the first byte of
    the header); a descriptor sent with them (before the accept, against the protocol) is
    closed and refuses the request."""
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("handshake deadline passed")
        conn.settimeout(left)
        data, anc, flags, _ = conn.recvmsg(
            min(n - len(buf), 1 << 20), socket.CMSG_SPACE(proto.MAX_FDS * 4)
        )
        sent = [fd for level, kind, blob in anc
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                for fd in proto.fds_in(blob)]
        for fd in sent:
            os.close(fd)
        if sent or flags & socket.MSG_CTRUNC:
            raise Refused("file descriptors sent before the accept")
        if not data:
            if not buf and n == proto.REQUEST.size:
                return b""
            raise EOFError("connection closed mid-request")
        buf += data
    return bytes(buf)


def _recv_go(conn: socket.socket, deadline: float) -> tuple[bytes, list[int]]:
    """The client's answer to the accept and the descriptors that came with it."""
    buf = bytearray()
    fds: list[int] = []
    try:
        while len(buf) < proto.REPLY.size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no go before the handshake deadline")
            conn.settimeout(left)
            data, anc, flags, _ = conn.recvmsg(
                proto.REPLY.size - len(buf), socket.CMSG_SPACE(proto.MAX_FDS * 4)
            )
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += proto.fds_in(blob)
            if flags & socket.MSG_CTRUNC:
                raise Refused("too many file descriptors with the go")
            if not data:
                raise EOFError("connection closed before the go")
            buf += data
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    tag, _ = proto.REPLY.unpack(bytes(buf))
    return tag, fds


def _parse_env(raw: bytes) -> dict[bytes, bytes]:
    if raw and not raw.endswith(b"\0"):
        raise ValueError("environment not NUL-terminated")
    env: dict[bytes, bytes] = {}
    for item in raw.split(b"\0")[:-1]:
        key, sep, value = item.partition(b"=")
        if not sep or not key:
            raise ValueError("malformed environment entry")
        env[key] = value
    return env


def _execute(conn: socket.socket, req: _Request, report: int, ahead: Ahead) -> int:
    """Become the request's process, run it as the in-process path does, report the status."""

    from cni.__main__ import run

    stdout, stderr = req.fds[:2]  # already in the client's namespaces (_receive)
    os.environ.clear()
    for k, v in req.env.items():
        os.environb[k] = v
    pod = os.environ.get("CNI_NETNS") or ""
    pod_fd = req.fds[2] if len(req.fds) > 2 else -1
    if pod.startswith("/") and (pod_fd >= 0 or req.pod_netns_errno):
        netns.adopt(pod, pod_fd, req.pod_netns_errno)  # as the client found it
    os.umask(req.umask)
    if req.cwd:
        with contextlib.suppress(OSError):
            os.chdir(req.cwd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in (null, stdout, stderr):
        os.close(fd)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
    )
    conn.settimeout(None)
    code = 70
    try:
        code = run(io.BytesIO(req.stdin))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        # the runtime reads stdout to EOF: no copy of it may outlive the status
        os.dup2(0, 1)
        os.dup2(0, 2)
        for path in ahead.missed:
            if "\n" not in path:
                _report(report, _SUBNET + path)
        _report(report, _DONE)
        with contextlib.suppress(OSError):
            conn.sendall(proto.REPLY.pack(proto.EXITED, code))
    return code & 0xFF


def _refuse(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(proto.REPLY.pack(proto.REFUSED, 0))


def _report(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, line.encode(errors="replace")[:512] + b"\n")


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
