"""Log lines name their container and pod, carry an ISO-8601 UTC time, reach logFile even
when written before the config was known, and an unwritable logFile warns once."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from cni.protocol.dispatch import Dispatcher
from cni.protocol.log import Log, pod_context, timestamp

LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z weft\[\d+\] (debug|info|warning|error) "
)


def test_timestamp_is_iso8601_utc() -> None:
    assert timestamp(0.25) == "1970-01-01T00:00:00.250Z"


def test_pod_context_is_lenient() -> None:
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;junk"
    assert pod_context(args) == ("kube-system", "coredns-1")
    assert pod_context("") == ("", "")


def test_lines_carry_container_and_pod(tmp_path: Path) -> None:
    err = io.StringIO()
    log = Log(err)
    log.set_context("ADD", "abc123", "default", "web")
    log.configure(str(tmp_path / "log"), "info")
    log.info("hello")
    log.warning("careful")
    lines = (tmp_path / "log").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert LINE.match(line), line
        assert " ADD container=abc123 pod=default/web: " in line
    assert "careful" in err.getvalue() and "hello" not in err.getvalue()


def test_lines_before_configure_reach_the_file_by_level(tmp_path: Path) -> None:
    log = Log(io.StringIO())
    log.set_context("DEL", "c1")
    log.debug("early debug")
    log.error("early error")
    log.configure(str(tmp_path / "log"), "info")
    text = (tmp_path / "log").read_text()
    assert "early error" in text and "early debug" not in text
    assert "container=c1" in text and "pod=" not in text


def test_unwritable_log_file_warns_once(tmp_path: Path) -> None:
    err = io.StringIO()
    log = Log(err)
    log.configure(str(tmp_path / "no" / "such" / "dir" / "log"), "debug")
    for i in range(5):
        log.info(f"line {i}")
    assert err.getvalue().count("cannot write logFile") == 1


def test_error_before_the_config_is_parsed_reaches_log_file(tmp_path: Path) -> None:
    """A bad CNI_ARGS fails before the config is parsed; the config's logFile gets it."""
    logf = tmp_path / "weft.log"
    conf = {"cniVersion": "1.0.0", "name": "n", "logFile": str(logf)}
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "cid1",
        "CNI_NETNS": "/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/x",
        "CNI_ARGS": "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1;broken",
    }
    out, err = io.StringIO(), io.StringIO()
    rc = Dispatcher(
        env.get, io.BytesIO(json.dumps(conf).encode()), out, err, lambda c: lambda r: None
    ).run()
    assert rc == 1 and json.loads(out.getvalue())["code"] == 4
    text = logf.read_text()
    assert "invalid CNI_ARGS" in text and "container=cid1 pod=ns1/p1" in text
