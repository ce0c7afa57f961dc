"""VERSION without the dispatcher: ``cni.protocol.version.answer`` answers only what the dispatcher
answers, byte for byte, and loads neither json, re, typing nor the dispatcher."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cni.helper import protocol as helperproto
from cni.protocol import spec, version
from cni.protocol.dispatch import Dispatcher
from cni.protocol.jsondecode import MAX_BYTES

ROOT = Path(__file__).resolve().parents[2]


def _dispatcher(raw: bytes, cni_args: str) -> tuple[int, str]:
    env = {"CNI_COMMAND": "VERSION", "CNI_ARGS": cni_args}
    out, err = io.StringIO(), io.StringIO()
    rc = Dispatcher(env.get, io.BytesIO(raw), out, err, {}).run()
    return rc, out.getvalue()


def test_the_versions_and_bounds_are_the_dispatchers() -> None:
    assert spec.SUPPORTED_VERSIONS is version.SUPPORTED_VERSIONS
    assert spec.CURRENT_VERSION == version.CURRENT_VERSION
    assert version.MAX_READ == MAX_BYTES + 1 == helperproto.MAX_STDIN


def test_the_line_is_json_dumps() -> None:
    for v in version.SUPPORTED_VERSIONS:
        assert version.line(v) == json.dumps(
            {"cniVersion": v, "supportedVersions": list(version.SUPPORTED_VERSIONS)}
        )


COMMON = [
    b"",
    b"\n",
    b'{"cniVersion":"0.4.0"}',
    b'{"cniVersion": "1.0.0", "name": "cbr0", "type": "weft"}\n',
    b'{"cniVersion": "9.9.9"}',
    b'{"cniVersion": 1}',
    b"[]",
    b'"1.0.0"',
]


def test_the_common_stdins_are_answered_and_as_the_dispatcher_does() -> None:
    for raw in COMMON:
        got = version.answer(raw, "K8S_POD_NAME=a;IgnoreUnknown=1")
        assert got is not None, raw
        assert _dispatcher(raw, "K8S_POD_NAME=a;IgnoreUnknown=1") == (0, got + "\n"), raw


def test_what_it_cannot_be_sure_of_is_left_to_the_dispatcher() -> None:
    for raw in [
        b"\xef\xbb\xbf{}",  # BOM
        b'{"a": "\\u00e9"}',  # an escape (lone surrogates are refused by the decoder)
        b"[" * 65 + b"]" * 65,  # past the nesting bound
        b'{"cniVersion": "0.4.0", "x": NaN}',
        b'{"x": 1e999}',
        b"not json",
        b"{} {}",
        b"\xff",
        b"{" + b" " * MAX_BYTES + b"}",  # past the size bound
    ]:
        assert version.answer(raw, "") is None, raw[:40]
    assert version.answer(b"", "bad") is None  # code 4 from the dispatcher
    assert version.answer(b"", "=x") is None


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=10,
)
_CONFIGS = st.builds(
    lambda v, extra: json.dumps({**extra, "cniVersion": v}, allow_nan=True),
    st.sampled_from([*version.SUPPORTED_VERSIONS, "0.1.0", ""]) | st.integers(),
    st.dictionaries(st.text(max_size=4), _VALUES, max_size=4),
).map(str.encode)
_STDINS = _CONFIGS | st.binary(max_size=40) | _VALUES.map(
    lambda v: json.dumps(v, allow_nan=True).encode()
)
_ARGS = st.sampled_from(["", "IgnoreUnknown=1", "a=b;;c=", "bad", "=x", "K8S_POD_NAME=p;x"])


@settings(max_examples=400, deadline=None)
@given(raw=_STDINS, space=st.sampled_from([b"", b" ", b"\n\t", b"\x0c"]), cni_args=_ARGS)
def test_every_answer_is_the_dispatchers(raw: bytes, space: bytes, cni_args: str) -> None:
    raw = space + raw + space
    got = version.answer(raw, cni_args)
    if got is not None:
        assert _dispatcher(raw, cni_args) == (0, got + "\n")


_PROBE = """
import io, json, os, sys
sys.path.insert(0, sys.argv[1])
os.environ["CNI_COMMAND"] = "VERSION"
sys.stdout = io.StringIO()
before = set(sys.modules)
import cni.__main__
rc = cni.__main__.run(io.BytesIO(b'{"cniVersion": "0.4.0"}'))
new = sorted(set(sys.modules) - before)
out = sys.stdout.getvalue()
sys.stdout = sys.__stdout__
print(json.dumps([rc, out, new]))
"""


def test_version_in_process_loads_only_what_it_needs() -> None:
    # -I: what the interpreter loads at start-up and no more (json is the probe's own)
    out = subprocess.run([sys.executable, "-I", "-c", _PROBE, str(ROOT)], capture_output=True,
                         text=True, check=True, timeout=60)
    rc, printed, new = json.loads(out.stdout)
    assert rc == 0 and json.loads(printed)["cniVersion"] == "0.4.0"
    assert set(new) <= {"cni", "cni.__main__", "cni.protocol", "cni.protocol.version", "_json",
                        "_struct", "_socket"}, new
