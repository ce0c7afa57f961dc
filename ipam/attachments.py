"""weft's attachment records on disk: what DEL, GC and reboot recovery act on.  Boundary
(disk I/O); the record itself and its JSON form are ``ipam.records`` (pure).

host-local's files say only which container holds an address. To tear an attachment down
after a crash, a reboot or a wiped netns, weft also needs what ADD made and where: the
host veth, the netns path, the boot it was made in, whether a masquerade rule exists. One
JSON record per attachment, beside host-local's files:

``<data_dir>/<network>/.weft/<sha256(containerID\\nifname)>.json``, for example
``{"bootID":"…","bridge":"cni0","containerID":"c1","hostVeth":"veth0123abcd456",
"ifname":"eth0","ipMasq":true,"ips":["10.42.0.5/24"],"netns":"/var/run/netns/x",
"netnsDevice":4,"netnsInode":4026532801,"podName":"web-0","podNamespace":"default"}``
(``podNamespace``/``podName`` only when the runtime passed them in CNI_ARGS;
``netnsDevice``/``netnsInode``, the identity of the namespace the netns path named at ADD,
absent from records written before weft recorded it). A dot-directory of JSON files:
host-local never matches them. Written temp + rename, so a record is whole or absent to any
reader, whatever process dies when.

Not fsynced, unlike the reservation it describes. A power cut (never a kill: the page cache
outlives the process) may leave a record absent, or present but empty or cut short; either
way it does not parse and is read as absent. Its reservation may survive meanwhile. That
state, a reservation without a readable record, a power cut could always leave: neither
directory is fsynced, so the record's rename can be lost while the reservation's link is
kept. Its outcome is unchanged too: the reservation is host-local's kind, which weft never
judges stale (``weft ls`` lists it, an operator releases it). So an fsync here narrowed
when a power cut leaves that state, never whether; and a record without its reservation is
an orphan, swept by GC and ADD's reclaim. The reservation itself is fsynced: an empty
reservation file would hold its address for good.

A record is data from disk, never trusted: one that does not parse, whose fields have the
wrong types, or whose name is not the hash of its own container id and ifname is noted in
``problems`` and ignored. Methods never take a lock; the caller holds the network lock.
"""

from __future__ import annotations

import os

from cnispec.rules import interface_name_problem, is_valid_id
from ipam import files
from ipam.disk import validate_container_id, validate_ifname
from ipam.records import Attachment, record_name

RECORDS_DIR = ".weft"


class AttachmentStore:
    """The records of one network: ``<network_dir>/.weft/``."""

    def __init__(self, network_dir: str) -> None:
        self.dir = os.path.join(network_dir, RECORDS_DIR)
        self.problems: list[str] = []

    def _problem(self, path: str, why: str) -> None:
        self.problems.append(f"{path}: {why}")

    def _path(self, container_id: str, ifname: str) -> str:
        validate_container_id(container_id)
        validate_ifname(ifname)
        return os.path.join(self.dir, record_name(container_id, ifname))

    def _load(self, path: str) -> Attachment | None:
        data = files.read_small(path, self._problem)
        if data is None:
            return None
        try:
            rec = Attachment.from_json(data)
        except (ValueError, UnicodeDecodeError) as e:
            self._problem(path, f"attachment record is not valid ({e}), ignored")
            return None
        if (
            not is_valid_id(rec.container_id)
            or interface_name_problem(rec.ifname)
            or (os.path.basename(path) != record_name(rec.container_id, rec.ifname))
        ):
            self._problem(path, "attachment record does not match its name, ignored")
            return None
        return rec

    def put(self, record: Attachment) -> None:
        """Store ``record`` atomically (temp + rename, not fsynced: see the module
        docstring), replacing any earlier one."""
        path = self._path(record.container_id, record.ifname)
        try:
            os.makedirs(self.dir, 0o755, exist_ok=True)
        except OSError as e:
            raise files.io_error("creating the records directory", self.dir, e) from None
        files.replace_file(self.dir, os.path.basename(path), record.to_json(), sync=False)

    def get(self, container_id: str, ifname: str) -> Attachment | None:
        return self._load(self._path(container_id, ifname))

    def delete(self, container_id: str, ifname: str) -> None:
        """Idempotent."""
        files.remove(self._path(container_id, ifname), "deleting attachment record")

    def all(self) -> list[Attachment]:
        """Every valid record (invalid ones noted in ``problems``)."""
        try:
            it = os.scandir(self.dir)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise files.io_error("listing", self.dir, e) from None
        out: list[Attachment] = []
        with it:
            for entry in it:
                name = entry.name
                if name.startswith(files.TMP_PREFIX):
                    files.sweep_tmp(entry)
                elif name[0] != "." and name.endswith(".json"):
                    rec = self._load(entry.path)
                    if rec is not None:
                        out.append(rec)
        return out
