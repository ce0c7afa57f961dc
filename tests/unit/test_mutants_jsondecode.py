"""The stdin decoder's refusals written out exactly (msg and details), and the nesting
limit at its edges: brackets inside strings do not count, a depth of exactly 64 is read,
65 is refused, whichever way the brackets are arranged."""

from __future__ import annotations

import pytest

from cni.protocol.jsondecode import MAX_DEPTH, _too_deep, decode_json, decode_object
from cnispec.errors import DecodeFailure

MSG = "error parsing network configuration"


def refusal(raw: bytes) -> tuple[str, str]:
    with pytest.raises(DecodeFailure) as ei:
        decode_object(raw)
    return ei.value.msg, ei.value.details


def test_refusals_word_for_word() -> None:
    assert refusal(b"[1]") == (MSG, "expected a JSON object")
    assert refusal(b'{"a": "\\ud800"}') == (
        MSG, "a string holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF)")
    assert refusal(b"[" * 65 + b"]" * 65) == (MSG, "JSON nested deeper than 64 levels")
    msg, details = refusal(b'{"a": "\xff"}')
    assert msg == MSG and details.startswith("not UTF-8: 'utf-8' codec can't decode byte 0xff")
    big = "1" * 400 + "e400"
    assert refusal(f'{{"a": {big}.5}}'.encode())[1].startswith(
        "number " + "1" * 40 + " does not fit a 64-bit float")
    assert refusal(b'{"a": NaN}')[1].startswith("NaN is not a JSON number")


def test_a_valid_surrogate_pair_is_one_character() -> None:
    assert decode_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert decode_json(b'{"a": "\xc3\xa9"}') == {"a": "\u00e9"}


def test_depth_edges() -> None:
    assert MAX_DEPTH == 64
    exactly = b"[" * 64 + b"]" * 64
    assert decode_json(exactly) is not None and not _too_deep(exactly)
    assert _too_deep(b"[" * 65 + b"]" * 65)
    # more brackets than the limit in total, but never deeper than 2: read
    wide = b"[" + b"[]," * 100 + b"[]]"
    assert not _too_deep(wide) and len(decode_json(wide)) == 101
    # brackets inside strings are text
    texty = b'{"a": "' + b"[" * 200 + b'"}'
    assert not _too_deep(texty) and decode_json(texty) == {"a": "[" * 200}
    # objects count as levels as arrays do, mixed
    mixed = b'{"a":' * 32 + b"[" * 33 + b"]" * 33 + b"}" * 32
    assert _too_deep(mixed)
    assert not _too_deep(b'{"a":' * 32 + b"[" * 32 + b"]" * 32 + b"}" * 32)
    # 64 levels, then a sibling subtree of 64: still 64 deep
    twice = b"[" + b"[" * 63 + b"]" * 63 + b"," + b"[" * 63 + b"]" * 63 + b"]"
    assert not _too_deep(twice)
    # unbalanced: closers first, then more openers than the limit
    assert _too_deep(b"]]" + b"[" * 65)
    assert not _too_deep(b"]" * 70 + b"[" * 10 + b"[]" * 30)
