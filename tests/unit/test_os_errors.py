"""The one boundary for OS errors: each OS call on the exec path, made to fail with each
errno the boundary maps, answers with the CNI code that errno means (never 999). No root
needed: the failures are injected where the call is made."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cni.linux import netlink, netns, sysctl
from cni.plugin import network
from cni.protocol.dispatch import Dispatcher
from cnispec.errors import (
    INVALID_ENV,
    IO_FAILURE,
    TRY_AGAIN_LATER,
    CNIError,
    IOFailure,
    TryAgainLater,
    os_error,
    os_errors,
)
from ipam import files
from ipam.lock import FileLock

# errno -> the code it must map to
MAPPED = {
    errno.EAGAIN: TRY_AGAIN_LATER,
    errno.EBUSY: TRY_AGAIN_LATER,
    errno.EINTR: TRY_AGAIN_LATER,
    errno.ENOBUFS: TRY_AGAIN_LATER,
    errno.ENOMEM: TRY_AGAIN_LATER,
    errno.EMFILE: TRY_AGAIN_LATER,
    errno.ENFILE: TRY_AGAIN_LATER,
    errno.ETIMEDOUT: TRY_AGAIN_LATER,
    errno.EIO: IO_FAILURE,
    errno.EROFS: IO_FAILURE,
    errno.EACCES: IO_FAILURE,
    errno.EPERM: IO_FAILURE,
    errno.ENOSPC: IO_FAILURE,
    errno.ENOENT: IO_FAILURE,
}
ERRNOS = sorted(MAPPED)


def fail(err: int) -> Any:
    def raiser(*args: object, **kwargs: object) -> Any:
        raise OSError(err, os.strerror(err))

    return raiser


@pytest.mark.parametrize("err", ERRNOS, ids=[errno.errorcode[e] for e in ERRNOS])
def test_mapping_by_errno(err: int) -> None:
    e = os_error(OSError(err, os.strerror(err)), "doing x", "/some/path")
    assert e.code == MAPPED[err]
    assert "/some/path" in e.details and errno.errorcode[err] in e.details
    with pytest.raises(CNIError) as ei, os_errors("doing x"):
        raise OSError(err, os.strerror(err))
    assert ei.value.code == MAPPED[err]


def test_gone_and_other_are_the_callers_to_say() -> None:
    from cni.linux.netns import NetnsGone

    gone = os_error(OSError(errno.ENOENT, "x"), "entering", gone=NetnsGone)
    assert isinstance(gone, NetnsGone) and gone.code == INVALID_ENV
    assert os_error(OSError(errno.EACCES, "x"), "opening", other=netns.InvalidEnv).code == 4
    # try-again wins over the caller's default: a full fd table is not a bad CNI_NETNS
    assert os_error(OSError(errno.EMFILE, "x"), "opening", other=netns.InvalidEnv).code == 11


def test_non_os_errors_pass_through() -> None:
    with pytest.raises(ValueError), os_errors("x"):
        raise ValueError("a bug stays a bug")
    with pytest.raises(TryAgainLater), os_errors("x"):
        raise TryAgainLater("already mapped")


# ---- each boundary ---------------------------------------------------------------------
@pytest.mark.parametrize("err", ERRNOS, ids=[errno.errorcode[e] for e in ERRNOS])
def test_netlink_socket_open(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    monkeypatch.setattr(netlink.socket, "socket", fail(err))
    with pytest.raises(CNIError) as ei:
        netlink.Netlink.open()
    assert ei.value.code == MAPPED[err]


class _Sock:
    def __init__(self, send_err: int | None, recv_err: int | None) -> None:
        self.send_err, self.recv_err = send_err, recv_err

    def send(self, data: bytes) -> int:
        if self.send_err:
            raise OSError(self.send_err, os.strerror(self.send_err))
        return len(data)

    def recv(self, n: int) -> bytes:
        assert self.recv_err
        raise OSError(self.recv_err, os.strerror(self.recv_err))


@pytest.mark.parametrize("err", ERRNOS, ids=[errno.errorcode[e] for e in ERRNOS])
@pytest.mark.parametrize("where", ["send", "recv"])
def test_netlink_send_and_recv(err: int, where: str) -> None:
    sock = _Sock(err if where == "send" else None, err if where == "recv" else None)
    nl = netlink.Netlink(sock)  # type: ignore[arg-type]
    with pytest.raises(CNIError) as ei:
        nl.link_get("cni0")
    assert ei.value.code == MAPPED[err] and "get link cni0" in ei.value.msg


def test_netlink_reply_errno_try_again() -> None:
    assert netlink.map_errno(errno.EBUSY, "set link").code == TRY_AGAIN_LATER
    assert isinstance(netlink.map_errno(errno.ENODEV, "x"), netlink.NotFound)


@pytest.mark.parametrize("err", ERRNOS, ids=[errno.errorcode[e] for e in ERRNOS])
def test_sysctl_write_and_read(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    monkeypatch.setattr(sysctl.os, "open", fail(err))
    with pytest.raises(CNIError) as ei:
        sysctl.write("net/ipv4/ip_forward", "1")
    assert ei.value.code == MAPPED[err] and "/proc/sys/net/ipv4/ip_forward" in ei.value.details


def test_sysctl_that_does_not_exist_is_io_not_a_bug() -> None:
    with pytest.raises(IOFailure):
        sysctl.write("net/ipv4/conf/no-such-if0/arp_notify", "1")
    with pytest.raises(IOFailure):
        sysctl.read("net/ipv4/no_such_key")


def test_read_only_proc_sys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A read-only /proc/sys (as in an unprivileged container): code 5, naming the key."""
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "x").write_text("0")
    monkeypatch.setattr(sysctl, "ROOT", str(tmp_path) + "/")
    os.chmod(tmp_path / "net" / "x", 0o444)
    if os.geteuid() == 0:  # root ignores modes: make the write itself fail as on a ro mount
        monkeypatch.setattr(sysctl.os, "write", fail(errno.EROFS))
    with pytest.raises(IOFailure, match="writing sysctl"):
        sysctl.write("net/x", "1")


def test_netns_gone_and_not_a_netns(tmp_path: Path) -> None:
    with pytest.raises(netns.NetnsGone) as ei:
        netns.open_netns(str(tmp_path / "gone"))
    assert ei.value.code == INVALID_ENV
    with pytest.raises(CNIError) as ei:
        netns.open_netns(str(tmp_path / "file" / "below-a-file"))
    assert ei.value.code == INVALID_ENV
    (tmp_path / "file").write_text("")
    fd = os.open(tmp_path / "file", os.O_RDONLY)
    try:
        with pytest.raises(CNIError) as ei, netns.entered(fd, "a plain file"):
            pass
        assert ei.value.code == INVALID_ENV
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "err, code",
    [(errno.ENOENT, INVALID_ENV), (errno.EPERM, IO_FAILURE), (errno.ENOMEM, TRY_AGAIN_LATER)],
)
def test_setns_errnos(monkeypatch: pytest.MonkeyPatch, err: int, code: int) -> None:
    class Libc:
        def setns(self, fd: int, kind: int) -> int:
            return -1

    monkeypatch.setattr(netns, "_libc", Libc())
    monkeypatch.setattr(netns.ctypes, "get_errno", lambda: err)
    with pytest.raises(CNIError) as ei:
        netns.setns(0, "/run/netns/p")
    assert ei.value.code == code


def test_entering_a_netns_with_no_fds_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "open", fail(errno.EMFILE))
    with pytest.raises(TryAgainLater), netns.entered(0, "/run/netns/p"):
        pass


@pytest.mark.parametrize("err", ERRNOS, ids=[errno.errorcode[e] for e in ERRNOS])
def test_boot_id(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    monkeypatch.setattr(network.os, "open", fail(err))
    with pytest.raises(CNIError) as ei:
        network.boot_id()
    assert ei.value.code == MAPPED[err] and network.BOOT_ID_PATH in ei.value.details


def test_boot_id_unreadable_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(network, "BOOT_ID_PATH", str(tmp_path))  # a directory: EISDIR
    with pytest.raises(IOFailure):
        network.boot_id()


@pytest.mark.parametrize("err", ERRNOS, ids=[errno.errorcode[e] for e in ERRNOS])
def test_store_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, err: int) -> None:
    monkeypatch.setattr(files.os, "open", fail(err))
    with pytest.raises(CNIError) as ei:
        files.write_tmp(str(tmp_path), b"x", sync=True)
    assert ei.value.code == MAPPED[err]


@pytest.mark.parametrize("err", [errno.EINTR, errno.ENOLCK, errno.EMFILE])
def test_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, err: int) -> None:
    code = TRY_AGAIN_LATER if err in (errno.EINTR, errno.EMFILE) else IO_FAILURE
    monkeypatch.setattr("ipam.lock.os.open", fail(err))
    with pytest.raises(CNIError) as ei:
        FileLock(str(tmp_path / "lock"), 1).acquire()
    assert ei.value.code == code


@pytest.mark.parametrize("err", [errno.EIO, errno.EAGAIN])
def test_through_the_dispatcher_an_os_error_is_never_999(err: int) -> None:
    """End to end: a handler whose OS call fails answers with the mapped code."""

    def handler(req: object) -> None:
        with os_errors("talking to the kernel"):
            raise OSError(err, os.strerror(err))

    class BrokenStdin(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            raise OSError(errno.EIO, "I/O error")

    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/p",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/x",
    }
    conf = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "weft"}).encode()
    for stdin, want in [(io.BytesIO(conf), MAPPED[err]), (BrokenStdin(), IO_FAILURE)]:
        out = io.StringIO()
        rc = Dispatcher(env.get, stdin, out, io.StringIO(), lambda c: handler).run()
        assert rc == 1 and json.loads(out.getvalue())["code"] == want


def test_subnet_file_read_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network.os, "open", fail(errno.EAGAIN))
    with pytest.raises(TryAgainLater):
        network.read_subnet_file("/run/flannel/subnet.env", True)
    assert network.read_subnet_file("/run/flannel/subnet.env", False) is None


@pytest.mark.parametrize(
    "data",
    [
        b"FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        b"A=1\r\nB=2\rC=3\n\r\n",
        b"\xef\xbb\xbfA=\xc3\xa9\r",
        b"A=\xff\n",
        b"",
    ],
)
def test_subnet_file_is_read_as_text_mode_reads_it(tmp_path: Path, data: bytes) -> None:
    """The same text (line breaks, BOM kept) or the same decoding error as ``open``."""
    path = tmp_path / "subnet.env"
    path.write_bytes(data)
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            want: str | type[Exception] = f.read()
    except UnicodeDecodeError:
        want = UnicodeDecodeError
    if want is UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            network._read_text(str(path))
    else:
        assert network._read_text(str(path)) == want
