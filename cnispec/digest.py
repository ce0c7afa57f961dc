"""sha256 and sha512 hex digests without hashlib.

hashlib loads OpenSSL (~4.5 ms per exec, and libcrypto in the frozen bundle); CPython's
builtin ``_sha256`` module (3.11; ``_sha2`` from 3.12) costs ~1 ms. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _constructor() -> Callable[[bytes], Any]:
    try:
        import _sha256  # type: ignore[import-not-found]

        return _sha256.sha256  # type: ignore[no-any-return]
    except ImportError:  # pragma: no cover - Python >= 3.12
        try:
            import _sha2  # type: ignore[import-not-found]

            return _sha2.sha256  # type: ignore[no-any-return]
        except ImportError:
            import hashlib

            return hashlib.sha256


_sha256 = _constructor()


def sha256_hex(data: bytes) -> str:
    return str(_sha256(data).hexdigest())


def sha512_hex(data: bytes) -> str:
    """Only the masquerade chain names need it (the reference's naming), so it loads then."""
    try:
        import _sha512  # type: ignore[import-not-found]

        return str(_sha512.sha512(data).hexdigest())
    except ImportError:  # pragma: no cover - Python >= 3.12
        try:
            import _sha2  # type: ignore[import-not-found,unused-ignore]

            return str(_sha2.sha512(data).hexdigest())
        except ImportError:
            import hashlib

            return hashlib.sha512(data).hexdigest()
