"""weft's attachment record (pure): what ADD made and where -- the host veth, the netns path
and identity, the boot it was made in, whether a masquerade rule exists -- and its JSON
form. ``ipam.attachments`` keeps one per attachment on disk."""

from __future__ import annotations

import ipaddress
import json
from typing import Any, NamedTuple

from cnispec.digest import sha256_hex
from cnispec.ip import IPInterface


class NetnsId(NamedTuple):
    """A network namespace's identity: the device and inode of its nsfs file (``stat`` of
    any path naming it, or of an fd open on it). A path is only a name: ``/proc/<pid>/ns/net``
    names another namespace once the pid is reused, ``/run/netns/<name>`` once the name is."""

    device: int
    inode: int


class Attachment(NamedTuple):
    """One attachment as ADD made it."""

    container_id: str
    ifname: str
    host_veth: str
    netns: str
    boot_id: str  # the kernel's boot_id at ADD: a record from another boot is a leftover
    ip_masq: bool
    bridge: str
    ips: tuple[IPInterface, ...]
    pod_namespace: str = ""  # K8S_POD_NAMESPACE / K8S_POD_NAME from CNI_ARGS, for operators
    pod_name: str = ""
    netns_id: NetnsId | None = None  # None: recorded before weft recorded it

    @property
    def versions(self) -> set[int]:
        """The address families the attachment uses."""
        return {ip.version for ip in self.ips}

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {
            "containerID": self.container_id,
            "ifname": self.ifname,
            "hostVeth": self.host_veth,
            "netns": self.netns,
            "bootID": self.boot_id,
            "ipMasq": self.ip_masq,
            "bridge": self.bridge,
            "ips": [str(ip) for ip in self.ips],
        }
        if self.pod_namespace:
            obj["podNamespace"] = self.pod_namespace
        if self.pod_name:
            obj["podName"] = self.pod_name
        if self.netns_id is not None:
            obj["netnsDevice"], obj["netnsInode"] = self.netns_id
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Attachment:
        """Parse a record; ValueError naming what is wrong."""
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")

        def field(key: str, kind: type, default: object = None) -> Any:
            v = obj.get(key, default)
            if not isinstance(v, kind):
                raise ValueError(f"{key}: expected {kind.__name__}, got {type(v).__name__}")
            return v

        ips = field("ips", list)
        netns_id = None
        if "netnsDevice" in obj or "netnsInode" in obj:
            dev, ino = field("netnsDevice", int), field("netnsInode", int)
            if isinstance(dev, bool) or isinstance(ino, bool) or dev < 0 or ino < 0:
                raise ValueError("netnsDevice/netnsInode: expected non-negative integers")
            netns_id = NetnsId(dev, ino)
        if not all(isinstance(ip, str) and "%" not in ip for ip in ips):
            raise ValueError("ips: expected addresses with a prefix")
        return cls(
            container_id=field("containerID", str),
            ifname=field("ifname", str),
            host_veth=field("hostVeth", str),
            netns=field("netns", str),
            boot_id=field("bootID", str),
            ip_masq=field("ipMasq", bool),
            bridge=field("bridge", str),
            ips=tuple(ipaddress.ip_interface(ip) for ip in ips),
            pod_namespace=field("podNamespace", str, ""),
            pod_name=field("podName", str, ""),
            netns_id=netns_id,
        )


def attachment_key(container_id: str, ifname: str) -> str:
    """The name of an attachment's files (record, lock): fixed length, path safe."""
    return sha256_hex(f"{container_id}\n{ifname}".encode())


def record_name(container_id: str, ifname: str) -> str:
    return attachment_key(container_id, ifname) + ".json"
