"""DiskStore: host-local's on-disk reservation store, byte compatible.  Boundary (disk I/O).

Layout of ``<data_dir>/<network>/`` (host-local's ``backend/disk``):

* ``<ip>`` -- one file per reserved address (IPv6 in compressed form, as Go's ``String()``),
  content exactly ``<containerID>\\r\\n<ifname>`` (no trailing newline).  Old host-local files
  holding only ``<containerID>`` (legacy) match every ifname of that container.
* ``last_reserved_ip.<range_id>`` -- the address reserved last, where the next walk starts.
* ``lock`` -- flock()ed by :class:`ipam.lock.FileLock` (``lock_path``); same file host-local
  locks, so both can run side by side.
* ``.weft/<sha256(containerID\\nifname)>.json`` -- weft's attachment records.  Dot-directory
  and JSON content: host-local never matches them.

Crash safety: a reservation is written to ``.tmp-<pid>-<random>`` (O_EXCL, fsync), then
``os.link``-ed to its final name (atomic; EEXIST means taken) and the temp unlinked, so a
reservation file is never visible half-written.  The directory is not fsynced: losing a
just-made link in a power cut loses the pod's netns as well.  ``last_reserved_ip`` is only a
hint for where to start probing: written temp + ``os.replace`` without fsync.  Stale
``.tmp-*`` files (crashed writers) are ignored by listings and removed once older than 60 s.

Records that do not parse (name not a canonical IP, content not ``<id>`` /
``<id>\\r\\n<ifname>``, symlinks, ...) are appended to ``problems`` and skipped: reported, not
trusted, not fatal.  Every container id / ifname / network name is validated before it is
used in a path (InvalidConfig).  Methods never take the lock; the caller holds it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import time
from typing import TYPE_CHECKING, Any

from cni import spec
from cni.digest import sha256_hex
from cni.errors import InvalidConfig, IOFailure
from ipam.allocator import Reservation
from ipam.ranges import IPAddress

if TYPE_CHECKING:
    from collections.abc import Iterator

LINE_BREAK = "\r\n"
LAST_IP_PREFIX = "last_reserved_ip."
LOCK_NAME = "lock"
ATTACH_DIR = ".weft"
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 60.0
MAX_ID_LEN = spec.MAX_ID_LEN  # a file name component; Kubernetes/containerd ids are 64 hex
MAX_IFNAME_LEN = 15  # IFNAMSIZ - 1
MAX_RECORD_BYTES = 4096

_O_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def is_valid_id(s: object) -> bool:
    """``^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$`` (host-local's container id / network name rule),
    for values read from disk that may not even be strings. The rule is cni.spec's."""
    return isinstance(s, str) and spec.is_valid_id(s)


def is_valid_ifname(s: object) -> bool:
    """Linux interface name rules (as the CNI spec's ValidateInterfaceName), cni.spec's."""
    return isinstance(s, str) and spec.interface_name_problem(s) is None


def validate_container_id(container_id: str) -> None:
    if not is_valid_id(container_id):
        raise InvalidConfig(
            "invalid container id",
            f"{container_id[:80]!r} must match [a-zA-Z0-9][a-zA-Z0-9_.-]* "
            f"(at most {MAX_ID_LEN} chars)",
        )


def validate_ifname(ifname: str) -> None:
    if not is_valid_ifname(ifname):
        raise InvalidConfig(
            "invalid interface name",
            f"{ifname[:80]!r}: 1..{MAX_IFNAME_LEN} chars, no '/', ':', NUL or whitespace, "
            "not '.' or '..'",
        )


def validate_network_name(network: str) -> None:
    if not is_valid_id(network):
        raise InvalidConfig(
            "invalid network name",
            f"{network[:80]!r} must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most {MAX_ID_LEN} chars)",
        )


def _validate_range_id(range_id: str) -> None:
    if not is_valid_id(range_id):
        raise InvalidConfig("invalid range id", f"{range_id[:80]!r}")


def _io_error(what: str, path: str, e: OSError) -> IOFailure:
    return IOFailure(f"{what} failed", f"{path}: {e.strerror or e}")


def _tmp_name() -> str:
    return f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"


def _release_file(path: str) -> bool:
    """Unlink a reservation: True if removed, False if already gone; else IOFailure."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise _io_error("releasing", path, e) from None
    return True


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

    @property
    def attachments_dir(self) -> str:
        return os.path.join(self.dir, ATTACH_DIR)

    def exists(self) -> bool:
        """Whether the network directory exists (never creates it; for DEL/CHECK)."""
        return os.path.isdir(self.dir)

    def _ensure_dir(self) -> None:
        if self._dir_ready:
            return
        try:
            os.makedirs(self.dir, 0o755, exist_ok=True)
        except OSError as e:
            raise _io_error("creating store directory", self.dir, e) from None
        self._dir_ready = True

    def _problem(self, path: str, why: str) -> None:
        self.problems.append(f"{path}: {why}")

    # ----------------------------------------------------------------- low-level I/O
    def _read(self, path: str) -> bytes | None:
        """File content (<= MAX_RECORD_BYTES), None if absent; oversize -> problem + None."""
        try:
            fd = os.open(path, _O_READ)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                self._problem(path, "is a symlink, ignored")
                return None
            raise _io_error("reading", path, e) from None
        try:
            data = os.read(fd, MAX_RECORD_BYTES + 1)
        except OSError as e:
            raise _io_error("reading", path, e) from None
        finally:
            os.close(fd)
        if len(data) > MAX_RECORD_BYTES:
            self._problem(path, f"larger than {MAX_RECORD_BYTES} bytes, ignored")
            return None
        return data

    def _write_tmp(self, directory: str, data: bytes, sync: bool) -> str:
        tmp = os.path.join(directory, _tmp_name())
        try:
            fd = os.open(tmp, _O_NEW, 0o644)
        except OSError as e:
            raise _io_error("creating temporary file", tmp, e) from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        except OSError as e:
            os.close(fd)
            _unlink_quiet(tmp)
            raise _io_error("writing", tmp, e) from None
        os.close(fd)
        return tmp

    def _replace_file(self, directory: str, name: str, data: bytes, sync: bool) -> None:
        tmp = self._write_tmp(directory, data, sync)
        final = os.path.join(directory, name)
        try:
            os.replace(tmp, final)
        except OSError as e:
            _unlink_quiet(tmp)
            raise _io_error("renaming into place", final, e) from None

    def _sweep_tmp(self, entry: os.DirEntry[str]) -> None:
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS:
                os.unlink(entry.path)
        except OSError:
            pass  # opportunistic; someone else may have removed it

    def _entries(self) -> Iterator[tuple[str, str, bytes]]:
        """(name, path, content) of every candidate reservation file."""
        try:
            it = os.scandir(self.dir)
        except FileNotFoundError:
            return
        except OSError as e:
            raise _io_error("listing", self.dir, e) from None
        with it:
            for entry in it:
                name = entry.name
                if name[0] == ".":
                    if name.startswith(TMP_PREFIX):
                        self._sweep_tmp(entry)
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
        if not is_valid_id(cid) or (sep and not is_valid_ifname(ifname)):
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
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) or (
            isinstance(ip, ipaddress.IPv6Address) and ip.scope_id
        ):
            raise InvalidConfig("invalid address", f"{ip!r}")
        self._ensure_dir()
        name = str(ip)
        final = os.path.join(self.dir, name)
        if os.path.lexists(final):  # cheap pre-check: no temp file for a taken address
            return False
        tmp = self._write_tmp(self.dir, match, sync=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        except OSError as e:
            raise _io_error("linking reservation", final, e) from None
        finally:
            _unlink_quiet(tmp)
        try:
            self._replace_file(self.dir, LAST_IP_PREFIX + range_id, name.encode(), sync=False)
        except IOFailure:
            _unlink_quiet(final)  # as host-local: no reservation without last_reserved_ip
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

    def release(self, ip: IPAddress) -> None:
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise InvalidConfig("invalid address", f"{ip!r}")
        _release_file(os.path.join(self.dir, str(ip)))

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Remove every record of (container_id, ifname) (legacy included); idempotent."""
        owned = list(self._owned(container_id, ifname))
        return [ip for ip, path in owned if _release_file(path)]

    def reservations(self) -> list[Reservation]:
        """Every valid reservation; invalid files are noted in ``problems`` and skipped."""
        out: list[Reservation] = []
        for name, path, data in self._entries():
            r = self._parse(name, path, data)
            if r is not None:
                out.append(r)
        return out

    # ----------------------------------------------------------------- attachments
    def _attachment_path(self, container_id: str, ifname: str) -> str:
        validate_container_id(container_id)
        validate_ifname(ifname)
        h = sha256_hex(f"{container_id}\n{ifname}".encode())
        return os.path.join(self.dir, ATTACH_DIR, h + ".json")

    def put_attachment(self, container_id: str, ifname: str, record: dict[str, Any]) -> None:
        """Store ``record`` (plus "containerID"/"ifname" keys) atomically (temp+fsync+rename)."""
        import json

        path = self._attachment_path(container_id, ifname)
        rec = dict(record)
        rec["containerID"] = container_id
        rec["ifname"] = ifname
        try:
            data = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
        except (TypeError, ValueError) as e:
            raise InvalidConfig("attachment record is not JSON serialisable", str(e)) from None
        self._ensure_dir()
        adir = self.attachments_dir
        try:
            os.makedirs(adir, 0o755, exist_ok=True)
        except OSError as e:
            raise _io_error("creating attachments directory", adir, e) from None
        self._replace_file(adir, os.path.basename(path), data, sync=True)

    def _load_attachment(self, path: str) -> dict[str, Any] | None:
        import json

        data = self._read(path)
        if data is None:
            return None
        try:
            rec = json.loads(data)
        except ValueError:
            self._problem(path, "attachment record is not valid JSON, ignored")
            return None
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("containerID"), str)
            or not isinstance(rec.get("ifname"), str)
        ):
            self._problem(path, "attachment record lacks containerID/ifname, ignored")
            return None
        return rec

    def get_attachment(self, container_id: str, ifname: str) -> dict[str, Any] | None:
        path = self._attachment_path(container_id, ifname)
        rec = self._load_attachment(path)
        if rec is not None and (rec["containerID"], rec["ifname"]) != (container_id, ifname):
            self._problem(path, "attachment record belongs to another container, ignored")
            return None
        return rec

    def delete_attachment(self, container_id: str, ifname: str) -> None:
        path = self._attachment_path(container_id, ifname)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _io_error("deleting attachment", path, e) from None

    def attachments(self) -> list[dict[str, Any]]:
        """Every valid attachment record (invalid ones noted in ``problems``)."""
        adir = self.attachments_dir
        try:
            it = os.scandir(adir)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise _io_error("listing", adir, e) from None
        out: list[dict[str, Any]] = []
        with it:
            for entry in it:
                name = entry.name
                if name.startswith(TMP_PREFIX):
                    self._sweep_tmp(entry)
                    continue
                if name[0] == "." or not name.endswith(".json"):
                    continue
                rec = self._load_attachment(entry.path)
                if rec is None:
                    continue
                cid, ifn = rec["containerID"], rec["ifname"]
                if not (is_valid_id(cid) and is_valid_ifname(ifn)) or name != (
                    sha256_hex(f"{cid}\n{ifn}".encode()) + ".json"
                ):
                    self._problem(entry.path, "attachment record does not match its name")
                    continue
                out.append(rec)
        return out


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
