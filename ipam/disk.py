"""DiskStore: host-local's on-disk reservation store (``backend/disk``), byte compatible.
Boundary (disk I/O); implements ``ipam.store.Store``.

Layout of ``<data_dir>/<network>/`` (host-local's ``backend/disk``):

* ``<ip>`` -- one file per reserved address (IPv6 in compressed form, as Go's ``String()``),
  content exactly ``<containerID>\\r\\n<ifname>`` (no trailing newline).  Old host-local files
  holding only ``<containerID>`` (legacy) match every ifname of that container.
* ``last_reserved_ip.<range_id>`` -- the address reserved last, where the next walk starts.
* ``lock`` -- flock()ed by :class:`ipam.lock.FileLock` (``lock_path``); same file host-local
  locks, so both can run side by side.
* ``.weft/`` -- weft's own files (attachment records, ``ipam.attachments``); dot-names are
  never reservations.

Crash safety: a reservation is written to a temp file (``ipam.files``: O_EXCL, fsync),
then ``os.link``-ed to its final name (atomic; EEXIST means taken) and the temp unlinked,
so a reservation file is never visible half-written.  The directory is not fsynced: losing a
just-made link in a power cut loses the pod's netns as well.  ``last_reserved_ip`` is only a
hint for where to start probing: written in place without fsync, as host-local writes it. A
writer killed between truncating and writing it leaves a hint that does not parse: it is
noted in ``problems`` and read as none, so the next walk starts at the range's start, which
only costs probes (every reservation is still checked by its own file).

Records that do not parse (name not a canonical IP, content not ``<id>`` /
``<id>\\r\\n<ifname>``, symlinks, ...) are appended to ``problems`` and skipped: reported, not
trusted, not fatal.  Every container id / ifname / network name is validated before it is
used in a path (InvalidConfig).  Methods never take the lock; the caller holds it.
"""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING

from cnispec.errors import InvalidConfig, IOFailure
from cnispec.ip import IPAddress
from cnispec.rules import id_problem, interface_name_problem, is_valid_id
from ipam import files
from ipam.store import Reservation

if TYPE_CHECKING:
    from collections.abc import Iterator

LINE_BREAK = "\r\n"
LAST_IP_PREFIX = "last_reserved_ip."
LOCK_NAME = "lock"


def validate_container_id(container_id: str) -> None:
    problem = id_problem(container_id)
    if problem:
        raise InvalidConfig("invalid container id", problem)


def validate_ifname(ifname: str) -> None:
    problem = interface_name_problem(ifname)
    if problem:
        raise InvalidConfig("invalid interface name", f"{ifname[:80]!r}: {problem}")


def validate_network_name(network: str) -> None:
    problem = id_problem(network)
    if problem:
        raise InvalidConfig("invalid network name", problem)


def _validate_range_id(range_id: str) -> None:
    if not is_valid_id(range_id):
        raise InvalidConfig("invalid range id", f"{range_id[:80]!r}")


class DiskStore:
    """Reservation store in ``<data_dir>/<network>``; see the module docstring."""

    def __init__(self, data_dir: str, network: str) -> None:
        validate_network_name(network)
        self.data_dir = data_dir
        self.network = network
        self.dir = os.path.join(data_dir, network)
        self.problems: list[str] = []
        self._dir_ready = False

    # ----------------------------------------------------------------- paths / dirs
    @property
    def lock_path(self) -> str:
        return os.path.join(self.dir, LOCK_NAME)

    def was_used(self) -> bool:
        """Has this store ever reserved anything (``last_reserved_ip.*`` survives releases)?"""
        try:
            return any(n.startswith(LAST_IP_PREFIX) for n in os.listdir(self.dir))
        except FileNotFoundError:
            return False
        except OSError as e:
            raise files.io_error("listing", self.dir, e) from None

    def exists(self) -> bool:
        """Whether the network directory exists (never creates it; for DEL/CHECK)."""
        return os.path.isdir(self.dir)

    def _ensure_dir(self) -> None:
        if self._dir_ready:
            return
        try:
            os.makedirs(self.dir, 0o755, exist_ok=True)
        except OSError as e:
            raise files.io_error("creating store directory", self.dir, e) from None
        self._dir_ready = True

    def _problem(self, path: str, why: str) -> None:
        self.problems.append(f"{path}: {why}")

    def _read(self, path: str) -> bytes | None:
        return files.read_small(path, self._problem)

    def _entries(self) -> Iterator[tuple[str, str, bytes]]:
        """(name, path, content) of every candidate reservation file."""
        try:
            it = os.scandir(self.dir)
        except FileNotFoundError:
            return
        except OSError as e:
            raise files.io_error("listing", self.dir, e) from None
        with it:
            for entry in it:
                name = entry.name
                if name[0] == ".":
                    if name.startswith(files.TMP_PREFIX):
                        files.sweep_tmp(entry)
                    continue
                if name == LOCK_NAME or name.startswith(LAST_IP_PREFIX):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        if not entry.is_dir(follow_symlinks=False):
                            self._problem(entry.path, "not a regular file, ignored")
                        continue
                except OSError:
                    continue
                data = self._read(entry.path)
                if data is not None:
                    yield name, entry.path, data

    def _name_to_ip(self, name: str, path: str) -> IPAddress | None:
        try:
            ip = ipaddress.ip_address(name) if "%" not in name else None
        except ValueError:
            ip = None
        if ip is None:
            self._problem(path, "file name is not an IP address, ignored")
            return None
        if str(ip) != name:
            self._problem(path, f"file name is not the canonical form {ip}, ignored")
            return None
        return ip

    def _parse(self, name: str, path: str, data: bytes) -> Reservation | None:
        ip = self._name_to_ip(name, path)
        if ip is None:
            return None
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            self._problem(path, "content is not ASCII, ignored")
            return None
        cid, sep, ifname = text.partition(LINE_BREAK)
        if not is_valid_id(cid) or (sep and interface_name_problem(ifname)):
            self._problem(path, f"content {text[:100]!r} is not <id> or <id>\\r\\n<ifname>")
            return None
        return Reservation(ip, cid, ifname)

    @staticmethod
    def _matchers(container_id: str, ifname: str) -> tuple[bytes, bytes]:
        validate_container_id(container_id)
        validate_ifname(ifname)
        return (container_id + LINE_BREAK + ifname).encode(), container_id.encode()

    # ----------------------------------------------------------------- Store protocol
    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool:
        """Claim ``ip`` for (container_id, ifname); False if the address is taken."""
        match, _ = self._matchers(container_id, ifname)
        _validate_range_id(range_id)
        if not isinstance(ip, IPAddress) or (
            isinstance(ip, ipaddress.IPv6Address) and ip.scope_id
        ):
            raise InvalidConfig("invalid address", f"{ip!r}")
        self._ensure_dir()
        name = str(ip)
        final = os.path.join(self.dir, name)
        if os.path.lexists(final):  # cheap pre-check: no temp file for a taken address
            return False
        tmp = files.write_tmp(self.dir, match, sync=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        except OSError as e:
            raise files.io_error("linking reservation", final, e) from None
        finally:
            files.unlink_quiet(tmp)
        try:
            files.overwrite(os.path.join(self.dir, LAST_IP_PREFIX + range_id), name.encode())
        except IOFailure:
            files.unlink_quiet(final)  # as host-local: no reservation without last_reserved_ip
            raise
        return True

    def last_reserved_ip(self, range_id: str) -> IPAddress | None:
        _validate_range_id(range_id)
        path = os.path.join(self.dir, LAST_IP_PREFIX + range_id)
        data = self._read(path)
        if data is None:
            return None
        try:
            text = data.decode("ascii").strip()
            if "%" in text:
                raise ValueError(text)
            return ipaddress.ip_address(text)
        except ValueError:
            self._problem(path, f"content {data[:60]!r} is not an IP address, ignored")
            return None

    def _owned(self, container_id: str, ifname: str) -> Iterator[tuple[IPAddress, str]]:
        """(address, path) of every reservation file of (container_id, ifname), legacy
        id-only records included; files not named by an address are never matched."""
        match, legacy = self._matchers(container_id, ifname)
        for name, path, data in self._entries():
            if data.strip() in (match, legacy):
                ip = self._name_to_ip(name, path)
                if ip is not None:
                    yield ip, path

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Addresses held by (container_id, ifname), legacy id-only records included.

        Cost: one scandir + one open/read/close per reservation file.
        """
        return [ip for ip, _ in self._owned(container_id, ifname)]

    def has_file(self, ip: IPAddress) -> bool:
        """Is there a file for ``ip`` at all (readable or not)?"""
        return os.path.lexists(os.path.join(self.dir, str(ip)))

    def release(self, ip: IPAddress) -> None:
        if not isinstance(ip, IPAddress):
            raise InvalidConfig("invalid address", f"{ip!r}")
        files.remove(os.path.join(self.dir, str(ip)), "releasing")

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Remove every record of (container_id, ifname) (legacy included); idempotent."""
        owned = list(self._owned(container_id, ifname))
        return [ip for ip, path in owned if files.remove(path, "releasing")]

    def release_owned(
        self, container_id: str, ifname: str, ips: list[IPAddress]
    ) -> list[IPAddress]:
        """``release_by_id`` for a caller that listed the holdings already (``get_by_id``)
        and kept anyone else from adding to them since (the attachment's lock): each file
        is read again and removed only if it still names (container_id, ifname), without
        listing and reading every other reservation. Idempotent."""
        match, legacy = self._matchers(container_id, ifname)
        out: list[IPAddress] = []
        for ip in ips:
            path = os.path.join(self.dir, str(ip))
            data = self._read(path)
            owned = data is not None and data.strip() in (match, legacy)
            if owned and files.remove(path, "releasing"):
                out.append(ip)
        return out

    def reservations(self) -> list[Reservation]:
        """Every valid reservation; invalid files are noted in ``problems`` and skipped."""
        out: list[Reservation] = []
        for name, path, data in self._entries():
            r = self._parse(name, path, data)
            if r is not None:
                out.append(r)
        return out
