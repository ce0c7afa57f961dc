"""The shipped conflist's cniVersion must be one every plugin of its chain accepts: a
version the chained portmap/bandwidth refuse would fail every pod's ADD."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.netns import ROOT

CONFLIST = ROOT / "packaging" / "10-weft.conflist"
CNI_DIR = Path("/usr/lib/cni")


def supported(plugin: Path, version: str) -> list[str]:
    out = subprocess.run(
        [str(plugin)],
        input=json.dumps({"cniVersion": version}).encode(),
        env={"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        timeout=30,
        check=True,
    )
    return list(json.loads(out.stdout)["supportedVersions"])


@pytest.mark.parametrize("plugin", ["portmap", "bandwidth"])
def test_shipped_conflist_version_is_accepted_by_the_chained_plugins(plugin: str) -> None:
    doc = json.loads(CONFLIST.read_text())
    assert [p["type"] for p in doc["plugins"]] == ["weft", "portmap", "bandwidth"]
    path = CNI_DIR / plugin
    if not path.exists() and not os.environ.get("CI"):
        pytest.skip(f"{path} not installed (scripts/deps.sh installs it)")
    assert doc["cniVersion"] in supported(path, doc["cniVersion"])
