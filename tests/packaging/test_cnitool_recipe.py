"""README's cnitool recipe, run as written (root): the block after ``<!-- cnitool-recipe -->``.

It needs ``build/cnitool`` (``make cnitool``) and the frozen ``dist/weft/weft``
(``make build``); ``make test-packaging`` builds both first. The recipe uses the netns names
``weft-node``/``weft-pod``; the test refuses to run if they exist and removes them if the
recipe fails halfway. Oracles: the recipe's own output (cnitool's ADD result, ``ip addr``,
ping, the store listing), checked here, and that nothing of it is left afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.netns import ROOT, delete_netns, netns_exists

NETNS = ("weft-pod", "weft-node")

pytestmark = pytest.mark.root


def recipe() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- cnitool-recipe -->\n```sh\n(.*?)\n```", text, re.S)
    assert m, "README.md has no cnitool recipe block"
    return m.group(1)


@pytest.fixture
def sandbox_names() -> Iterator[None]:
    taken = [n for n in NETNS if netns_exists(n)]
    if taken:
        pytest.fail(f"netns {taken} already exist: the recipe would use someone else's")
    try:
        yield
    finally:
        for name in NETNS:
            if netns_exists(name):
                delete_netns(name)


def test_cnitool_recipe_as_written(sandbox_names: None) -> None:
    for need in (ROOT / "build/cnitool", ROOT / "dist/weft/weft"):
        assert os.access(need, os.X_OK), f"{need} missing: run `make build cnitool`"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NETCONF", "CAP_"))}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", recipe()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"recipe failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"

    # cnitool add printed libcni's result (indented JSON, then ip's and ping's output).
    start = proc.stdout.index("{")
    result, end = json.JSONDecoder().raw_decode(proc.stdout, start)
    assert result["cniVersion"] == "1.0.0", result
    (address,) = [ip["address"] for ip in result["ips"]]
    addr = ipaddress.ip_interface(address)
    assert addr.network == ipaddress.ip_network("10.42.1.0/24") and str(addr.ip) != "10.42.1.1"
    assert result["ips"][0]["gateway"] == "10.42.1.1", result
    rest = proc.stdout[end:]
    # ip -4 addr in the pod showed that address on eth0; ping to the gateway answered.
    assert f"inet {address}" in rest, rest
    assert "1 packets transmitted, 1 received" in rest, rest
    # After del the store listing (the recipe's last output) holds no reservation: weft's
    # record dir, the lock and last_reserved_ip.0 only.
    listing = rest.rsplit("rtt min/avg/max/mdev", 1)[1].strip().splitlines()[1:]
    assert sorted(listing) == [".weft", "last_reserved_ip.0", "lock"], rest
    # The recipe removed its netns.
    assert not [n for n in NETNS if netns_exists(n)]
