"""CNI errors: every exception the plugin raises on purpose carries its spec code.

The top level (``cni.protocol.dispatch``) prints ``CNIError.to_json()`` on stdout and exits 1; it
wraps only exceptions that are *not* CNIError as code 999 (as libcni's ``skel`` does). OS errors
become CNI errors here, by errno (``os_error`` / ``os_errors``), so 999 is left for bugs.
"""

from __future__ import annotations

import errno
from typing import Any

# Codes from the CNI spec (SPEC.md, "Error") ...
INCOMPATIBLE_VERSION = 1
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
# ... and ours (100+ are plugin specific).
RANGE_EXHAUSTED = 100
NETLINK_FAILURE = 101
CHECK_FAILED = 102
MASQ_FAILURE = 104
DUPLICATE_ALLOCATION = 105
INTERNAL = 999


class CNIError(Exception):
    """An error with a CNI code; ``msg`` is short, ``details`` carries the specifics."""

    code: int = INTERNAL

    def __init__(self, msg: str, details: str = "", *, code: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


class IncompatibleVersion(CNIError):
    code = INCOMPATIBLE_VERSION


class InvalidEnv(CNIError):
    code = INVALID_ENV


class IOFailure(CNIError):
    code = IO_FAILURE


class DecodeFailure(CNIError):
    code = DECODE_FAILURE


class InvalidConfig(CNIError):
    code = INVALID_CONFIG


class TryAgainLater(CNIError):
    code = TRY_AGAIN_LATER


class NotAvailable(CNIError):
    code = NOT_AVAILABLE


class RangeExhausted(CNIError):
    code = RANGE_EXHAUSTED


class NetlinkFailure(CNIError):
    code = NETLINK_FAILURE


class CheckFailed(CNIError):
    code = CHECK_FAILED


class MasqFailure(CNIError):
    code = MASQ_FAILURE


class DuplicateAllocation(CNIError):
    code = DUPLICATE_ALLOCATION


# ---- the one boundary for OS errors ------------------------------------------------------
# errnos that say "not now": the same call may well succeed on a retry (the runtime retries
# a failed ADD), so they are code 11, not an I/O failure.
TRY_AGAIN_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EWOULDBLOCK,
        errno.EBUSY,
        errno.EINTR,
        errno.ENOBUFS,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
        errno.ETIMEDOUT,
    }
)
# errnos that say "it is not there (any more)": for a netns, code 4 (a bad CNI_NETNS)
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH})


def os_error(
    e: OSError,
    what: str,
    where: str = "",
    gone: type[CNIError] | None = None,
    other: type[CNIError] = IOFailure,
) -> CNIError:
    """The CNI error for an OS error, by errno: try-again (11); ``gone`` when the caller
    says what a missing object means; else ``other``, an I/O failure (5) unless the caller
    knows better (a netns path that cannot be opened is a bad CNI_NETNS, 4)."""
    name = errno.errorcode.get(e.errno or 0, str(e.errno))
    place = where or (str(e.filename) if e.filename is not None else "")
    details = f"{place + ': ' if place else ''}{e.strerror or e} ({name})"
    if e.errno in TRY_AGAIN_ERRNOS:
        return TryAgainLater(f"{what} failed, try again", details)
    if gone is not None and e.errno in GONE_ERRNOS:
        return gone(f"{what} failed: not found", details)
    return other(f"{what} failed", details)


class os_errors:  # noqa: N801 - used like a function: ``with os_errors("..."):``
    """``with os_errors("opening X"):`` raises ``os_error(...)`` for any OSError of the
    body. Put around every OS call on the exec path, so that an OSError never reaches the
    dispatcher (where it would be code 999, which means a bug in weft)."""

    __slots__ = ("what", "where", "gone")

    def __init__(self, what: str, where: str = "", gone: type[CNIError] | None = None) -> None:
        self.what = what
        self.where = where
        self.gone = gone

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, OSError):
            raise os_error(exc, self.what, self.where, self.gone) from None
