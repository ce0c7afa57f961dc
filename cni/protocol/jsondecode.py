"""stdin → JSON value, refusing what would crash or stall a decoder (one rule for all).

Every decode of the runtime's stdin goes through ``decode_json``; anything that is not
a JSON text we accept is ``DecodeFailure`` (code 6) with a message that says why:

- **size**: at most ``MAX_BYTES`` (4 MiB). A plugin config, even with a chain's
  ``prevResult`` or a GC ``cni.dev/valid-attachments`` list for thousands of pods, is
  tens of KiB; the bound keeps a runaway writer from making us buffer without limit.
  ``read_bounded`` reads one byte more than the bound, so an oversized stdin is refused
  without reading the rest.
- **nesting**: at most ``MAX_DEPTH`` (64) levels of ``[``/``{``. The deepest config CNI
  defines is four or five levels (``prevResult.ips[].…``, ``runtimeConfig.portMappings[]``);
  CPython's decoder recurses once per level and raises RecursionError near 1000, and every
  walk over the value afterwards (validation, repr in messages) recurses too. 64 leaves
  room for any real config and keeps every such walk far from the interpreter's limit.
- **encoding**: UTF-8 (RFC 8259 §8.1), an optional leading UTF-8 byte order mark ignored
  (§8.1 allows a parser to). No UTF-16/32 guessing, no encoded surrogates.
- **numbers**: ``NaN``/``Infinity`` are not JSON and a number that overflows a 64-bit
  float is refused, as Go's encoding/json (libcni's) refuses both. Integers beyond
  CPython's 4300-digit conversion limit are refused by the decoder itself.
- **strings**: a ``\\uD800``-style escape that is not half of a surrogate pair decodes to
  a lone surrogate, which no file name, interface name or log line can carry: refused.
- duplicate keys: the last one wins, as in Go's encoding/json.

The pre-checks are cheap on a normal config: two ``bytes.count`` calls decide that a config
with at most 64 brackets cannot nest deeper than 64; only more brackets pay for a scan
(C-speed passes over the brackets outside strings, at most 65 of them; no Python loop per
byte), so even 4 MiB of brackets is refused or accepted in a fraction of a second.
"""

from __future__ import annotations

import json
import math
import re
from typing import IO, Any

from cnispec.errors import DecodeFailure

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64

_MSG = "error parsing network configuration"
_BOM = b"\xef\xbb\xbf"
# a JSON string literal (no control characters needed: only brackets outside strings count)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_RUN_TOO_DEEP = b"[" * (MAX_DEPTH + 1)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def read_bounded(stream: IO[bytes] | None) -> bytes:
    """Up to MAX_BYTES + 1 bytes of ``stream`` (enough for decode_json to refuse more)."""
    if stream is None:
        return b""
    return stream.read(MAX_BYTES + 1)


def _too_deep(raw: bytes) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    # brackets outside strings, one kind (a mismatch is the decoder's to report); each pass
    # drops the innermost pairs, so a balanced text of depth D is gone after D passes
    brackets = _STRING.sub(b"", raw).translate(_ONE_KIND).translate(None, _NOT_BRACKETS)
    passes = 0
    while passes <= MAX_DEPTH:
        if _RUN_TOO_DEEP in brackets:  # a run of openers alone is too deep: no more passes
            return True
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break
        brackets, passes = shorter, passes + 1
    # what is left is "]]…[[…" (unbalanced): count its openers as further levels
    return passes + brackets.count(b"[") > MAX_DEPTH


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    f = float(text)
    if math.isinf(f):
        raise ValueError(f"number {text[:40]} does not fit a 64-bit float")
    return f


def decode_json(raw: bytes) -> Any:
    """The JSON value in ``raw`` (any JSON type); DecodeFailure (code 6) saying why not."""
    if len(raw) > MAX_BYTES:
        raise DecodeFailure(_MSG, f"stdin is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeFailure(_MSG, f"not UTF-8: {e}") from None
    if _too_deep(raw):
        raise DecodeFailure(_MSG, f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except RecursionError:  # unreachable after _too_deep; kept so it can never be a 999
        raise DecodeFailure(_MSG, f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise DecodeFailure(_MSG, str(e)) from None
    if _SURROGATE_ESCAPE.search(raw):
        try:  # a valid pair decodes to one code point; only a lone half fails to encode
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeFailure(
                _MSG, "a string holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF)"
            ) from None
    return value


def decode_object(raw: bytes) -> dict[str, Any]:
    """decode_json, and the value must be a JSON object (a network configuration)."""
    value = decode_json(raw)
    if not isinstance(value, dict):
        raise DecodeFailure(_MSG, "expected a JSON object")
    return value
