"""Network namespaces: open one without creating it, and enter it briefly.

Boundary module. ``setns(2)`` applies to the calling thread; the plugin is single-threaded,
and ``entered`` always returns to the original namespace (or aborts the process, since
carrying on in the wrong namespace would configure the wrong network).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from cnispec.errors import CNIError, InvalidEnv, os_error, os_errors
from ipam.records import NetnsId

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsGone(InvalidEnv):
    """CNI_NETNS does not exist (any more)."""


# CNI_NETNS as the caller opened it, when the caller is a ``weft serve`` client in another
# mount namespace: path -> open fd, or path -> the errno its open failed with.
_adopted: dict[str, int] = {}
_adopted_errno: dict[str, int] = {}


def adopt(path: str, fd: int, err: int = 0) -> None:
    """Make ``open_netns(path)`` answer with ``fd`` (or fail with ``err``) from now on."""
    if fd >= 0:
        _adopted[path] = fd
    else:
        _adopted_errno[path] = err


def _open(path: str) -> int:
    if path in _adopted:
        return os.dup(_adopted[path])
    if path in _adopted_errno:
        err = _adopted_errno[path]
        raise OSError(err, os.strerror(err), path)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def open_netns(path: str) -> int:
    """An O_RDONLY fd on the netns at ``path``; never creates anything.

    Raises ``NetnsGone`` when the path does not exist and ``InvalidEnv`` when it is not a
    network namespace (checked by entering it once on first use, see ``entered``)."""
    if not path.startswith("/"):
        raise InvalidEnv("CNI_NETNS must be an absolute path", path)
    try:
        return _open(path)
    except FileNotFoundError as e:
        raise NetnsGone("network namespace not found", f"{path}: {e.strerror}") from None
    except OSError as e:
        raise os_error(e, "opening network namespace", path, NetnsGone, InvalidEnv) from None


def identity_of_fd(fd: int) -> NetnsId:
    """The identity of the namespace ``fd`` is open on (what ADD records)."""
    with os_errors("reading the network namespace's identity"):
        st = os.fstat(fd)
    return NetnsId(st.st_dev, st.st_ino)


def identity_at(path: str) -> NetnsId | None:
    """The identity of the namespace ``path`` names now; None when it names nothing that
    can be looked at (as ``os.path.exists``: any failure to stat it)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return NetnsId(st.st_dev, st.st_ino)


def enter(fd: int, nstype: int) -> None:
    """setns(2) into the namespace ``fd`` of kind ``nstype``; OSError with its errno."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def setns(fd: int, what: str) -> None:
    try:
        enter(fd, CLONE_NEWNET)
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise InvalidEnv("not a network namespace", what) from None
        raise os_error(e, "entering network namespace", what, NetnsGone) from None


@contextmanager
def entered(fd: int, what: str) -> Iterator[None]:
    """Run the body inside the netns ``fd``, then return to the current one."""
    with os_errors("opening the current network namespace"):
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, what)
        try:
            yield
        finally:
            try:
                setns(home, "original network namespace")
            except CNIError:  # pragma: no cover - cannot happen short of a kernel bug
                os._exit(70)
    finally:
        os.close(home)
