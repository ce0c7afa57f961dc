"""The netlink adapter: the only module that imports pyroute2.

It drives rtnetlink over a plain ``AF_NETLINK`` socket with pyroute2's message classes
(``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``) and nothing else of pyroute2: the package's
``__init__`` imports nearly all of pyroute2 (asyncio, ssl, ...) and costs ~100 ms per exec,
while the message classes cost ~20 ms. So the ``pyroute2`` package object is registered as a
bare namespace before its submodules are imported (see ``_load_pyroute2``).

A socket belongs to the network namespace it was created in, so one ``Netlink`` per
namespace serves a whole command: the host-side one is opened in place, the pod-side one by
entering the pod netns just long enough to create the socket (``cni.linux.netns``).

A dump the kernel flags as having raced a change (``NLM_F_DUMP_INTR``: an address or route
added or removed by another pod's ADD or DEL meanwhile) is never used: it is repeated, a
bounded number of times, then answered "try again" (``consistent_dump``).

Every kernel error is mapped here, by errno, to our exceptions (``NotFound``, ``Exists``,
``NetlinkFailure``); callers never see pyroute2's exceptions or compare message strings.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from cnispec.errors import TRY_AGAIN_ERRNOS, CNIError, NetlinkFailure, TryAgainLater, os_errors
from cnispec.ip import IPAddress, IPInterface, IPNetwork


def _load_pyroute2() -> Any:
    """Import pyroute2's netlink codec (``nla``/``nlmsg``) without ``pyroute2/__init__``."""
    if "pyroute2" not in sys.modules:
        import importlib.util
        import types

        spec = importlib.util.find_spec("pyroute2")
        if spec is None or spec.submodule_search_locations is None:  # pragma: no cover
            raise ImportError("pyroute2 is not installed")
        pkg = types.ModuleType("pyroute2")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["pyroute2"] = pkg
    from pyroute2 import netlink

    return netlink.nla, netlink.nlmsg


_nla, _nlmsg = _load_pyroute2()

# The rtnetlink messages weft sends and reads, declared on pyroute2's codec with only the
# attributes weft uses. pyroute2's own ifinfmsg/rtmsg modules declare every link kind it
# knows (and pull in pyroute2.config: multiprocessing, platform, pkgutil): ≈10 ms per exec.
# Attribute numbers are the kernel's (linux/if_link.h, linux/rtnetlink.h, linux/if_addr.h);
# attributes not declared here decode as opaque bytes.
_IFINFO_FIELDS = (
    ("family", "B"),
    ("__align", "x"),
    ("ifi_type", "H"),
    ("index", "i"),
    ("flags", "I"),
    ("change", "I"),
)


class _brport(_nla):  # type: ignore[misc,valid-type]
    nla_map = ((0, "IFLA_BRPORT_UNSPEC", "none"), (4, "IFLA_BRPORT_MODE", "uint8"))


class _veth(_nla):  # type: ignore[misc,valid-type]
    nla_map = ((0, "VETH_INFO_UNSPEC", "none"), (1, "VETH_INFO_PEER", "peer"))

    @staticmethod
    def peer(self: Any, *argv: Any, **kwarg: Any) -> Any:
        return _peer


class _linkinfo(_nla):  # type: ignore[misc,valid-type]
    nla_map = (
        (0, "IFLA_INFO_UNSPEC", "none"),
        (1, "IFLA_INFO_KIND", "asciiz"),
        (2, "IFLA_INFO_DATA", "info_data"),
        (4, "IFLA_INFO_SLAVE_KIND", "asciiz"),
        (5, "IFLA_INFO_SLAVE_DATA", "info_slave_data"),
    )

    @staticmethod
    def info_data(self: Any, *argv: Any, **kwarg: Any) -> Any:
        return _veth if self.get_attr("IFLA_INFO_KIND") == "veth" else self.hex

    @staticmethod
    def info_slave_data(self: Any, *argv: Any, **kwarg: Any) -> Any:
        return _brport if self.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge" else self.hex


_IFLA_MAP = (
    (0, "IFLA_UNSPEC", "none"),
    (1, "IFLA_ADDRESS", "l2addr"),
    (3, "IFLA_IFNAME", "asciiz"),
    (4, "IFLA_MTU", "uint32"),
    (5, "IFLA_LINK", "uint32"),
    (10, "IFLA_MASTER", "uint32"),
    (18, "IFLA_LINKINFO", "linkinfo"),
    (28, "IFLA_NET_NS_FD", "uint32"),
)


class _ifinfmsg(_nlmsg):  # type: ignore[misc,valid-type]
    fields = _IFINFO_FIELDS
    nla_map = _IFLA_MAP
    linkinfo = _linkinfo


class _peer(_nla):  # type: ignore[misc,valid-type]
    """VETH_INFO_PEER: an ifinfomsg header followed by link attributes."""

    fields = _IFINFO_FIELDS
    nla_map = _IFLA_MAP
    linkinfo = _linkinfo


class _ifaddrmsg(_nlmsg):  # type: ignore[misc,valid-type]
    fields = (("family", "B"), ("prefixlen", "B"), ("flags", "B"), ("scope", "B"), ("index", "I"))
    nla_map = (
        (0, "IFA_UNSPEC", "none"),
        (1, "IFA_ADDRESS", "ipaddr"),
        (2, "IFA_LOCAL", "ipaddr"),
        (4, "IFA_BROADCAST", "ipaddr"),
        (8, "IFA_FLAGS", "uint32"),
    )


class _rtmsg(_nlmsg):  # type: ignore[misc,valid-type]
    fields = (
        ("family", "B"),
        ("dst_len", "B"),
        ("src_len", "B"),
        ("tos", "B"),
        ("table", "B"),
        ("proto", "B"),
        ("scope", "B"),
        ("type", "B"),
        ("flags", "I"),
    )
    nla_map = (
        (0, "RTA_UNSPEC", "none"),
        (1, "RTA_DST", "ipaddr"),
        (4, "RTA_OIF", "uint32"),
        (5, "RTA_GATEWAY", "ipaddr"),
        (15, "RTA_TABLE", "uint32"),
    )


# rtnetlink constants (linux/rtnetlink.h, linux/netlink.h, linux/if.h)
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO = 0x1, 0x2, 0x4, 0x8
NLM_F_DUMP_INTR = 0x10  # the kernel's tables changed while it was dumping them
NLM_F_ROOT, NLM_F_MATCH = 0x100, 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFF_UP = 0x1
IFF_PROMISC = 0x100
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1
IFA_F_NODAD = 0x02
_HDR = struct.Struct("=IHHII")
_IFA_INDEX = struct.Struct("=I")  # ifaddrmsg.ifa_index, after family/prefixlen/flags/scope
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12


class NotFound(NetlinkFailure):
    """The link, address or route does not exist (ENODEV/ENOENT/ESRCH/EADDRNOTAVAIL)."""


class Exists(NetlinkFailure):
    """The object already exists (EEXIST)."""


class DumpInterrupted(TryAgainLater):
    """A dump raced a change (NLM_F_DUMP_INTR): what it returned may miss or repeat
    objects, so it is never used."""


# How often a dump that raced a change is repeated before the command answers "try again"
# (code 11): as the reference's netlinksafe. A node where addresses and routes change this
# often is better served by the runtime's retry than by a plugin spinning.
DUMP_ATTEMPTS = 5

T = TypeVar("T")


def consistent_dump(dump: Callable[[], T], what: str, attempts: int = DUMP_ATTEMPTS) -> T:
    """``dump()`` again while it raises ``DumpInterrupted``, at most ``attempts`` times in
    all; then ``TryAgainLater`` (code 11)."""
    for _ in range(attempts):
        try:
            return dump()
        except DumpInterrupted:
            continue
    raise TryAgainLater(
        f"{what}: the kernel's tables kept changing during the dump, try again",
        f"interrupted {attempts} times in a row (NLM_F_DUMP_INTR)",
    )


_NOT_FOUND = {errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL}


def map_errno(err: int, what: str) -> CNIError:
    """The one place where the errnos of netlink replies become our exceptions."""
    name = errno.errorcode.get(err, str(err))
    detail = f"{os.strerror(err)} ({name})"
    if err in TRY_AGAIN_ERRNOS:
        return TryAgainLater(f"{what}: try again", detail)
    if err == errno.EEXIST:
        return Exists(f"{what}: already exists", detail)
    if err in _NOT_FOUND:
        return NotFound(f"{what}: not found", detail)
    return NetlinkFailure(f"{what} failed", detail)


class Link(NamedTuple):
    ifindex: int
    name: str
    kind: str | None
    mtu: int
    mac: str
    master: int | None
    up: bool
    promisc: bool
    hairpin: bool | None  # bridge-port hairpin mode, None when not a bridge port
    peer: int | None = None  # a veth's peer ifindex (in the peer's namespace)


class Addr(NamedTuple):
    ifindex: int
    address: IPInterface


class KernelRoute(NamedTuple):
    """A route as the kernel reports it (``cni.protocol.types.Route`` is a CNI result's)."""

    dst: IPNetwork
    gateway: IPAddress | None
    oif: int | None
    table: int


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


class Netlink:
    """A synchronous rtnetlink client over one socket (one network namespace)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = 0

    @classmethod
    def open(cls) -> Netlink:
        """A socket in the caller's current network namespace."""
        with os_errors("opening a netlink socket"):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                with contextlib.suppress(OSError):  # kernels < 4.20: dumps are unfiltered
                    sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
                sock.bind((0, 0))
            except OSError:
                sock.close()
                raise
        return cls(sock)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport -------------------------------------------------------------------
    def _request(self, msg: Any, msg_type: int, flags: int, what: str) -> list[bytes]:
        self._seq += 1
        seq = self._seq
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | flags
        msg["header"]["sequence_number"] = seq
        msg.encode()
        with os_errors(what):
            self._sock.send(msg.data)
        replies: list[bytes] = []
        interrupted = False
        while True:
            with os_errors(what):
                buf = self._sock.recv(1 << 18)
            off = 0
            while off + _HDR.size <= len(buf):
                length, mtype, mflags, mseq, _pid = _HDR.unpack_from(buf, off)
                if length < _HDR.size:
                    raise NetlinkFailure(f"{what} failed", "malformed netlink reply")
                chunk = buf[off : off + length]
                off += (length + 3) & ~3
                if mseq != seq:
                    continue
                interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", chunk, _HDR.size)
                    if code:
                        raise map_errno(-code, what)
                    return replies  # ACK
                if mtype == NLMSG_DONE:
                    if interrupted:  # read to the end first: the socket serves the next request
                        raise DumpInterrupted(f"{what}: interrupted", "NLM_F_DUMP_INTR")
                    return replies
                replies.append(chunk)
                if not mflags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return replies

    # ---- links -----------------------------------------------------------------------
    @staticmethod
    def _link_from(raw: bytes) -> Link:
        m = _ifinfmsg(raw)
        m.decode()
        kind = None
        hairpin = None
        info = m.get_attr("IFLA_LINKINFO")
        if info is not None:
            kind = info.get_attr("IFLA_INFO_KIND")
            if info.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge":
                slave = info.get_attr("IFLA_INFO_SLAVE_DATA")
                if slave is not None:
                    mode = slave.get_attr("IFLA_BRPORT_MODE")
                    hairpin = bool(mode) if mode is not None else None
        flags = m["flags"]
        return Link(
            ifindex=m["index"],
            name=m.get_attr("IFLA_IFNAME"),
            kind=kind,
            mtu=m.get_attr("IFLA_MTU") or 0,
            mac=m.get_attr("IFLA_ADDRESS") or "",
            master=m.get_attr("IFLA_MASTER"),
            up=bool(flags & IFF_UP),
            promisc=bool(flags & IFF_PROMISC),
            hairpin=hairpin,
            peer=m.get_attr("IFLA_LINK"),
        )

    def link_get(self, name: str) -> Link | None:
        msg = _ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        try:
            raw = self._request(msg, RTM_GETLINK, 0, f"get link {name}")
        except NotFound:
            return None
        return self._link_from(raw[0]) if raw else None

    def link_by_index(self, index: int) -> Link | None:
        msg = _ifinfmsg()
        msg["index"] = index
        try:
            raw = self._request(msg, RTM_GETLINK, 0, f"get link #{index}")
        except NotFound:
            return None
        return self._link_from(raw[0]) if raw else None

    def bridge_add(self, name: str, mtu: int | None) -> None:
        msg = _ifinfmsg()
        # A fixed, locally administered MAC: otherwise the bridge takes the lowest MAC of
        # its ports and the pods' gateway MAC changes whenever a pod comes or goes.
        mac = bytearray(os.urandom(6))
        mac[0] = (mac[0] & 0xFE) | 0x02
        attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", name), ("IFLA_ADDRESS", mac.hex(":"))]
        if mtu:
            attrs.append(("IFLA_MTU", mtu))
        attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}))
        msg["attrs"] = attrs
        flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        self._request(msg, RTM_NEWLINK, flags, f"create bridge {name}")

    def veth_add(
        self,
        name: str,
        peer_name: str,
        peer_netns_fd: int,
        mtu: int | None,
        master: int | None,
    ) -> Link | None:
        """Create a veth pair: ``name`` here (enslaved to ``master`` and up), the peer
        created directly inside the namespace ``peer_netns_fd`` (down, configured later).

        Returns the new host end as the kernel announced it (``NLM_F_ECHO``: its index,
        MAC and peer index, which stay as they are), or None from a kernel that does not
        echo a new link (before 6.1): then the caller asks for it."""
        peer: list[tuple[str, Any]] = [
            ("IFLA_IFNAME", peer_name),
            ("IFLA_NET_NS_FD", peer_netns_fd),
        ]
        attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", name)]
        if mtu:
            attrs.append(("IFLA_MTU", mtu))
            peer.append(("IFLA_MTU", mtu))
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        attrs.append(
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_KIND", "veth"),
                        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer})]}),
                    ]
                },
            )
        )
        msg = _ifinfmsg()
        msg["attrs"] = attrs
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
        flags = NLM_F_ACK | NLM_F_ECHO | NLM_F_CREATE | NLM_F_EXCL
        replies = self._request(msg, RTM_NEWLINK, flags, f"create veth {name}/{peer_name}")
        for raw in replies:
            if _HDR.unpack_from(raw)[1] == RTM_NEWLINK:
                link = self._link_from(raw)
                if link.name == name:
                    return link
        return None

    def link_set(
        self,
        index: int,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        promisc: bool | None = None,
    ) -> None:
        msg = _ifinfmsg()
        msg["index"] = index
        flags = change = 0
        if up is not None:
            change |= IFF_UP
            flags |= IFF_UP if up else 0
        if promisc is not None:
            change |= IFF_PROMISC
            flags |= IFF_PROMISC if promisc else 0
        msg["flags"] = flags
        msg["change"] = change
        if mtu:
            msg["attrs"] = [("IFLA_MTU", mtu)]
        self._request(msg, RTM_NEWLINK, NLM_F_ACK, f"set link #{index}")

    def set_hairpin(self, index: int, on: bool) -> None:
        """``ip link set dev X type bridge_slave hairpin on`` (the port must be enslaved)."""
        msg = _ifinfmsg()
        msg["index"] = index
        msg["attrs"] = [
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_SLAVE_KIND", "bridge"),
                        ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", int(on))]}),
                    ]
                },
            )
        ]
        self._request(msg, RTM_NEWLINK, NLM_F_ACK, f"set hairpin on link #{index}")

    def link_del(self, index: int) -> None:
        msg = _ifinfmsg()
        msg["index"] = index
        self._request(msg, RTM_DELLINK, NLM_F_ACK, f"delete link #{index}")

    # ---- addresses -------------------------------------------------------------------
    def addrs(self, index: int | None = None, version: int | None = None) -> list[Addr]:
        """Addresses (of one link). The kernel filters a dump by index on a strict-checking
        socket; the header is checked here too, before any decoding, so that a node with
        hundreds of veths (each with its link-local address) costs no Python decoding."""

        def dump() -> list[bytes]:
            msg = _ifaddrmsg()
            msg["family"] = _family(version) if version else 0
            msg["index"] = index or 0
            return self._request(msg, RTM_GETADDR, NLM_F_DUMP, "dump addresses")

        out: list[Addr] = []
        for raw in consistent_dump(dump, "dump addresses"):
            if index is not None and _IFA_INDEX.unpack_from(raw, _HDR.size + 4)[0] != index:
                continue
            m = _ifaddrmsg(raw)
            m.decode()
            ip = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
            if ip is None:
                continue
            iface = ipaddress.ip_interface(f"{ip}/{m['prefixlen']}")
            out.append(Addr(m["index"], iface))
        return out

    def _addr_msg(self, index: int, iface: IPInterface) -> Any:
        msg = _ifaddrmsg()
        msg["family"] = _family(iface.version)
        msg["prefixlen"] = iface.network.prefixlen
        msg["index"] = index
        attrs: list[tuple[str, Any]] = [
            ("IFA_LOCAL", str(iface.ip)),
            ("IFA_ADDRESS", str(iface.ip)),
        ]
        if iface.version == 4 and iface.network.prefixlen < 31:
            attrs.append(("IFA_BROADCAST", str(iface.network.broadcast_address)))
        if iface.version == 6:
            attrs.append(("IFA_FLAGS", IFA_F_NODAD))
        msg["attrs"] = attrs
        return msg

    def addr_add(self, index: int, iface: IPInterface) -> None:
        flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        self._request(self._addr_msg(index, iface), RTM_NEWADDR, flags, f"add address {iface}")

    def addr_del(self, index: int, iface: IPInterface) -> None:
        self._request(
            self._addr_msg(index, iface), RTM_DELADDR, NLM_F_ACK, f"delete address {iface}"
        )

    # ---- routes ----------------------------------------------------------------------
    def routes(self, version: int, table: int = RT_TABLE_MAIN) -> list[KernelRoute]:

        def dump() -> list[bytes]:
            msg = _rtmsg()
            msg["family"] = _family(version)
            return self._request(msg, RTM_GETROUTE, NLM_F_DUMP, "dump routes")

        out: list[KernelRoute] = []
        for raw in consistent_dump(dump, "dump routes"):
            m = _rtmsg(raw)
            m.decode()
            rt_table = m.get_attr("RTA_TABLE") or m["table"]
            if rt_table != table:
                continue
            dst = m.get_attr("RTA_DST")
            zero = "0.0.0.0" if version == 4 else "::"
            net = ipaddress.ip_network(f"{dst or zero}/{m['dst_len']}", strict=False)
            gw = m.get_attr("RTA_GATEWAY")
            out.append(
                KernelRoute(
                    net, ipaddress.ip_address(gw) if gw else None, m.get_attr("RTA_OIF"), rt_table
                )
            )
        return out

    def route_add(self, dst: IPNetwork, gateway: IPAddress | None, oif: int) -> None:
        msg = _rtmsg()
        msg["family"] = _family(dst.version)
        msg["dst_len"] = dst.prefixlen
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = RTPROT_BOOT
        msg["scope"] = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        msg["type"] = RTN_UNICAST
        attrs: list[tuple[str, Any]] = [("RTA_OIF", oif)]
        if dst.prefixlen:
            attrs.append(("RTA_DST", str(dst.network_address)))
        if gateway is not None:
            attrs.append(("RTA_GATEWAY", str(gateway)))
        msg["attrs"] = attrs
        flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        via = f" via {gateway}" if gateway else ""
        self._request(msg, RTM_NEWROUTE, flags, f"add route {dst}{via}")
