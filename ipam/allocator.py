"""host-local's ``Allocator`` over a ``Store`` protocol.  Pure: the store does all I/O.

``Allocator.get`` follows host-local's ``(*IPAllocator).Get``:

1. (container_id, ifname) holds nothing yet: the caller has checked, once for every range
   set, with :func:`refuse_duplicate`;
2. a requested IP must lie in the set, must not be a gateway and must be free (one held
   by an attachment ``reclaim`` approves is taken back first);
3. otherwise walk :class:`ipam.ranges.RangeIter` from ``store.last_reserved_ip(range_id)``
   and take the first address ``store.reserve`` accepts (one O_EXCL create per probe, so a
   get() costs O(probes), never a scan of all reservations);
4. when nothing is free and a ``reclaim`` callback is given, offer it every reservation of
   this range set (``store.reservations()``, only on this slow path), release those it
   approves and walk once more;
5. still nothing -> :class:`cnispec.errors.RangeExhausted` with host-local's wording.

The caller holds the store lock around get()/release().
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, NamedTuple

from cnispec.errors import DuplicateAllocation, InvalidConfig, RangeExhausted
from cnispec.ip import IPAddress, IPInterface
from ipam.ranges import RangeSet, parse_ip
from ipam.store import Reservation, Store

if TYPE_CHECKING:
    from collections.abc import Callable


class Allocation(NamedTuple):
    """Result of :meth:`Allocator.get`: address with the range subnet's prefix, and that
    range's gateway."""

    address: IPInterface
    gateway: IPAddress


def _iface(ip: IPAddress, prefixlen: int) -> IPInterface:
    if isinstance(ip, ipaddress.IPv4Address):
        return ipaddress.IPv4Interface((ip, prefixlen))
    return ipaddress.IPv6Interface((ip, prefixlen))


def refuse_duplicate(held: list[IPAddress], container_id: str, ifname: str) -> None:
    """An attachment is allocated for once: a retried ADD must not silently take a second
    address (host-local refuses only without a requested IP, per range set; weft in both
    cases, for all sets at once)."""
    if held:
        raise DuplicateAllocation(
            f"{held[0]} has been allocated to {container_id}/{ifname}, "
            "duplicate allocation is not allowed",
            "run DEL first",
        )


def exhausted_message(range_set: RangeSet) -> str:
    if len(range_set.ranges) == 1:
        return f"no IP addresses available in range {range_set.describe()}"
    return f"no IP addresses available in range set: {range_set.describe()}"


class Allocator:
    __slots__ = ("range_set", "store", "range_id")

    def __init__(self, range_set: RangeSet, store: Store, range_id: str) -> None:
        self.range_set = range_set
        self.store = store
        self.range_id = range_id

    def get(
        self,
        container_id: str,
        ifname: str,
        requested_ip: str | IPAddress | None = None,
        reclaim: Callable[[Reservation], bool] | None = None,
    ) -> Allocation:
        rs = self.range_set
        if requested_ip is not None:
            ip = parse_ip(requested_ip, "requested IP")
            r = rs.contains(ip)
            if r is None:
                raise InvalidConfig(f"{ip} not in range set {rs.host_local_text()}")
            if ip == r.gateway:
                raise InvalidConfig(f"requested ip {ip} is subnet's gateway")
            if not self._reserve_requested(container_id, ifname, ip, reclaim):
                raise DuplicateAllocation(
                    f"requested IP address {ip} is not available in range set "
                    f"{rs.host_local_text()}"
                )
            return Allocation(_iface(ip, r.subnet.prefixlen), r.gateway)

        got = self._walk(container_id, ifname)
        if got is None and reclaim is not None and self._reclaim(reclaim):
            got = self._walk(container_id, ifname)
        if got is None:
            raise RangeExhausted(exhausted_message(rs))
        return got

    def _reserve_requested(
        self,
        container_id: str,
        ifname: str,
        ip: IPAddress,
        reclaim: Callable[[Reservation], bool] | None,
    ) -> bool:
        """Claim ``ip``; when another attachment holds it, offer that one to ``reclaim``
        (a pod pinned to its address that comes back after a crash gets it again)."""
        store = self.store
        if store.reserve(container_id, ifname, ip, self.range_id):
            return True
        if reclaim is None:
            return False
        holder = next((res for res in store.reservations() if res.ip == ip), None)
        if holder is None or not reclaim(holder):
            return False
        store.release(ip)
        return store.reserve(container_id, ifname, ip, self.range_id)

    def _walk(self, container_id: str, ifname: str) -> Allocation | None:
        store = self.store
        it = self.range_set.iterate(store.last_reserved_ip(self.range_id))
        for ip in it:
            if store.reserve(container_id, ifname, ip, self.range_id):
                r = it.range
                assert r is not None
                return Allocation(_iface(ip, r.subnet.prefixlen), r.gateway)
        return None

    def _reclaim(self, reclaim: Callable[[Reservation], bool]) -> bool:
        freed = False
        rs = self.range_set
        for res in self.store.reservations():
            if rs.contains(res.ip) is not None and reclaim(res):
                self.store.release(res.ip)
                freed = True
        return freed

    def release(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Release everything (container_id, ifname) holds in this store (as host-local)."""
        return self.store.release_by_id(container_id, ifname)
