"""Throwaway network namespaces for the benchmark, and the ``ip -j`` oracle.

Everything is named ``<prefix>-<pid hex>-...`` (prefix ``wb``) so that parallel work by teammates
never collides, and every netns created here is deleted again by :meth:`Sandbox.destroy`.

The bench process itself enters the "node" netns once with ``setns(2)`` (see
:meth:`Sandbox.enter_node`); plugin children then inherit it, so no ``ip netns exec`` wrapper is
part of any timed figure. The kernel-state oracle is iproute2 (``ip -j -n <ns> ...``), never the
code under test. Both, and the netns directory, are the test sandbox library's
(tests/netns.py); what is the bench's own is creating and deleting hundreds of netns in one
``ip -b`` batch and reading them back in parallel.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

from tests.netns import NETNS_DIR, enter_netns, ip_json_parse, leave_netns
from tests.netns import ip_json as _ip_json


def run_ip(args: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run iproute2; return stdout. Raises RuntimeError with stderr on failure when ``check``."""
    proc = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip_json(netns: str, args: Sequence[str]) -> list[dict[str, Any]]:
    """``ip -j -n <netns> <args>`` parsed; an absent device yields ``[]``."""
    parsed: list[dict[str, Any]] = _ip_json(netns, *args, missing_ok=True)
    return parsed


def ip_json_many(
    netns_list: Sequence[str], args: Sequence[str], parallel: int = 32
) -> dict[str, list[dict[str, Any]]]:
    """Run the same ``ip -j -n NS args`` in many netns, ``parallel`` processes at a time."""
    results: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(netns_list), parallel):
        chunk = netns_list[start : start + parallel]
        procs = [
            (
                ns,
                subprocess.Popen(
                    ["ip", "-j", "-n", ns, *args],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for ns in chunk
        ]
        for ns, proc in procs:
            out, err = proc.communicate()
            argv = ["ip", "-j", "-n", ns, *args]
            results[ns] = ip_json_parse(argv, proc.returncode, out, err, missing_ok=True)
    return results


def ipv4_of(addr_show: list[dict[str, Any]], ifname: str) -> list[str]:
    """IPv4 ``local/prefixlen`` strings of ``ifname`` from ``ip -j addr show`` output."""
    found: list[str] = []
    for link in addr_show:
        if link.get("ifname") != ifname:
            continue
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                found.append(f"{info['local']}/{info['prefixlen']}")
    return found


def veths(netns: str) -> list[dict[str, Any]]:
    """All veth links in ``netns`` (``ip -j -d link show type veth``)."""
    return ip_json(netns, ["-d", "link", "show", "type", "veth"])


class Sandbox:
    """A node netns plus pools of pod netns, all under one unique name prefix."""

    def __init__(self, prefix: str = "wb") -> None:
        self.tag = f"{prefix}-{os.getpid():x}"
        self.node = f"{self.tag}-node"
        self.created: list[str] = []
        self._orig_fd: int | None = None

    def path(self, name: str) -> str:
        return os.path.join(NETNS_DIR, name)

    def _batch(self, verb: str, names: Iterable[str]) -> None:
        lines = "".join(f"netns {verb} {n}\n" for n in names)
        if lines:
            run_ip(["-b", "-"], stdin=lines, check=(verb == "add"))

    def create(self, pool_sizes: dict[str, int]) -> dict[str, list[str]]:
        """Create the node netns and one pod-netns pool per key; return the pools' names."""
        pools = {
            key: [f"{self.tag}-{key}{i}" for i in range(size)] for key, size in pool_sizes.items()
        }
        names = [self.node] + [n for pool in pools.values() for n in pool]
        # Record first so that a half-done batch is still cleaned up.
        self.created.extend(names)
        self._batch("add", names)
        run_ip(["-n", self.node, "link", "set", "lo", "up"])
        return pools

    def enter_node(self) -> None:
        """setns(2) this (single-threaded) process into the node netns; children inherit it."""
        if self._orig_fd is None:
            self._orig_fd = enter_netns(self.path(self.node))

    def leave_node(self) -> None:
        if self._orig_fd is not None:
            orig, self._orig_fd = self._orig_fd, None
            leave_netns(orig)

    def destroy(self) -> None:
        """Back to the original netns, then delete every netns this sandbox created."""
        try:
            self.leave_node()
        finally:
            self._batch("del", [n for n in self.created if os.path.exists(self.path(n))])
            self.created.clear()


def cleanup_stale(prefix: str = "wb") -> list[str]:
    """Delete ``<prefix>-<pid>-*`` netns left by bench runs whose pid is gone."""
    pat = re.compile(rf"^{re.escape(prefix)}-([0-9a-f]+)-")
    stale: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(NETNS_DIR):
            m = pat.match(name)
            if m and not os.path.exists(f"/proc/{int(m.group(1), 16)}"):
                stale.append(name)
    if stale:
        run_ip(["-b", "-"], stdin="".join(f"netns del {n}\n" for n in stale), check=False)
    return stale
