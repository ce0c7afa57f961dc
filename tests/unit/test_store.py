from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cnispec.errors import INVALID_CONFIG, InvalidConfig, RangeExhausted
from ipam.allocator import Allocator
from ipam.disk import DiskStore
from ipam.ranges import Range, RangeSet
from ipam.store import Reservation, Store

A = ipaddress.ip_address
NET = "cbr0"


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    return DiskStore(str(tmp_path), NET)


def netdir(tmp_path: Path) -> Path:
    return tmp_path / NET


def write_like_host_local(d: Path, ip: str, cid: str, ifname: str | None) -> None:
    """What Go's disk backend does: O_EXCL create, write id + "\\r\\n" + ifname."""
    d.mkdir(parents=True, exist_ok=True)
    content = cid if ifname is None else cid + "\r\n" + ifname
    fd = os.open(d / ip, os.O_RDWR | os.O_EXCL | os.O_CREAT, 0o644)
    os.write(fd, content.encode())
    os.close(fd)


def test_store_satisfies_protocol(store: DiskStore) -> None:
    s: Store = store
    assert s is store


def test_reserve_writes_host_local_bytes(store: DiskStore, tmp_path: Path) -> None:
    assert not store.exists()
    assert store.reserve("cid", "ifname", A("10.42.0.2"), "0") is True
    d = netdir(tmp_path)
    assert store.exists()
    assert (d / "10.42.0.2").read_bytes() == b"cid\r\nifname"
    assert (d / "last_reserved_ip.0").read_bytes() == b"10.42.0.2"
    assert (d / "10.42.0.2").stat().st_mode & 0o777 == 0o644
    assert (d / "10.42.0.2").stat().st_nlink == 1
    assert sorted(os.listdir(d)) == ["10.42.0.2", "last_reserved_ip.0"]  # no temp left
    assert store.last_reserved_ip("0") == A("10.42.0.2")
    assert store.last_reserved_ip("1") is None


def test_ipv6_file_name_is_compressed(store: DiskStore, tmp_path: Path) -> None:
    ip = A("2001:cafe:0042:0000:0000:0000:0000:0005")
    assert store.reserve("cid", "eth0", ip, "0")
    assert (netdir(tmp_path) / "2001:cafe:42::5").read_bytes() == b"cid\r\neth0"
    assert store.get_by_id("cid", "eth0") == [ip]
    assert store.last_reserved_ip("0") == ip


def test_o_excl_semantics(store: DiskStore, tmp_path: Path) -> None:
    assert store.reserve("a", "eth0", A("10.42.0.2"), "0")
    assert store.reserve("b", "eth0", A("10.42.0.2"), "0") is False
    assert (netdir(tmp_path) / "10.42.0.2").read_bytes() == b"a\r\neth0"
    # taken between the pre-check and link: still refused, no temp left behind
    assert store.reserve("b", "eth0", A("10.42.0.3"), "0")
    assert store.reserve("c", "eth0", A("10.42.0.3"), "0") is False
    assert not [n for n in os.listdir(netdir(tmp_path)) if n.startswith(".tmp-")]


def test_reads_files_written_by_host_local(store: DiskStore, tmp_path: Path) -> None:
    d = netdir(tmp_path)
    write_like_host_local(d, "10.42.0.7", "c7", "eth0")
    write_like_host_local(d, "10.42.0.8", "legacy", None)
    (d / "last_reserved_ip.0").write_bytes(b"10.42.0.8")
    (d / "lock").write_bytes(b"")
    assert store.get_by_id("c7", "eth0") == [A("10.42.0.7")]
    assert store.get_by_id("c7", "net1") == []
    # legacy id-only record matches any ifname of that container
    assert store.get_by_id("legacy", "eth0") == [A("10.42.0.8")]
    assert store.get_by_id("legacy", "net1") == [A("10.42.0.8")]
    assert sorted(store.reservations()) == [
        Reservation(A("10.42.0.7"), "c7", "eth0"),
        Reservation(A("10.42.0.8"), "legacy", ""),
    ]
    assert store.last_reserved_ip("0") == A("10.42.0.8")
    assert store.reserve("x", "eth0", A("10.42.0.7"), "0") is False
    assert store.release_by_id("legacy", "eth1") == [A("10.42.0.8")]
    assert store.problems == []


def test_trailing_whitespace_tolerated_like_go_trimspace(store: DiskStore, tmp_path: Path) -> None:
    d = netdir(tmp_path)
    d.mkdir()
    (d / "10.42.0.9").write_bytes(b"c9\r\neth0\n")
    assert store.get_by_id("c9", "eth0") == [A("10.42.0.9")]
    assert store.reservations() == [Reservation(A("10.42.0.9"), "c9", "eth0")]


def test_text_mode_newline_translation_would_not_match(store: DiskStore, tmp_path: Path) -> None:
    d = netdir(tmp_path)
    d.mkdir()
    (d / "10.42.0.9").write_bytes(b"c9\neth0")  # LF only: not host-local's format
    assert store.get_by_id("c9", "eth0") == []
    assert store.reservations() == []
    assert len(store.problems) == 1 and "10.42.0.9" in store.problems[0]


def test_corrupt_and_foreign_files_reported_and_skipped(store: DiskStore, tmp_path: Path) -> None:
    d = netdir(tmp_path)
    write_like_host_local(d, "10.42.0.2", "good", "eth0")
    (d / "not-an-ip").write_bytes(b"good\r\neth0")
    (d / "10.42.0.3").write_bytes(b"")
    (d / "10.42.0.4").write_bytes(b"bad id!\r\neth0")
    (d / "10.42.0.5").write_bytes(b"cid\r\nbad if name")
    (d / "10.42.0.6").write_bytes(b"\xff\xfe")
    (d / "10.42.0.10").write_bytes(b"x" * 5000)
    (d / "2001:CAFE::1").write_bytes(b"good\r\neth1")  # non-canonical name
    (d / "somedir").mkdir()
    (d / "10.42.0.11").symlink_to(d / "10.42.0.2")
    (d / ".hidden").write_bytes(b"good\r\neth0")
    (d / "last_reserved_ip.0").write_bytes(b"garbage")
    assert store.reservations() == [Reservation(A("10.42.0.2"), "good", "eth0")]
    joined = "\n".join(store.problems)
    for name in ["not-an-ip", "10.42.0.3", "10.42.0.4", "10.42.0.5", "10.42.0.6", "10.42.0.10"]:
        assert f"{d / name}:" in joined
    assert "2001:CAFE::1" in joined and "10.42.0.11" in joined
    assert "somedir" not in joined and ".hidden" not in joined
    assert len(store.problems) == 8
    assert store.last_reserved_ip("0") is None
    assert "last_reserved_ip.0" in store.problems[-1]


def test_leftover_tmp_files_ignored_and_stale_ones_swept(store: DiskStore, tmp_path: Path) -> None:
    d = netdir(tmp_path)
    write_like_host_local(d, "10.42.0.2", "c", "eth0")
    fresh = d / ".tmp-123-abc"
    stale = d / ".tmp-456-def"
    fresh.write_bytes(b"c\r\neth0")
    stale.write_bytes(b"c\r\neth0")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert store.get_by_id("c", "eth0") == [A("10.42.0.2")]
    assert store.reservations() == [Reservation(A("10.42.0.2"), "c", "eth0")]
    assert fresh.exists() and not stale.exists()
    assert store.problems == []


def test_release_owned_removes_only_what_still_names_the_attachment(
    store: DiskStore, tmp_path: Path
) -> None:
    """DEL's store half: the addresses it listed, each read again; one handed to another
    container meanwhile (by the reference) stays, a legacy id-only one goes as with
    ``release_by_id``, one already gone is no error."""
    d = netdir(tmp_path)
    store.reserve("c1", "eth0", A("10.42.0.2"), "0")
    write_like_host_local(d, "10.42.0.3", "c1", None)  # legacy: matches every ifname
    write_like_host_local(d, "10.42.0.4", "c2", "eth0")  # taken over by another one
    listed = [A("10.42.0.2"), A("10.42.0.3"), A("10.42.0.4"), A("10.42.0.5")]
    assert store.release_owned("c1", "eth0", listed) == [A("10.42.0.2"), A("10.42.0.3")]
    assert store.reservations() == [Reservation(A("10.42.0.4"), "c2", "eth0")]
    assert store.release_owned("c1", "eth0", listed) == []
    with pytest.raises(InvalidConfig):
        store.release_owned("c1/../x", "eth0", listed)


def test_last_reserved_ip_is_rewritten_in_place_keeping_its_mode(
    store: DiskStore, tmp_path: Path
) -> None:
    """As host-local writes it: the same file (inode, mode) with the new address whole."""
    assert store.reserve("c1", "eth0", A("10.42.0.2"), "0")
    last = netdir(tmp_path) / "last_reserved_ip.0"
    os.chmod(last, 0o600)  # as the reference may have created it
    inode = last.stat().st_ino
    assert store.reserve("c2", "eth0", A("10.42.0.10"), "0")
    assert last.read_bytes() == b"10.42.0.10"
    assert last.stat().st_ino == inode and last.stat().st_mode & 0o777 == 0o600
    assert store.last_reserved_ip("0") == A("10.42.0.10")


def test_a_torn_last_reserved_ip_is_read_as_none(store: DiskStore, tmp_path: Path) -> None:
    """A writer killed between truncating and writing it: no hint, noted, walk from the
    range's start."""
    assert store.reserve("c1", "eth0", A("10.42.0.2"), "0")
    (netdir(tmp_path) / "last_reserved_ip.0").write_bytes(b"")
    assert store.last_reserved_ip("0") is None
    assert "last_reserved_ip.0" in store.problems[-1]


def test_release_and_release_by_id_idempotent(store: DiskStore, tmp_path: Path) -> None:
    store.reserve("c1", "eth0", A("10.42.0.2"), "0")
    store.reserve("c1", "net1", A("10.42.0.3"), "0")
    store.reserve("c2", "eth0", A("10.42.0.4"), "0")
    assert store.release_by_id("c1", "eth0") == [A("10.42.0.2")]
    assert store.release_by_id("c1", "eth0") == []
    store.release(A("10.42.0.4"))
    store.release(A("10.42.0.4"))
    assert store.reservations() == [Reservation(A("10.42.0.3"), "c1", "net1")]
    assert (netdir(tmp_path) / "last_reserved_ip.0").exists()


def test_read_operations_do_not_create_the_directory(tmp_path: Path) -> None:
    s = DiskStore(str(tmp_path / "missing"), NET)
    assert not s.exists()
    assert s.get_by_id("c", "eth0") == []
    assert s.release_by_id("c", "eth0") == []
    s.release(A("10.42.0.2"))
    assert s.reservations() == []
    assert s.last_reserved_ip("0") is None
    assert not s.was_used()
    assert not (tmp_path / "missing").exists()
    assert s.lock_path == str(tmp_path / "missing" / NET / "lock")
    assert s.reserve("c", "eth0", A("10.42.0.2"), "0")
    assert (tmp_path / "missing" / NET).stat().st_mode & 0o777 == 0o755
    s.release(A("10.42.0.2"))
    assert s.was_used()  # last_reserved_ip outlives the reservation


@pytest.mark.parametrize(
    "bad_id", ["../x", "a/b", "a\0b", "c" * 300, "", ".", "..", ".hidden", "-x", "a b"]
)
def test_path_traversal_refused_container_id(store: DiskStore, tmp_path: Path, bad_id: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.reserve(bad_id, "eth0", A("10.42.0.2"), "0"),
        lambda: store.get_by_id(bad_id, "eth0"),
        lambda: store.release_by_id(bad_id, "eth0"),
    ]
    for call in calls:
        with pytest.raises(InvalidConfig) as ei:
            call()
        assert ei.value.code == INVALID_CONFIG
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "bad_if", ["../x", "a/b", "a\0b", "eth:0", "eth 0", "eth\t0", ".", "..", "", "x" * 16]
)
def test_bad_ifname_refused(store: DiskStore, tmp_path: Path, bad_if: str) -> None:
    with pytest.raises(InvalidConfig):
        store.reserve("cid", bad_if, A("10.42.0.2"), "0")
    with pytest.raises(InvalidConfig):
        store.get_by_id("cid", bad_if)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad_net", ["../x", "a/b", "a\0b", "n" * 300, ".", "..", ""])
def test_bad_network_name_refused(tmp_path: Path, bad_net: str) -> None:
    with pytest.raises(InvalidConfig, match="invalid network name"):
        DiskStore(str(tmp_path), bad_net)


def test_bad_range_id_refused(store: DiskStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig):
        store.reserve("cid", "eth0", A("10.42.0.2"), "../0")
    with pytest.raises(InvalidConfig):
        store.last_reserved_ip("a/b")
    assert list(tmp_path.iterdir()) == []


def test_allocator_with_disk_store_end_to_end(store: DiskStore, tmp_path: Path) -> None:
    alloc = Allocator(RangeSet([Range("10.42.0.0/29")]), store, "0")
    ips = [str(alloc.get(f"c{i}", "eth0").address) for i in range(5)]
    assert ips == ["10.42.0.2/29", "10.42.0.3/29", "10.42.0.4/29", "10.42.0.5/29", "10.42.0.6/29"]
    with pytest.raises(RangeExhausted, match="^no IP addresses available in range 10.42.0.2-"):
        alloc.get("c9", "eth0")
    got = alloc.get("c9", "eth0", reclaim=lambda r: r.container_id == "c2")
    assert str(got.address) == "10.42.0.4/29"
    assert (netdir(tmp_path) / "10.42.0.4").read_bytes() == b"c9\r\neth0"
    assert alloc.release("c9", "eth0") == [A("10.42.0.4")]
