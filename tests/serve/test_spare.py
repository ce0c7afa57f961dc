"""The spare: a child forked ahead of the next request, and what the parent loads ahead."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.netns import Node
from tests.serve._support import (
    Helper,
    held_lock,
    identity_of,
    outcome,
    spawn,
    version_request,
    via,
    wait_for,
)

pytestmark = pytest.mark.root


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state == "Z"


def _one_spare(helper: Helper) -> int:
    wait_for(lambda: len(helper.spares()) == 1, what="one spare child")
    return helper.spares()[0]


def test_the_request_is_served_by_the_child_forked_before_it(node: Node, tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        spare = _one_spare(helper)
        pod = node.pod()
        conf = node.conf()
        conf["lockTimeout"] = 60
        with held_lock(node):
            proc = spawn(node, "ADD", conf, "spared", pod.path, via(helper))
            wait_for(lambda: helper.waiting_on(node.store_dir() / "lock"), what="the request")
            assert helper.children() == [spare]
            assert helper.spares() == []  # the next one is forked once no request runs
        out = outcome(proc)
        assert out.rc == 0, out
        assert _one_spare(helper) != spare
        assert [s[:2] for s in helper.served()] == [("ADD", "spared")]
        assert node.delete(pod, "spared", env=via(helper)).rc == 0
        assert node.veths() == [] and node.reservations() == {}


def test_the_spare_exits_when_the_helper_is_killed_alone(tmp_path: Path) -> None:
    helper = Helper(tmp_path).start()
    with helper:
        spare = _one_spare(helper)
        assert helper.proc is not None
        helper.proc.kill()  # KillMode=process: nothing tells the spare but EOF on its pair
        helper.proc.wait(timeout=30)
        wait_for(lambda: _gone(spare), what="the spare to exit")


def test_sigterm_ends_the_helper_and_its_spare(tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        spare = _one_spare(helper)
        assert helper.stop(signal.SIGTERM) == 0
        assert _gone(spare)  # the helper reaped it before exiting


def test_a_spare_killed_from_outside_is_replaced(tmp_path: Path) -> None:
    with Helper(tmp_path).start() as helper:
        spare = _one_spare(helper)
        os.kill(spare, signal.SIGKILL)
        helper.wait_log("the spare child ended before a request: signal=9")
        ident = identity_of(helper.plugin)
        for _ in range(3):
            code, out = version_request(helper.sock, ident)
            assert code == 0 and b"supportedVersions" in out
        assert len(helper.served()) == 3
        assert _one_spare(helper) != spare
        assert helper.zombies() == []


def _mtu(node: Node, pod_index: int, helper: Helper) -> tuple[int, str]:
    """ADD a pod through the helper: (its eth0 MTU, the helper's log line for it)."""
    pod = node.pod()
    cid = f"ahead-{pod_index}"
    out = node.add(pod, cid, env=via(helper))
    assert out.rc == 0, out
    helper.wait_log(f"container={cid} ")  # logged once reaped (after what it parsed ahead)
    line = [x for x in helper.log().splitlines() if f"container={cid} " in x][-1]
    return int(pod.links()["eth0"]["mtu"]), line


def test_a_subnet_file_parsed_ahead_is_used_only_while_it_is_that_file(
    node: Node, tmp_path: Path
) -> None:
    path = node.subnet_file
    settled = time.time() - 60
    os.utime(path, (settled, settled))
    with Helper(tmp_path).start() as helper:
        mtu, line = _mtu(node, 0, helper)
        assert mtu == 1450 and "subnet-files-read=1" in line, line  # unknown path: read
        assert helper.log().count(f"parsed {path} ahead") == 1
        mtu, line = _mtu(node, 1, helper)
        assert mtu == 1450 and "subnet-files-read" not in line, line  # parsed ahead
        # rewritten in place, same size: another mtime, so the child reads it itself
        text = path.read_text()
        path.write_text(text.replace("FLANNEL_MTU=1450", "FLANNEL_MTU=1400"))
        assert path.stat().st_size == len(text)
        mtu, line = _mtu(node, 2, helper)
        assert mtu == 1400 and "subnet-files-read=1" in line, line
        assert f"dropped {path}" in helper.log()  # too fresh to parse ahead
        mtu, line = _mtu(node, 3, helper)
        assert mtu == 1400 and "subnet-files-read=1" in line, line
        os.utime(path, (settled, settled))  # settled again: parsed ahead once read
        mtu, line = _mtu(node, 4, helper)
        assert mtu == 1400 and "subnet-files-read=1" in line, line
        assert helper.log().count(f"parsed {path} ahead") == 2
        mtu, line = _mtu(node, 5, helper)
        assert mtu == 1400 and "subnet-files-read" not in line, line
        # replaced by another file (flanneld writes a new one and renames it over the old):
        # the same mtime and size, another inode
        new = path.with_name("subnet.env.new")
        new.write_text(text)
        os.utime(new, (settled, settled))
        os.rename(new, path)
        mtu, line = _mtu(node, 6, helper)
        assert mtu == 1450 and "subnet-files-read=1" in line, line
