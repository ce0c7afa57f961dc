"""Netlink dumps that raced a change (NLM_F_DUMP_INTR) are repeated, a bounded number of
times, then answered with code 11: the decision alone, and the adapter's dumps fed a
kernel's replies through an injected socket. No root."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from cni.linux.netlink import (
    DUMP_ATTEMPTS,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLMSG_DONE,
    RTM_NEWADDR,
    DumpInterrupted,
    Netlink,
    consistent_dump,
)
from cnispec.errors import TRY_AGAIN_LATER, TryAgainLater


# ---- the decision -------------------------------------------------------------------------
def test_a_clean_dump_is_used_at_once() -> None:
    calls: list[int] = []

    def dump() -> str:
        calls.append(1)
        return "whole"

    assert consistent_dump(dump, "dump addresses") == "whole" and len(calls) == 1


def test_an_interrupted_dump_is_repeated_until_one_is_whole() -> None:
    results = iter([DumpInterrupted("x"), DumpInterrupted("x"), "whole"])

    def dump() -> str:
        r = next(results)
        if isinstance(r, Exception):
            raise r
        return r

    assert consistent_dump(dump, "dump addresses") == "whole"


def test_always_interrupted_is_try_again_after_a_bounded_number_of_attempts() -> None:
    calls: list[int] = []

    def dump() -> str:
        calls.append(1)
        raise DumpInterrupted("x")

    with pytest.raises(TryAgainLater) as ei:
        consistent_dump(dump, "dump routes")
    assert len(calls) == DUMP_ATTEMPTS == 5
    assert ei.value.code == TRY_AGAIN_LATER and not isinstance(ei.value, DumpInterrupted)
    assert "dump routes" in ei.value.msg and "NLM_F_DUMP_INTR" in ei.value.details


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def dump() -> str:
        calls.append(1)
        raise TryAgainLater("ENOBUFS")

    with pytest.raises(TryAgainLater, match="ENOBUFS"):
        consistent_dump(dump, "dump addresses")
    assert len(calls) == 1


# ---- the adapter's dumps, fed by an injected socket ----------------------------------------
HDR = struct.Struct("=IHHII")


def addr_msg(seq: int, flags: int, index: int, ip: str, prefixlen: int) -> bytes:
    body = struct.pack("=BBBBI", socket.AF_INET, prefixlen, 0, 0, index)
    attr = struct.pack("=HH", 8, 2) + ipaddress.ip_address(ip).packed  # IFA_LOCAL
    payload = body + attr
    return HDR.pack(HDR.size + len(payload), RTM_NEWADDR, flags, seq, 0) + payload


def done_msg(seq: int, flags: int) -> bytes:
    return HDR.pack(HDR.size + 4, NLMSG_DONE, flags, seq, 0) + struct.pack("=i", 0)


class FakeKernel:
    """Answers each address dump with two addresses; the first ``interrupted`` dumps carry
    NLM_F_DUMP_INTR (on the addresses, or only on NLMSG_DONE: the kernel may set it on
    either)."""

    def __init__(self, interrupted: int, on_done_only: bool = False) -> None:
        self.interrupted = interrupted
        self.on_done_only = on_done_only
        self.dumps = 0
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> int:
        seq = HDR.unpack_from(data)[3]
        self.dumps += 1
        intr = NLM_F_DUMP_INTR if self.dumps <= self.interrupted else 0
        on_msgs = 0 if self.on_done_only else intr
        second = "10.42.0.1" if not intr else "10.42.9.1"  # a half-changed view
        self.pending = [
            addr_msg(seq, NLM_F_MULTI | on_msgs, 7, "192.0.2.10", 24)
            + addr_msg(seq, NLM_F_MULTI | on_msgs, 7, second, 24),
            done_msg(seq, NLM_F_MULTI | intr),
        ]
        return len(data)

    def recv(self, _size: int) -> bytes:
        return self.pending.pop(0)


@pytest.mark.parametrize("on_done_only", [False, True])
def test_addrs_repeats_an_interrupted_dump_and_returns_the_whole_one(on_done_only: bool) -> None:
    kernel = FakeKernel(interrupted=DUMP_ATTEMPTS - 1, on_done_only=on_done_only)
    got = Netlink(kernel).addrs(7)  # type: ignore[arg-type]
    assert [str(a.address) for a in got] == ["192.0.2.10/24", "10.42.0.1/24"]
    assert kernel.dumps == DUMP_ATTEMPTS


def test_addrs_answers_try_again_when_every_dump_raced_a_change() -> None:
    kernel = FakeKernel(interrupted=1000)
    with pytest.raises(TryAgainLater) as ei:
        Netlink(kernel).addrs(7)  # type: ignore[arg-type]
    assert ei.value.code == TRY_AGAIN_LATER and kernel.dumps == DUMP_ATTEMPTS


def test_a_clean_dump_is_read_once() -> None:
    kernel = FakeKernel(interrupted=0)
    assert len(Netlink(kernel).addrs(7)) == 2 and kernel.dumps == 1  # type: ignore[arg-type]
