"""CNI errors: every exception the plugin raises on purpose carries its spec code.

The top level (``cni.dispatch``) prints ``CNIError.to_json()`` on stdout and exits 1; it wraps
only exceptions that are *not* CNIError as code 999 (as libcni's ``skel`` does).
"""

from __future__ import annotations

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
