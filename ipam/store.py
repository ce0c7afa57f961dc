"""The reservation store's interface (host-local's ``backend.Store``) and its record type.
Pure: the allocator depends on this, never on a backend (``ipam.disk`` is the one on disk).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from cnispec.ip import IPAddress


class Reservation(NamedTuple):
    """One reservation record.  ``ifname`` is "" for legacy id-only records."""

    ip: IPAddress
    container_id: str
    ifname: str


class Store(Protocol):
    """What the allocator needs from a reservation store (host-local's ``backend.Store``)."""

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool:
        """Atomically claim ``ip``; False if already taken.  Records last_reserved_ip."""
        ...

    def last_reserved_ip(self, range_id: str) -> IPAddress | None: ...

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]: ...

    def release(self, ip: IPAddress) -> None:
        """Idempotent."""
        ...

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Idempotent; returns the addresses it removed."""
        ...

    def reservations(self) -> list[Reservation]:
        """Every valid record."""
        ...
