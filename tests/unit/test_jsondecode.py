"""The one decoder of stdin JSON: pathological input is code 6 with a message saying why,
through the decoder and through the dispatcher (ADD and VERSION), never 999; and every field
of every config shape given every wrong JSON type (tests/wrongtypes.py), through the parser."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from cni.plugin.config import parse_netconf
from cni.protocol.dispatch import Dispatcher
from cni.protocol.jsondecode import MAX_BYTES, MAX_DEPTH, decode_json, decode_object, read_bounded
from cni.protocol.spec import check_version
from cnispec.errors import CNIError, DecodeFailure, IncompatibleVersion
from ipam.subnetfile import parse_subnet_file
from tests import wrongtypes
from tests.unit.test_dispatch import ENV


def nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


def nested_objects(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


def refused(raw: bytes) -> str:
    with pytest.raises(DecodeFailure) as e:
        decode_json(raw)
    assert e.value.code == 6
    return e.value.details


# ---- what is refused, and the message says why ------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        nested(MAX_DEPTH + 1),
        nested(5000),
        nested(200_000),
        nested_objects(MAX_DEPTH + 1),
        nested_objects(3000),
        b"[" * 100_000,  # unclosed: refused before the decoder recurses into it
        b'{"a": ' + nested(4000) + b"}",
        b'{"cniVersion": "1.0.0", "x": ' + b"[" * 3000 + b"}",  # mismatched
    ],
    ids=["limit+1", "5000", "200000", "objects-limit+1", "objects-3000", "unclosed",
         "inside-object", "mismatched"],
)
def test_deep_nesting_refused(raw: bytes) -> None:
    assert f"nested deeper than {MAX_DEPTH}" in refused(raw)


def test_brackets_inside_strings_do_not_count() -> None:
    s = "[" * 10_000 + '"{\\' * 100  # quotes and backslashes: escaped in the JSON text
    assert decode_json(json.dumps({"a": s}).encode()) == {"a": s}


def test_depth_at_the_limit_and_many_shallow_brackets_accepted() -> None:
    assert decode_json(nested(MAX_DEPTH)) is not None
    assert decode_json(nested_objects(MAX_DEPTH)) is not None
    wide = {"cni.dev/valid-attachments": [{"containerID": f"c{i}", "ifname": "eth0"}
                                          for i in range(5000)]}
    assert decode_json(json.dumps(wide).encode()) == wide


def test_size_bound() -> None:
    at = b'"' + b"a" * (MAX_BYTES - 2) + b'"'
    assert len(decode_json(at)) == MAX_BYTES - 2
    assert "larger than 4 MiB" in refused(at + b" ")
    # read_bounded never reads more than one byte past the bound
    stream = io.BytesIO(b" " * (MAX_BYTES * 3))
    assert len(read_bounded(stream)) == MAX_BYTES + 1
    assert read_bounded(None) == b""


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"NaN", "NaN is not a JSON number"),
        (b'{"mtu": Infinity}', "Infinity is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b"1e999", "does not fit a 64-bit float"),
        (b"-1e400", "does not fit a 64-bit float"),
        (b"1" * 5000, "digits"),  # CPython's int conversion limit
        (b'"\\ud800"', "lone UTF-16 surrogate"),
        (b'{"name": "a\\uDFFFb"}', "lone UTF-16 surrogate"),
        (b'["\\ude00\\ud83d"]', "lone UTF-16 surrogate"),  # a pair in the wrong order
        (b'"\xed\xa0\x80"', "not UTF-8"),  # an encoded surrogate
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),  # UTF-16 with its BOM: not guessed
        (b'{"a": "\xc3"}', "not UTF-8"),
        (b"\xef\xbb\xbf\xef\xbb\xbf{}", "BOM"),  # only one BOM is skipped
        (b'{"a": 1} junk', "Extra data"),
        (b"", "Expecting value"),
    ],
)
def test_not_json_we_accept(raw: bytes, says: str) -> None:
    assert says in refused(raw)


def test_accepted_edge_cases() -> None:
    assert decode_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # RFC 8259 8.1: may ignore a BOM
    assert decode_json(b'"\\ud83d\\ude00"') == "\U0001f600"  # a valid surrogate pair
    assert decode_json(b'"\\\\ud800"') == "\\ud800"  # an escaped backslash, not an escape
    assert decode_json(b'{"a": 1, "a": 2}') == {"a": 2}  # last wins, as in Go
    assert decode_json(b"1.7976931348623157e308") == 1.7976931348623157e308
    assert decode_json(b"-0.0") == 0.0
    assert decode_json(("9" * 4000).encode()) == int("9" * 4000)


@pytest.mark.parametrize("raw", [b"[]", b"null", b"1", b'"x"', b"true"])
def test_decode_object_wants_an_object(raw: bytes) -> None:
    with pytest.raises(DecodeFailure) as e:
        decode_object(raw)
    assert e.value.code == 6 and "expected a JSON object" in e.value.details


# ---- through the dispatcher: code 6, never 999 -------------------------------------------
def run(env: dict[str, str], stdin: bytes) -> tuple[int, Any]:
    out, err = io.StringIO(), io.StringIO()

    def handlers(cmd: str) -> Any:
        return lambda req: {"cniVersion": req.conf["cniVersion"]}

    rc = Dispatcher(env.get, io.BytesIO(stdin), out, err, handlers).run()
    return rc, json.loads(out.getvalue())


@pytest.mark.parametrize(
    "raw",
    [nested(5000), b'{"cniVersion": "1.0.0", "a": ' + nested(3000) + b"}", b"NaN",
     b'{"cniVersion": "1.0.0", "mtu": 1e999}', b'{"cniVersion": "1.0.0", "n": "\\udc00"}',
     b" " * (MAX_BYTES + 1)],
    ids=["deep", "deep-in-config", "nan", "overflow", "surrogate", "oversized"],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "STATUS", "GC"])
def test_dispatcher_answers_code_6(command: str, raw: bytes) -> None:
    rc, out = run(dict(ENV, CNI_COMMAND=command), raw)
    assert rc == 1 and out["code"] == 6, out
    assert out["msg"] == "error parsing network configuration"


def test_dispatcher_env_error_still_comes_first() -> None:
    env = {k: v for k, v in ENV.items() if k != "CNI_CONTAINERID"}
    rc, out = run(env, nested(5000))
    assert rc == 1 and out["code"] == 4


def test_version_command_ignores_pathological_stdin() -> None:
    for raw in (nested(5000), b"NaN", b"\xff", b" " * (MAX_BYTES + 1)):
        rc, out = run({"CNI_COMMAND": "VERSION"}, raw)
        assert rc == 0 and out["cniVersion"] == "1.1.0" and "1.0.0" in out["supportedVersions"]


# ---- missing cniVersion -------------------------------------------------------------------
def test_missing_cni_version_says_missing() -> None:
    with pytest.raises(IncompatibleVersion) as e:
        check_version(None)
    assert e.value.code == 1 and e.value.msg == "cniVersion is missing"
    rc, out = run(ENV, b'{"name": "cbr0", "type": "weft"}')
    assert rc == 1 and out["code"] == 1 and out["msg"] == "cniVersion is missing"
    assert "1.1.0" in out["details"]


@pytest.mark.parametrize("v", [1, "", "0.2.0", [], {}])
def test_wrong_cni_version_is_code_1(v: object) -> None:
    with pytest.raises(IncompatibleVersion) as e:
        check_version(v)
    assert e.value.code == 1 and "missing" not in e.value.msg


# ---- every field of every shape, every wrong JSON type, in-process -------------------------
SUBNET = parse_subnet_file(
    "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\n"
    "FLANNEL_IPMASQ=true\n", "/run/flannel/subnet.env"
)
FILL = {wrongtypes.DATA_DIR: "/var/lib/cni/networks", wrongtypes.SUBNET_FILE: "/x/subnet.env",
        wrongtypes.LOG_FILE: "/x/weft.log"}


@pytest.mark.parametrize("shape", sorted(wrongtypes.FULL))
def test_full_configs_parse(shape: str) -> None:
    conf = wrongtypes.build(shape, ("name",), "cbr0", FILL)
    c = parse_netconf(decode_object(json.dumps(conf).encode()), SUBNET)
    assert c.prev_result is not None and c.valid_attachments is not None
    assert c.dns.nameservers == ("10.43.0.10",) and c.mtu == 1450


def test_every_field_every_wrong_type_is_refused_or_harmless() -> None:
    """Through the same decode + parse the exec path runs: a CNI error with a spec code
    naming the field, or a config (for fields weft does not read) -- never anything else."""
    seen: dict[str, int] = {}
    for shape, path, tname, value in wrongtypes.cases():
        conf = wrongtypes.build(shape, path, value, FILL)
        raw = json.dumps(conf).encode()
        case = f"{wrongtypes.case_id(shape, path)} = {tname}"
        try:
            parse_netconf(decode_object(raw), SUBNET)
            seen["accepted"] = seen.get("accepted", 0) + 1
        except CNIError as e:
            assert e.code in (1, 6, 7), f"{case}: {e.code} {e}"
            field = str(path[0]) if path[0] != "delegate" or len(path) == 1 else str(path[1])
            if e.code == 7 and path[0] not in ("prevResult",):
                assert field in str(e), f"{case}: message does not name the field: {e}"
            seen[f"code {e.code}"] = seen.get(f"code {e.code}", 0) + 1
    assert seen.get("code 7", 0) > 500, seen  # the table does reach the type checks


@pytest.mark.parametrize(
    "timeout", [10**400, 1e300, 86400.5, 0, -1], ids=["10**400", "1e300", "86400.5", "0", "-1"]
)
def test_lock_timeout_out_of_range_is_code_7(timeout: float) -> None:
    """A huge lockTimeout was an OverflowError (float() of a big int, or the lock wait)."""
    conf = wrongtypes.build("flannel", ("lockTimeout",), timeout, FILL)
    with pytest.raises(CNIError) as e:
        parse_netconf(decode_object(json.dumps(conf).encode()), SUBNET)
    assert e.value.code == 7 and "lockTimeout" in str(e.value)


def test_lock_timeout_bound_accepted() -> None:
    conf = wrongtypes.build("flannel", ("lockTimeout",), 86400, FILL)
    assert parse_netconf(decode_object(json.dumps(conf).encode()), SUBNET).lock_timeout == 86400.0


def test_the_helper_takes_as_much_stdin_as_the_in_process_path_reads() -> None:
    """So an oversized config gets the same code 6 in both modes, from the same decoder."""
    from cni.helper import protocol as helperproto

    assert helperproto.MAX_STDIN == MAX_BYTES + 1
