"""The dispatcher with injected env/stdin/stdout: error mapping, versions, never a traceback."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from cni.protocol.dispatch import Dispatcher, Request
from cnispec.errors import CNIError, RangeExhausted

CONF = {"cniVersion": "0.4.0", "name": "cbr0", "type": "weft"}
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/p",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/x",
}


def run(env: dict[str, str], stdin: bytes, handler: Any = None) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()

    def handlers(cmd: str) -> Any:
        return handler or (lambda req: {"cniVersion": req.conf["cniVersion"], "called": cmd})

    rc = Dispatcher(env.get, io.BytesIO(stdin), out, err, handlers).run()
    text = out.getvalue()
    return rc, json.loads(text) if text.strip() else None, err.getvalue()


def test_success_prints_handler_result() -> None:
    rc, out, _ = run(ENV, json.dumps(CONF).encode())
    assert rc == 0 and out == {"cniVersion": "0.4.0", "called": "ADD"}


def test_version_command() -> None:
    rc, out, _ = run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"0.3.1"}')
    assert rc == 0 and out["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize(
    ("env", "stdin", "code"),
    [
        ({**ENV, "CNI_IFNAME": "x" * 20}, json.dumps(CONF).encode(), 4),
        (ENV, b"{not json", 6),
        (ENV, json.dumps({**CONF, "cniVersion": "9.9.9"}).encode(), 1),
        ({**ENV, "CNI_COMMAND": "CHECK"}, json.dumps({**CONF, "cniVersion": "0.3.1"}).encode(), 1),
        ({**ENV, "CNI_COMMAND": "GC"}, json.dumps({**CONF, "cniVersion": "1.0.0"}).encode(), 1),
        ({**ENV, "CNI_COMMAND": "STATUS"}, json.dumps({**CONF, "cniVersion": "1.0.0"}).encode(), 1),
    ],
)
def test_errors_are_cni_json_with_spec_codes(env: dict[str, str], stdin: bytes, code: int) -> None:
    rc, out, _ = run(env, stdin)
    assert rc == 1
    assert out["code"] == code and out["msg"] and "cniVersion" in out


def test_cni_error_from_handler_is_not_rewrapped() -> None:
    def boom(req: Request) -> None:
        raise RangeExhausted("no IP addresses available in range 10.42.0.2-10.42.0.254")

    rc, out, _ = run(ENV, json.dumps(CONF).encode(), boom)
    assert rc == 1 and out == {
        "cniVersion": "0.4.0",
        "code": 100,
        "msg": "no IP addresses available in range 10.42.0.2-10.42.0.254",
    }


def test_unexpected_exception_is_999_with_traceback_on_stderr_only() -> None:
    def bug(req: Request) -> None:
        raise ZeroDivisionError("oops")

    rc, out, err = run(ENV, json.dumps(CONF).encode(), bug)
    assert rc == 1 and out["code"] == 999 and "ZeroDivisionError" in out["details"]
    assert "Traceback" in err and "Traceback" not in json.dumps(out)


def test_error_carries_details() -> None:
    e = CNIError("m", "d", code=5)
    assert e.to_dict("1.0.0") == {"cniVersion": "1.0.0", "code": 5, "msg": "m", "details": "d"}
