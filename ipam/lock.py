"""FileLock: an exclusive ``flock()`` with a bounded wait.  Boundary (file descriptors).

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
same path in the same process waits for the first one (and times out).  Any error other
than "held by someone else" raises :class:`cnispec.errors.IOFailure`; a timeout raises
:class:`cnispec.errors.TryAgainLater` (code 11) naming the path and the timeout.  Same file and
same flock() as host-local's ``disk.FileLock``, so weft and host-local exclude each other.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import fcntl
import os
from typing import TYPE_CHECKING

from cnispec.errors import IOFailure, TryAgainLater, os_error

if TYPE_CHECKING:
    from types import TracebackType

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


class FileLock:
    __slots__ = ("path", "timeout", "_fd")

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = max(0.0, float(timeout))
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        try:
            return os.open(self.path, _OPEN_FLAGS, 0o644)
        except FileNotFoundError:
            parent = os.path.dirname(self.path)
            if not parent:
                raise IOFailure("opening lock file failed", f"{self.path}: no such file") from None
            try:
                os.makedirs(parent, 0o755, exist_ok=True)
                return os.open(self.path, _OPEN_FLAGS, 0o644)
            except OSError as e:
                raise os_error(e, "opening lock file", self.path) from None
        except OSError as e:
            raise os_error(e, "opening lock file", self.path) from None

    def acquire(self) -> None:
        if self._fd is not None:
            raise IOFailure("lock already held", self.path)
        fd = self._open()
        owned = [True]  # set to False by _wait when a helper thread takes the fd over
        try:
            self._wait(fd, owned)
        except BaseException:
            if owned[0]:
                os.close(fd)
            raise
        self._fd = fd

    def _wait(self, fd: int, owned: list[bool]) -> None:
        """Lock ``fd`` within ``timeout``; clears ``owned[0]`` if the helper keeps fd."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise os_error(e, "locking", self.path) from None
        if self.timeout <= 0:
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
            done.acquire(timeout=self.timeout)
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
