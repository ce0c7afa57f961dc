"""The ``weft serve`` helper's protocol: where it listens, what goes over the wire, whom it
serves. The one place for the client (``cni.helper.client``), the helper (``cni.helper.server``) and
``weft status`` (``cni.operator.commands``).

The exec path imports this before anything else, so it imports only modules that have no
Python source (``_socket``, ``_struct``) and ``os`` (loaded by the interpreter's start-up):
``tests/unit/test_helperproto.py`` holds that.

One unix stream connection per request; integers in network order:

  client -> helper  ``REQUEST`` header, then identity, cwd, environment (``k=v\\0`` ...) and
                    stdin bytes; no file descriptor (see below)
  helper -> client  ``A`` accepted (anything else, or a closed connection: run in-process).
                    Before it, the helper's child has checked the peer (root only), entered
                    the client's mount and network namespaces (found through the peer's pid)
                    and made sure its own code is at the same path there
  client -> helper  ``G`` go, carrying as SCM_RIGHTS stdout, stderr and, when CNI_NETNS
                    could be opened (``FLAG_POD_NETNS``), it: from here on the request is the
                    helper's and is never run here
  helper -> client  ``X`` + exit code, or ``S`` + signal number (the request's process was
                    killed by that signal, and so is this one)

No descriptor travels before ``A``: a descriptor queued on a connection that no live child
reads (a stopped helper, a full backlog, a peer that never reads) would hold the runtime's
stdout pipe open after the plugin has exited, and the runtime waits for EOF on it. Once
``A`` came, a child is known to be reading. The two-step accept keeps "never run a request
twice" even when the client gives up waiting for the ``A``: a child that never receives the
``G`` runs nothing.
"""

import _socket
import _struct
import os

DEFAULT_SOCKET = "/run/weft/weft.sock"
SOCKET_ENV = "WEFT_SOCKET"  # a path, or DISABLED
DISABLED = "off"

MAGIC = b"WFT2"
# magic, flags, CNI_NETNS open errno, umask, identity length, cwd length, env length,
# stdin length
REQUEST = _struct.Struct("!4sHiHHHII")
FLAG_POD_NETNS = 1
REPLY = _struct.Struct("!ci")  # tag, value (exit code, signal number, or 0)
ACCEPTED, REFUSED, GO, EXITED, SIGNALED = b"A", b"R", b"G", b"X", b"S"
GO_FDS = 2  # the G carries stdout and stderr, then the pod's netns when FLAG_POD_NETNS
MAX_FDS = GO_FDS + 1

MAX_IDENTITY = 256
MAX_CWD = 4096
MAX_ENV = 256 * 1024
# jsondecode.MAX_BYTES + 1 (a unit test holds them together): as much as the in-process
# path reads, so an oversized config gets the same code 6 from the helper's child
MAX_STDIN = 4 * 1024 * 1024 + 1

_INT = _struct.Struct("i")
_UCRED = _struct.Struct("3i")  # struct ucred: pid, uid, gid
SERVED_UID = 0


def rights(fds: list[int]) -> bytes:
    """The SCM_RIGHTS payload carrying ``fds``."""
    return b"".join(_INT.pack(fd) for fd in fds)


def fds_in(blob: bytes) -> list[int]:
    """The descriptors in a received SCM_RIGHTS payload."""
    usable = len(blob) - len(blob) % _INT.size
    return [_INT.unpack_from(blob, i)[0] for i in range(0, usable, _INT.size)]


def socket_path() -> str | None:
    """The helper's socket as the exec path and ``weft status`` see it (None: disabled)."""
    path = os.environ.get(SOCKET_ENV, DEFAULT_SOCKET)
    return None if path in ("", DISABLED) else path


def peer_credentials(sock: _socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected unix socket, as the
    kernel recorded it at connect (or listen) time; pid 0 when it is outside our pid
    namespace."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def served(uid: int) -> bool:
    """Whether the helper serves a peer of this uid: only root's requests configure the
    node's network."""
    return uid == SERVED_UID
