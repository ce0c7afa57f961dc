"""Per-container IP masquerade (``ipMasq``) with iptables. Boundary module.

The reference's ``ip.SetupIPMasq``, with its names: a chain per container in the nat
table (``CNI-`` + a hash of network and container id) that accepts traffic to the pod's
own subnet and masquerades the rest (but multicast), and a POSTROUTING jump for the pod's
address; every rule carries the comment ``name: "<network>" id: "<containerID>"``.
iptables for IPv4, ip6tables for IPv6, the same chain name in both. Because names and
rule shapes are the reference's, the reference's DEL removes weft's rules and weft's DEL
the reference's. The whole change is one ``iptables-restore --noflush`` transaction;
teardown reads ``iptables-save`` and deletes only what is there, so DEL is idempotent.

A frozen (PyInstaller) weft must give iptables the caller's library path, not its own:
``tool_env`` restores ``LD_LIBRARY_PATH`` from ``LD_LIBRARY_PATH_ORIG``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping

from cni.plugin.plan import masq_chain, masq_comment
from cnispec.errors import MasqFailure, os_error
from cnispec.ip import IPInterface

MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}


def tool_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    if "LD_LIBRARY_PATH_ORIG" in env:
        env["LD_LIBRARY_PATH"] = env.pop("LD_LIBRARY_PATH_ORIG")
    elif getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
    for key in [k for k in env if k.startswith("_PYI_")]:
        del env[key]  # PyInstaller's bootloader state, meaningless to (or confusing) a child
    return env


class ToolMissing(MasqFailure):
    """iptables (or ip6tables) is not installed."""


def _run(argv: list[str], stdin: str = "") -> str:
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=tool_env(),
            timeout=60,
            check=False,
        )
    except FileNotFoundError as e:
        raise ToolMissing(f"cannot run {argv[0]}", str(e)) from None
    except OSError as e:
        raise os_error(e, f"running {argv[0]}") from None
    except subprocess.TimeoutExpired as e:
        raise MasqFailure(f"cannot run {argv[0]}", str(e)) from None
    if proc.returncode != 0:
        raise MasqFailure(f"{' '.join(argv)} failed (exit {proc.returncode})", proc.stderr.strip())
    return proc.stdout


def _tools(version: int) -> tuple[str, str]:
    return (
        ("iptables-restore", "iptables-save")
        if version == 4
        else ("ip6tables-restore", "ip6tables-save")
    )


def rules(network: str, container_id: str, address: IPInterface) -> tuple[str, list[str]]:
    """The container's chain and its rules for ``address``, in the shape the reference
    bridge plugin makes them and ``iptables-save`` prints them (so either plugin's DEL
    removes the other's, and CHECK can look for them line by line): accept the pod's own
    subnet, masquerade the rest but multicast, and a POSTROUTING jump for the pod's
    address."""
    chain = masq_chain(network, container_id)
    comment = '"' + masq_comment(network, container_id).replace('"', '\\"') + '"'
    host = "32" if address.version == 4 else "128"
    mcast = MULTICAST[address.version]
    return chain, [
        f"-A {chain} -d {address.network} -m comment --comment {comment} -j ACCEPT",
        f"-A {chain} ! -d {mcast} -m comment --comment {comment} -j MASQUERADE",
        f"-A POSTROUTING -s {address.ip}/{host} -m comment --comment {comment} -j {chain}",
    ]


def setup(network: str, container_id: str, address: IPInterface) -> None:
    chain, lines = rules(network, container_id, address)
    restore, _ = _tools(address.version)
    _run(
        [restore, "--noflush", "-w", "5"],
        "\n".join(["*nat", f":{chain} - [0:0]", *lines, "COMMIT", ""]),
    )


def teardown(network: str, container_id: str, versions: Iterable[int]) -> None:
    """Remove the container's chain and jump if present; nothing there is success."""
    chain = masq_chain(network, container_id)
    for version in sorted(versions):
        restore, save = _tools(version)
        dump = _run([save, "-t", "nat"])
        jumps = [
            ln
            for ln in dump.splitlines()
            if ln.startswith("-A POSTROUTING ") and ln.endswith(f"-j {chain}")
        ]
        has_chain = any(ln.startswith(f":{chain} ") for ln in dump.splitlines())
        if not jumps and not has_chain:
            continue
        lines = ["*nat"]
        lines += ["-D" + ln[2:] for ln in jumps]
        if has_chain:
            lines += [f"-F {chain}", f"-X {chain}"]
        lines += ["COMMIT", ""]
        _run([restore, "--noflush", "-w", "5"], "\n".join(lines))


def present(network: str, container_id: str, address: IPInterface) -> bool:
    """Are all of the container's rules for ``address`` in place (whoever made them)?"""
    _, lines = rules(network, container_id, address)
    _, save = _tools(address.version)
    return rules_found(_run([save, "-t", "nat"]), lines)


def rules_found(dump: str, lines: list[str]) -> bool:
    have = set(dump.splitlines())
    return all(line in have for line in lines)
