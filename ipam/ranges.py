"""host-local's ``Range`` / ``RangeSet`` / ``RangeIter``, in Python.  Pure: no I/O.

Semantics follow containernetworking/plugins ``plugins/ipam/host-local/backend/allocator``
(names kept so operators can compare), implemented here on plain integers:

* ``Range(subnet, range_start=None, range_end=None, gateway=None)`` validates and fills the
  defaults the way host-local's ``Range.Canonicalize`` does: the subnet must not have host
  bits set and must leave room for hosts (/31, /32, /127, /128 are refused);
  ``range_start`` defaults to network+1, ``range_end`` to the last usable address (broadcast-1
  for IPv4, the last address for IPv6), ``gateway`` to network+1.  Start, end and gateway
  must be usable addresses of the subnet (not the network address, not the IPv4 broadcast)
  and start <= end.
* ``RangeSet``: one or more ranges of one family that must not overlap.
* ``RangeIter``: visits every candidate address of the set exactly once, round robin,
  starting just after the last reserved address (when it lies in the set) and wrapping
  across ranges and around; each range's gateway is skipped.  O(1) memory.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from cnispec.errors import InvalidConfig
from cnispec.ip import IPAddress, IPNetwork

if TYPE_CHECKING:
    from collections.abc import Iterable


def parse_ip(value: str | IPAddress, what: str = "address") -> IPAddress:
    """Parse an IP address (no zone index); InvalidConfig naming ``what`` when invalid."""
    if isinstance(value, IPAddress):
        if isinstance(value, ipaddress.IPv6Address) and value.scope_id:
            raise InvalidConfig(f"invalid {what}", f"{value}: zone index not allowed")
        return value
    if not isinstance(value, str) or "%" in value:
        raise InvalidConfig(f"invalid {what}", f"{value!r} is not an IP address")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise InvalidConfig(f"invalid {what}", f"{value!r} is not an IP address") from None


class Range:
    """A canonical, validated range.  Attributes are never None after construction."""

    __slots__ = ("subnet", "range_start", "range_end", "gateway", "_start", "_end", "_gw", "_cls")

    subnet: IPNetwork
    range_start: IPAddress
    range_end: IPAddress
    gateway: IPAddress

    def __init__(
        self,
        subnet: str | IPNetwork,
        range_start: str | IPAddress | None = None,
        range_end: str | IPAddress | None = None,
        gateway: str | IPAddress | None = None,
    ) -> None:
        if isinstance(subnet, IPNetwork):
            net = subnet
        else:
            if not isinstance(subnet, str) or "/" not in subnet:
                raise InvalidConfig("invalid subnet", f"{subnet!r} is not a CIDR network")
            try:
                net = ipaddress.ip_network(subnet, strict=True)
            except ValueError as e:
                raise InvalidConfig("invalid subnet", f"{subnet!r}: {e}") from None
        if net.prefixlen > net.max_prefixlen - 2:
            raise InvalidConfig("invalid subnet", f"network {net} too small to allocate from")
        cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
        first = int(net.network_address) + 1
        last = int(net.broadcast_address) - (1 if net.version == 4 else 0)

        def pick(value: str | IPAddress | None, default: int, what: str) -> int:
            if value is None:
                return default
            ip = parse_ip(value, what)
            n = int(ip)
            if ip.version != net.version or not first <= n <= last:
                raise InvalidConfig(f"invalid {what}", f"{ip} not in network {net}")
            return n

        start = pick(range_start, first, "rangeStart")
        end = pick(range_end, last, "rangeEnd")
        gw = pick(gateway, first, "gateway")
        if start > end:
            raise InvalidConfig(
                "invalid range", f"rangeStart {cls(start)} is after rangeEnd {cls(end)}"
            )
        self.subnet = net
        self.range_start = cls(start)
        self.range_end = cls(end)
        self.gateway = cls(gw)
        self._start = start
        self._end = end
        self._gw = gw
        self._cls = cls

    @classmethod
    def canonicalize(
        cls,
        subnet: str | IPNetwork,
        range_start: str | IPAddress | None = None,
        range_end: str | IPAddress | None = None,
        gateway: str | IPAddress | None = None,
    ) -> Range:
        """Go-style name for the constructor (which always canonicalizes)."""
        return cls(subnet, range_start, range_end, gateway)

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.subnet.version

    @property
    def capacity(self) -> int:
        """How many addresses this range can hand out (gateway excluded)."""
        n = self._end - self._start + 1
        return n - 1 if self._start <= self._gw <= self._end else n

    def contains(self, ip: IPAddress) -> bool:
        """True when ``ip`` lies in [range_start, range_end] (the gateway included)."""
        return ip.version == self.subnet.version and self._start <= int(ip) <= self._end

    def overlaps(self, other: Range) -> bool:
        return (
            self.subnet.version == other.subnet.version
            and self._start <= other._end
            and other._start <= self._end
        )

    def describe(self) -> str:
        """``"<start>-<end>"``; the start skips the gateway when they coincide."""
        start = self._start
        if start == self._gw and start < self._end:
            start += 1
        return f"{self._cls(start)}-{self.range_end}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Range):
            return NotImplemented
        return (self.subnet, self._start, self._end, self._gw) == (
            other.subnet,
            other._start,
            other._end,
            other._gw,
        )

    def __hash__(self) -> int:
        return hash((self.subnet, self._start, self._end, self._gw))

    def __repr__(self) -> str:
        return (
            f"Range(subnet={str(self.subnet)!r}, range_start={str(self.range_start)!r}, "
            f"range_end={str(self.range_end)!r}, gateway={str(self.gateway)!r})"
        )


class RangeSet:
    """Non-empty tuple of non-overlapping ranges of one address family."""

    __slots__ = ("ranges",)

    ranges: tuple[Range, ...]

    def __init__(self, ranges: Iterable[Range]) -> None:
        rs = tuple(ranges)
        if not rs:
            raise InvalidConfig("invalid range set", "no ranges given")
        for i, a in enumerate(rs):
            if not isinstance(a, Range):
                raise InvalidConfig("invalid range set", f"{a!r} is not a Range")
            if a.family != rs[0].family:
                raise InvalidConfig(
                    "invalid range set",
                    f"mixed address families: {rs[0].describe()} and {a.describe()}",
                )
            for b in rs[:i]:
                if a.overlaps(b):
                    raise InvalidConfig(
                        "invalid range set",
                        f"range {a.describe()} overlaps range {b.describe()}",
                    )
        self.ranges = rs

    @property
    def family(self) -> int:
        return self.ranges[0].family

    @property
    def capacity(self) -> int:
        """Total number of addresses the set can hand out."""
        return sum(r.capacity for r in self.ranges)

    def contains(self, ip: IPAddress) -> Range | None:
        """The range holding ``ip`` (see :meth:`Range.contains`), else None."""
        for r in self.ranges:
            if r.contains(ip):
                return r
        return None

    def describe(self) -> str:
        return ", ".join(r.describe() for r in self.ranges)

    def host_local_text(self) -> str:
        """The set as host-local's errors about a requested address print it (its
        ``RangeSet.String``): each range's configured start, gateway included."""
        return ",".join(f"{r.range_start}-{r.range_end}" for r in self.ranges)

    def iterate(self, last_reserved_ip: IPAddress | None = None) -> RangeIter:
        """Candidates round robin, starting just after ``last_reserved_ip``."""
        return RangeIter(self, last_reserved_ip)

    def __iter__(self) -> RangeIter:
        return RangeIter(self, None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"RangeSet({list(self.ranges)!r})"


class RangeIter:
    """Iterator over a RangeSet's candidate addresses; see the module docstring.

    State is three integers: current range index, current address, positions left (the
    total number of addresses in all ranges, gateways included, so every address is visited
    once).  ``range`` is the Range of the address last returned.
    """

    __slots__ = ("_ranges", "_idx", "_cur", "_left", "range")

    range: Range | None

    def __init__(self, range_set: RangeSet, last_reserved_ip: IPAddress | None = None) -> None:
        ranges = range_set.ranges
        self._ranges = ranges
        self._left = sum(r._end - r._start + 1 for r in ranges)
        self._idx = 0
        self._cur = ranges[0]._start
        self.range = None
        if last_reserved_ip is not None:
            for i, r in enumerate(ranges):
                if r.contains(last_reserved_ip):
                    n = int(last_reserved_ip)
                    if n < r._end:
                        self._idx, self._cur = i, n + 1
                    else:
                        self._idx = (i + 1) % len(ranges)
                        self._cur = ranges[self._idx]._start
                    break

    def __iter__(self) -> RangeIter:
        return self

    def __next__(self) -> IPAddress:
        ranges = self._ranges
        while self._left > 0:
            self._left -= 1
            r = ranges[self._idx]
            cur = self._cur
            if cur < r._end:
                self._cur = cur + 1
            else:
                self._idx = idx = (self._idx + 1) % len(ranges)
                self._cur = ranges[idx]._start
            if cur != r._gw:
                self.range = r
                return r._cls(cur)
        raise StopIteration
