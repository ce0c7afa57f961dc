"""Print weft's version: ``[project] version`` of pyproject.toml, the one place it is
written. The build copies it into the bundle's build id, where the binary reads it."""

import sys
import tomllib
from pathlib import Path

root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
with open(root / "pyproject.toml", "rb") as f:
    print(tomllib.load(f)["project"]["version"])
