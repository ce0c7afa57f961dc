"""The locks of a network, and the one order they are taken in.  Boundary (file descriptors).

Two kinds of lock, both an exclusive ``flock()`` with a bounded wait (``FileLock``):

* the **network lock**, host-local's ``<network dir>/lock`` (so weft and host-local exclude
  each other): it guards the store — reserving and releasing addresses, reading and
  writing attachment records, reclaim — and creating or re-addressing the bridge.  It is
  held only around that store work, never around a veth, a pod's addresses, routes or
  sysctls, so concurrent pods' kernel work overlaps (reclaim, rare, tears a stale
  attachment down under it: ``cni.plugin.handlers.Reclaimer``);
* the **attachment lock** of one (container id, ifname),
  ``<network dir>/.weft/locks/<sha256(id\nifname)>``: held for a whole ADD, DEL or CHECK of
  that attachment, so those stay all-or-nothing and ordered (a concurrent ADD and DEL of
  one container end fully there or fully gone).

**Lock order: attachment lock, then network lock.**  A command waits for at most one
attachment lock, its own, and only while it holds no lock at all; it then takes and
releases the network lock (waiting for it) as often as it needs.  While holding the
network lock, GC and reclaim only ever *try* the attachment locks of what they tear down
(``try_acquire``, never waiting) and skip a busy one.  So nobody waits for an attachment
lock while holding anything, and no cycle of waits — no deadlock — is possible; GC may
hold several attachment locks it won that way while it waits for the network lock again.

Lock files of attachments are removed, so that they do not pile up one per pod and do
not outlive their attachment whoever deletes it: DEL unlinks its own while still holding
it, CHECK its own when weft has no record of the attachment, and the one GC path (CNI GC,
``weft gc``, ADD's reclaim: ``cni.plugin.network.collect``) those of attachments that no longer
exist (after winning them with ``try_acquire``).  Unlinking a flock()ed file races with a
process that opened the old file and is waiting on it; so an attachment lock, once
acquired, checks that its path still names the file it locked and starts over if not
(``removable``).  Whoever unlinks holds the lock, so at most one process ever holds the
file the path names.

Waiting.  First one ``flock(LOCK_EX | LOCK_NB)``: an uncontended lock costs one open, two
flocks and one close.  When the lock is busy, a helper thread (the builtin ``_thread``: no
import cost) makes the *blocking* ``flock(LOCK_EX)`` while the caller waits on a
``_thread`` lock with the timeout, so the kernel hands the lock over the moment its holder
lets go.  Polling with back-off would leave the lock idle until the next poll, and the
lock is what serialises a burst of pods starting at once; ``SIGALRM`` around a blocking
flock would take over the process's only interval timer and works in the main thread only.

On timeout the helper thread keeps the descriptor: if the blocking flock() succeeds later,
the thread sees the request was abandoned and unlocks + closes at once (a shared flag under
a mutex decides who owns the result, so exactly one side closes the descriptor and no
lock is leaked).  In the short-lived plugin process the thread simply dies at exit.

The lock is the open file description: released by ``release()`` / leaving the ``with``
block, or by the kernel when the process dies.  Not re-entrant: a second FileLock on the
same path in the same process waits for the first one (and times out).  Any OS error other
than "held by someone else" is mapped by ``cnispec.errors.os_error``; a timeout raises
:class:`cnispec.errors.TryAgainLater` (code 11) naming the path and the timeout.  Same file and
same flock() as host-local's ``disk.FileLock``, so weft and host-local exclude each other.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import fcntl
import os
import time
from typing import TYPE_CHECKING

from cnispec.errors import IOFailure, TryAgainLater, os_error

if TYPE_CHECKING:
    from types import TracebackType

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
ATTACHMENT_LOCKS_DIR = os.path.join(".weft", "locks")
# host-local creates its ``lock`` with this mode (its flock library's), so whichever plugin
# creates the file first, the store looks the same
NETWORK_LOCK_MODE = 0o750
ATTACHMENT_LOCK_MODE = 0o644


def network_lock(path: str, timeout: float) -> FileLock:
    """host-local's ``<network dir>/lock``."""
    return FileLock(path, timeout, mode=NETWORK_LOCK_MODE)


def attachment_lock(network_dir: str, key: str, timeout: float) -> FileLock:
    """``key``: the attachment's hex digest (``ipam.records.attachment_key``)."""
    return FileLock(os.path.join(network_dir, ATTACHMENT_LOCKS_DIR, key), timeout, removable=True)


def attachment_lock_keys(network_dir: str) -> list[str]:
    """The keys of every attachment lock file there is."""
    try:
        return [
            n for n in os.listdir(os.path.join(network_dir, ATTACHMENT_LOCKS_DIR)) if n[0] != "."
        ]
    except FileNotFoundError:
        return []
    except OSError as e:
        raise os_error(e, "listing attachment locks", network_dir) from None


class FileLock:
    __slots__ = ("path", "timeout", "removable", "mode", "_fd")

    def __init__(
        self, path: str, timeout: float, removable: bool = False, mode: int = ATTACHMENT_LOCK_MODE
    ) -> None:
        self.path = path
        self.timeout = max(0.0, float(timeout))
        self.removable = removable  # its file may be unlinked by whoever holds it
        self.mode = mode  # of the file when this lock creates it
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        try:
            return os.open(self.path, _OPEN_FLAGS, self.mode)
        except FileNotFoundError:
            parent = os.path.dirname(self.path)
            if not parent:
                raise IOFailure("opening lock file failed", f"{self.path}: no such file") from None
            try:
                os.makedirs(parent, 0o755, exist_ok=True)
                return os.open(self.path, _OPEN_FLAGS, self.mode)
            except OSError as e:
                raise os_error(e, "opening lock file", self.path) from None
        except OSError as e:
            raise os_error(e, "opening lock file", self.path) from None

    def acquire(self) -> None:
        if self._fd is not None:
            raise IOFailure("lock already held", self.path)
        deadline = time.monotonic() + self.timeout
        while True:
            fd = self._open()
            owned = [True]  # set to False by _wait when a helper thread takes the fd over
            try:
                self._wait(fd, owned, max(0.0, deadline - time.monotonic()))
                if self._still_named(fd):
                    self._fd = fd
                    return
            except BaseException:
                if owned[0]:
                    os.close(fd)
                raise
            os.close(fd)  # its holder removed it meanwhile: lock the file the path names now
            if time.monotonic() >= deadline:
                raise self._timed_out()

    def try_acquire(self) -> bool:
        """Lock without waiting; False when someone holds it (or is removing it)."""
        if self._fd is not None:
            raise IOFailure("lock already held", self.path)
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if self._still_named(fd):
                self._fd = fd
                return True
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise os_error(e, "locking", self.path) from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return False

    def _still_named(self, fd: int) -> bool:
        """Does the path still name the file ``fd`` locked? (Always, unless ``removable``.)"""
        if not self.removable:
            return True
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise os_error(e, "checking lock file", self.path) from None
        fst = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)

    def remove(self) -> None:
        """Unlink the lock file, then release it. Only while holding it, and only for a
        ``removable`` lock: whoever waits on the old file starts over (see the module)."""
        if self._fd is None or not self.removable:
            raise IOFailure("removing a lock file that is not held or not removable", self.path)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise os_error(e, "removing lock file", self.path) from None
        finally:
            self.release()

    def _wait(self, fd: int, owned: list[bool], timeout: float) -> None:
        """Lock ``fd`` within ``timeout``; clears ``owned[0]`` if the helper keeps fd."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise os_error(e, "locking", self.path) from None
        if timeout <= 0:
            raise self._timed_out()

        done = _thread.allocate_lock()
        done.acquire()
        mutex = _thread.allocate_lock()
        # state[0]: None while the helper waits, then True (locked) or the OSError;
        # state[1]: True once the caller has given up (the helper then owns fd).
        state: list[object] = [None, False]

        def helper() -> None:
            result: object = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                result = e
            with mutex:
                abandoned = state[1]
                state[0] = result
            if abandoned:
                with contextlib.suppress(OSError):
                    if result is True:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
            else:
                done.release()

        _thread.start_new_thread(helper, ())
        try:
            done.acquire(timeout=timeout)
        finally:
            with mutex:
                result = state[0]
                if result is None:
                    state[1] = True  # abandon: the helper closes fd when flock() returns
                    owned[0] = False
        if result is None:
            raise self._timed_out()
        if isinstance(result, OSError):
            raise os_error(result, "locking", self.path)

    def _timed_out(self) -> TryAgainLater:
        return TryAgainLater(
            f"timed out after {self.timeout:g}s waiting for lock {self.path}",
            "another weft/host-local process holds it",
        )

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as e:
            raise os_error(e, "unlocking", self.path) from None
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
