"""Person mode: the binary run by a person at a shell (no CNI_COMMAND set).

A table of subcommands, each imported only when it runs; no argument prints the about
text on stderr and exits 0 (as the reference plugins' skel does); an unknown subcommand
or option prints the usage on stderr and exits 2.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

from cni.protocol.spec import SUPPORTED_VERSIONS

ABOUT = "weft: CNI plugin (veth + bridge + host-local IPAM from the flannel subnet file)"


class Subcommand(NamedTuple):
    """A person-mode subcommand: its module is imported only when it runs."""

    usage: str  # arguments, after the name
    summary: str
    module: str
    func: str  # module.func(argv) -> exit code; may raise module.UsageError (exit 2)


# One entry per subcommand; adding one is adding a line here.
SUBCOMMANDS: dict[str, Subcommand] = {
    "ls": Subcommand(
        "[--json] [--conf FILE]",
        "one row per address: pod, netns, veth, boot, age, live/stale/host-local",
        "cni.operator.commands",
        "ls",
    ),
    "status": Subcommand(
        "[--json] [--conf FILE]",
        "subnet file, cni0, ip_forward, range usage, helper; exit 1 when unhealthy",
        "cni.operator.commands",
        "status",
    ),
    "gc": Subcommand(
        "[--dry-run] [--json] [--conf FILE]",
        "release every attachment whose netns is gone (never a live pod)",
        "cni.operator.commands",
        "gc",
    ),
    "serve": Subcommand(
        "[--socket PATH]",
        "the warm helper CNI execs hand their requests to (run by weft.service)",
        "cni.helper.server",
        "main",
    ),
}


class BuildInfo(NamedTuple):
    """What the build wrote into a frozen bundle (packaging/build.sh, one line:
    ``weft <version> <digest> arch=<arch> glibc=<x.y> build=<release|dev>``)."""

    version: str
    digest: str
    arch: str
    glibc: str
    kind: str


def parse_build_id(line: str) -> BuildInfo | None:
    """The build id's fields; None for a line of another shape (an older bundle's)."""
    words = line.split()
    if len(words) < 3 or words[0] != "weft":
        return None
    fields = dict(w.split("=", 1) for w in words[3:] if "=" in w)
    return BuildInfo(words[1], words[2], fields.get("arch", "?"), fields.get("glibc", "?"),
                     fields.get("build", "?"))


def describe_build(info: BuildInfo | None) -> str:
    """``weft --version``'s line for a bundle (None: run from the source tree)."""
    versions = ", ".join(SUPPORTED_VERSIONS)
    if info is None:
        return f"weft {source_version()} (source tree; CNI spec versions {versions})"
    kind = {"release": "release build", "dev": "development build, not for distribution"}
    return (
        f"weft {info.version} linux/{info.arch}, needs glibc >= {info.glibc}, "
        f"{kind.get(info.kind, info.kind + ' build')} {info.digest[:12]} "
        f"(CNI spec versions {versions})"
    )


def source_version() -> str:
    """The version when run from a source tree: pyproject.toml's, the one place it is
    written (a frozen bundle carries a copy in its build id)."""
    import re

    from cni.helper.client import source_root

    try:
        with open(os.path.join(source_root(), "pyproject.toml"), encoding="utf-8") as f:
            found = re.search(r'^version = "([^"]+)"', f.read(), re.M)
    except (OSError, UnicodeDecodeError):
        found = None
    if found is None:
        from importlib import metadata

        try:
            return metadata.version("weft")
        except metadata.PackageNotFoundError:
            return "unknown"
    return found.group(1)


def version() -> str:
    """weft's version: the bundle's build id, else the source tree's pyproject.toml."""
    info = _build_info()
    return info.version if info is not None else source_version()


def _build_info() -> BuildInfo | None:
    from cni.helper.client import BUILD_ID_FILE

    base = getattr(sys, "_MEIPASS", None)
    if not (getattr(sys, "frozen", False) and base):
        return None
    try:
        with open(os.path.join(base, BUILD_ID_FILE), encoding="utf-8") as f:
            return parse_build_id(f.readline())
    except (OSError, UnicodeDecodeError):
        return None


def usage() -> str:
    from cni.operator.discovery import CONF_DIRS_ENV, DEFAULT_CONF_DIRS

    width = max(len(n) + len(s.usage) for n, s in SUBCOMMANDS.items()) + 2
    lines = [f"usage: weft {'{'}{','.join(SUBCOMMANDS)}{'}'} [options] | --version | --help"]
    for n, s in SUBCOMMANDS.items():
        lines.append(f"  weft {(n + ' ' + s.usage).ljust(width)} {s.summary}")
    lines.append(
        f"  config: --conf FILE, or the first conflist with a weft plugin in "
        f"${CONF_DIRS_ENV} (default {':'.join(DEFAULT_CONF_DIRS)})"
    )
    return "\n".join(lines) + "\n"


def _about() -> str:
    versions = ", ".join(SUPPORTED_VERSIONS)
    return (
        f"{ABOUT}\nweft {version()}; CNI protocol versions supported: {versions}\n"
        "It is run by a container runtime (containerd, cri-o, cnitool) with CNI_COMMAND and the\n"
        "other CNI_* variables set and the network config on stdin; see README.md.\n"
        "A person on the node can inspect and clean up with:\n" + usage()
    )


def person(argv: list[str]) -> int:
    """No CNI_COMMAND: a person at a shell. No argument: the about text on stderr, exit 0
    (as the reference plugins' skel does); an unknown subcommand or option: usage, exit 2."""
    if not argv:
        sys.stderr.write(_about())
        return 0
    first, rest = argv[0], argv[1:]
    if first in ("--version", "-v") and not rest:
        print(describe_build(_build_info()))
        return 0
    if first in ("--help", "-h", "help") and not rest:
        sys.stdout.write(_about())
        return 0
    sub = SUBCOMMANDS.get(first)
    if sub is None:
        what = "option" if first.startswith("-") else "subcommand"
        sys.stderr.write(f"weft: unknown {what} {first!r}\n{usage()}")
        return 2
    if "--help" in rest or "-h" in rest:
        sys.stdout.write(f"usage: weft {first} {sub.usage}\n  {sub.summary}\n")
        return 0
    import importlib

    module = importlib.import_module(sub.module)
    try:
        code: int = getattr(module, sub.func)(rest)
    except getattr(module, "UsageError", ()) as e:
        sys.stderr.write(f"weft {first}: {e}\nusage: weft {first} {sub.usage}\n")
        return 2
    return code
