"""Small-file I/O shared by the two stores (host-local's reservations and weft's records).

Boundary module. A file is written to ``.tmp-<pid>-<random>`` (O_EXCL), optionally
fsynced, and renamed or linked into place, so a reader never sees it half-written. Temp
files of writers that died are skipped by listings and removed once older than
``STALE_TMP_SECONDS`` (a live writer renames its own within microseconds).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable

from cnispec.errors import CNIError, os_error

TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 60.0
MAX_FILE_BYTES = 4096  # a reservation or a record is tiny: anything bigger is not ours

O_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def io_error(what: str, path: str, e: OSError) -> CNIError:
    return os_error(e, what, path)


def read_small(path: str, problem: Callable[[str, str], None]) -> bytes | None:
    """Content of ``path`` (at most MAX_FILE_BYTES), None when absent. A symlink or an
    oversized file is reported through ``problem(path, why)`` and read as absent."""
    try:
        fd = os.open(path, O_READ)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            problem(path, "is a symlink, ignored")
            return None
        raise io_error("reading", path, e) from None
    try:
        data = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as e:
        raise io_error("reading", path, e) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        problem(path, f"larger than {MAX_FILE_BYTES} bytes, ignored")
        return None
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_tmp(directory: str, data: bytes, sync: bool) -> str:
    """A new temp file in ``directory`` holding ``data``; its path."""
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}")
    try:
        fd = os.open(tmp, O_NEW, 0o644)
    except OSError as e:
        raise io_error("creating temporary file", tmp, e) from None
    try:
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    except OSError as e:
        os.close(fd)
        unlink_quiet(tmp)
        raise io_error("writing", tmp, e) from None
    os.close(fd)
    return tmp


def replace_file(directory: str, name: str, data: bytes, sync: bool) -> None:
    """Atomically (re)write ``directory/name``."""
    tmp = write_tmp(directory, data, sync)
    final = os.path.join(directory, name)
    try:
        os.replace(tmp, final)
    except OSError as e:
        unlink_quiet(tmp)
        raise io_error("renaming into place", final, e) from None


def overwrite(path: str, data: bytes) -> None:
    """Write ``path`` in place (created if absent, truncated first), as host-local writes
    its ``last_reserved_ip``: only for a file whose torn content is harmless to readers."""
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644
        )
    except OSError as e:
        raise io_error("writing", path, e) from None
    try:
        _write_all(fd, data)
    except OSError as e:
        raise io_error("writing", path, e) from None
    finally:
        os.close(fd)


def sweep_tmp(entry: os.DirEntry[str]) -> None:
    """Remove a temp file left by a writer that died (only once it is clearly old)."""
    try:
        if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS:
            os.unlink(entry.path)
    except OSError:
        pass  # opportunistic; someone else may have removed it


def remove(path: str, what: str) -> bool:
    """Unlink: True if removed, False if already gone; any other failure is IOFailure."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise io_error(what, path, e) from None
    return True


def unlink_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
