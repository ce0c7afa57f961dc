from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnispec.errors import IO_FAILURE, TRY_AGAIN_LATER, IOFailure, TryAgainLater
from ipam.lock import FileLock, attachment_lock, network_lock

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
hold = float(sys.argv[2])
if hold < 0:
    sys.stdin.read()
else:
    time.sleep(hold)
"""


def hold_lock(path: str, seconds: float = -1) -> subprocess.Popen[str]:
    """A separate process holding flock(LOCK_EX) until stdin closes (or for ``seconds``)."""
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path, str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "locked"
    return p


@pytest.fixture
def lock_path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "net" / "lock")


def test_acquire_creates_parent_and_file(lock_path: str) -> None:
    with FileLock(lock_path, 1.0) as lk:
        assert lk.locked
        assert os.path.isfile(lock_path)
        assert os.stat(lock_path).st_mode & 0o777 == 0o644
    assert not lk.locked


def test_bounded_wait_raises_try_again_later(lock_path: str) -> None:
    os.makedirs(os.path.dirname(lock_path))
    holder = hold_lock(lock_path)
    try:
        t = time.monotonic()
        with pytest.raises(TryAgainLater) as ei, FileLock(lock_path, 0.3):
            pytest.fail("lock must not be acquired while another process holds it")
        waited = time.monotonic() - t
    finally:
        holder.communicate("")
    assert ei.value.code == TRY_AGAIN_LATER
    assert lock_path in str(ei.value) and "0.3s" in str(ei.value)
    assert waited >= 0.3  # it did wait its bound before giving up
    # released by the holder's exit: acquirable again
    with FileLock(lock_path, 0.5) as lk:
        assert lk.locked


def test_waits_and_gets_lock_when_holder_releases(lock_path: str) -> None:
    os.makedirs(os.path.dirname(lock_path))
    holder = hold_lock(lock_path, 0.2)
    try:
        t = time.monotonic()
        with FileLock(lock_path, 5.0) as lk:
            waited = time.monotonic() - t
            assert lk.locked
    finally:
        holder.wait()
    assert waited > 0.1  # it waited for the holder (and got the lock before its own bound)


def test_abandoned_wait_leaks_neither_lock_nor_fd(lock_path: str) -> None:
    os.makedirs(os.path.dirname(lock_path))
    fds_before = len(os.listdir("/proc/self/fd"))
    holder = hold_lock(lock_path)
    try:
        with pytest.raises(TryAgainLater), FileLock(lock_path, 0.1):
            pytest.fail("unreachable")
        assert len(os.listdir("/proc/self/fd")) == fds_before + 3  # helper's fd + 2 pipes
    finally:
        holder.communicate("")  # holder exits; the abandoned helper gets, drops and closes
    deadline = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) != fds_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) == fds_before
    with FileLock(lock_path, 0) as lk:  # zero timeout: must be free right now
        assert lk.locked


def test_hand_over_is_prompt(lock_path: str) -> None:
    """The waiter blocks in flock(): it gets the lock as soon as the holder lets go."""
    os.makedirs(os.path.dirname(lock_path))
    holder = hold_lock(lock_path)
    assert holder.stdin is not None
    lk = FileLock(lock_path, 10.0)
    got: list[float] = []

    def waiter() -> None:
        lk.acquire()
        got.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    assert not got
    released = time.monotonic()
    holder.stdin.close()  # holder exits -> kernel releases its flock
    holder.wait()
    t.join()  # bounded by the waiter's own 10 s: acquire() raises then instead
    assert got and got[0] >= released and lk.locked
    lk.release()


def test_zero_timeout_is_a_single_try(lock_path: str) -> None:
    os.makedirs(os.path.dirname(lock_path))
    holder = hold_lock(lock_path)
    try:
        with pytest.raises(TryAgainLater), FileLock(lock_path, 0):
            pytest.fail("unreachable")
    finally:
        holder.communicate("")


def test_acquire_after_release_and_not_reentrant(lock_path: str) -> None:
    lk = FileLock(lock_path, 0.05)
    lk.acquire()
    with pytest.raises(TryAgainLater):
        FileLock(lock_path, 0.05).acquire()  # same process, other open file: waits
    with pytest.raises(IOFailure, match="already held"):
        lk.acquire()
    lk.release()
    lk.release()  # idempotent
    lk.acquire()
    assert lk.locked
    lk.release()


def test_other_errors_are_io_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(IOFailure) as ei:
        FileLock(str(tmp_path / "file" / "lock"), 0.1).acquire()  # parent is a file
    assert ei.value.code == IO_FAILURE
    (tmp_path / "dir").mkdir()
    with pytest.raises(IOFailure):
        FileLock(str(tmp_path / "dir"), 0.1).acquire()  # a directory: O_RDWR fails


def test_repeated_acquire_release_keeps_no_fd(lock_path: str) -> None:
    """How fast is ``make bench``'s business; here: many cycles hold nothing afterwards."""
    with FileLock(lock_path, 1.0):
        pass
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(200):
        with FileLock(lock_path, 1.0) as lk:
            assert lk.locked
        assert not lk.locked
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_try_acquire_never_waits(lock_path: str) -> None:
    os.makedirs(os.path.dirname(lock_path))
    holder = hold_lock(lock_path)
    try:
        assert FileLock(lock_path, 60, removable=True).try_acquire() is False
    finally:
        holder.communicate("")
    lk = FileLock(lock_path, 60, removable=True)
    assert lk.try_acquire() is True and lk.locked
    with pytest.raises(IOFailure, match="already held"):
        lk.try_acquire()
    lk.release()


def test_remove_only_while_held(lock_path: str) -> None:
    lk = FileLock(lock_path, 1, removable=True)
    with pytest.raises(IOFailure):
        lk.remove()
    lk.acquire()
    lk.remove()
    assert not lk.locked and not os.path.exists(lock_path)
    with FileLock(lock_path, 1) as plain, pytest.raises(IOFailure):
        plain.remove()  # the network lock's file is host-local's: never removed


def test_waiter_on_a_removed_lock_file_starts_over(lock_path: str) -> None:
    """Unlinking a flock()ed file while someone waits on it: the waiter is granted the old,
    unlinked file; it must notice and lock the file the path names now, or two processes
    would each hold "the" lock (one the old file, one a new one)."""
    first = FileLock(lock_path, 10, removable=True)
    first.acquire()
    old_ino = os.stat(lock_path).st_ino
    second = FileLock(lock_path, 10, removable=True)
    t = threading.Thread(target=second.acquire)
    t.start()
    # wait until the second one is blocked in flock() on the old file (/proc/locks "->")
    for _ in range(500):
        with open("/proc/locks") as f:
            if any("->" in ln and f":{old_ino} " in ln for ln in f):
                break
        time.sleep(0.01)
    else:
        pytest.fail("the waiter never blocked on the lock file")
    first.remove()
    t.join(10)
    assert second.locked
    fd = second._fd
    assert fd is not None
    assert os.fstat(fd).st_ino == os.stat(lock_path).st_ino  # it holds what the path names
    assert FileLock(lock_path, 0, removable=True).try_acquire() is False  # and excludes
    second.release()


def test_network_lock_file_has_host_locals_mode(tmp_path: Path) -> None:
    """host-local creates ``lock`` 0750 (its flock library's mode): so does weft, so the
    store looks the same whichever plugin made it. Attachment locks are plain files."""
    old = os.umask(0o022)
    try:
        with network_lock(str(tmp_path / "lock"), 1):
            pass
        with attachment_lock(str(tmp_path), "k" * 64, 1) as lock:
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "lock").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o644
