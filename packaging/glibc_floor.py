"""The oldest glibc a built bundle can start on: the highest ``GLIBC_x.y`` symbol version any
ELF file in it requires (its ``.gnu.version_r`` section, as ``readelf -V`` prints it).

    python3 glibc_floor.py DIR               # prints the highest version and the file needing it
    python3 glibc_floor.py --max 2.31 DIR    # also exits 1, naming each file that needs more

The parsing is pure (``required_versions``); only ``main`` reads files and runs readelf, which
reads an ELF file of any architecture.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import NamedTuple

_NEEDS_HEADER = "Version needs section"
_NAME = re.compile(r"\bName: GLIBC_(\d+(?:\.\d+)+)\b")

Version = tuple[int, ...]


class Need(NamedTuple):
    path: str
    version: Version


def parse_version(text: str) -> Version:
    return tuple(int(part) for part in text.split("."))


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)


def required_versions(readelf_v: str) -> list[Version]:
    """The GLIBC_ versions named in the version-needs section of ``readelf -W -V`` output
    (the version-definition section of libc itself defines them, it does not need them)."""
    out: list[Version] = []
    in_needs = False
    for line in readelf_v.splitlines():
        if not line.startswith(" "):
            in_needs = line.startswith(_NEEDS_HEADER)
            continue
        if in_needs:
            m = _NAME.search(line)
            if m:
                out.append(parse_version(m.group(1)))
    return out


def highest(needs: list[Need]) -> Need | None:
    return max(needs, key=lambda n: n.version, default=None)


def over(needs: list[Need], ceiling: Version) -> list[Need]:
    return sorted((n for n in needs if n.version > ceiling), key=lambda n: (n.version, n.path))


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def scan(top: str) -> list[Need]:
    """Each ELF file under ``top`` with the highest GLIBC_ version it requires."""
    needs: list[Need] = []
    for dirpath, _dirs, files in os.walk(top):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not _is_elf(path):
                continue
            text = subprocess.run(
                ["readelf", "-W", "-V", path], check=True, capture_output=True, text=True
            ).stdout
            versions = required_versions(text)
            if versions:
                needs.append(Need(os.path.relpath(path, top), max(versions)))
    return needs


def main(argv: list[str]) -> int:
    ceiling: Version | None = None
    if len(argv) == 3 and argv[0] == "--max":
        ceiling = parse_version(argv[1])
        argv = argv[2:]
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    needs = scan(argv[0])
    top = highest(needs)
    if top is None:
        print("glibc_floor: no ELF file requires a GLIBC_ version", file=sys.stderr)
        return 1
    print(f"{format_version(top.version)} {top.path}")
    if ceiling is not None:
        bad = over(needs, ceiling)
        for need in bad:
            print(
                f"glibc_floor: {need.path} needs GLIBC_{format_version(need.version)}, "
                f"more than {format_version(ceiling)}",
                file=sys.stderr,
            )
        if bad:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
