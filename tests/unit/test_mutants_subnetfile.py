"""What ``ipam.subnetfile`` answers for a table of subnet files, flanneld's and hand-edited
ones (quotes, ``export``, spaces, bad keys, IPv6, subnets outside their network): the
parsed SubnetFile (its repr) or the CNI error's msg and details, which name the file, the
line and the key. Pinned in tests/unit/golden/subnetfile.json, reviewed by hand when they
change (``WEFT_UPDATE_GOLDEN=1`` regenerates it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnispec.errors import CNIError
from ipam.subnetfile import parse_subnet_file

GOLDEN = Path(__file__).parent / "golden" / "subnetfile.json"
K3S_BASE = "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\nFLANNEL_MTU=1450\n"
# what flanneld writes: every key flannel's plugin requires
K3S = K3S_BASE + "FLANNEL_IPMASQ=true\n"
# the rest of a complete file, for the cases about the syntax of the network and subnet lines
REST = "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
V6 = "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\n"

FILES: dict[str, str] = {
    "k3s": K3S,
    "dual": K3S_BASE + V6 + "FLANNEL_IPMASQ=false\n",
    "v6-only": V6 + "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n",
    "export": "export FLANNEL_NETWORK=10.42.0.0/16\nexport  FLANNEL_SUBNET=10.42.3.1/24\n" + REST,
    "export-no-space": "exportFLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\n" + REST,
    "exported-tab": "export\tFLANNEL_SUBNET=10.42.3.1/24\nFLANNEL_NETWORK=10.42.0.0/16\n" + REST,
    "double-quoted": 'FLANNEL_NETWORK="10.42.0.0/16"\nFLANNEL_SUBNET="10.42.3.1/24"\n' + REST,
    "single-quoted": "FLANNEL_NETWORK='10.42.0.0/16'\nFLANNEL_SUBNET='10.42.3.1/24'\n" + REST,
    "quote-unclosed": 'FLANNEL_NETWORK="10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\n',
    "quote-only": 'FLANNEL_NETWORK="\nFLANNEL_SUBNET=10.42.3.1/24\n',
    "quote-inside": 'FLANNEL_NETWORK="10.42"0.0/16"\nFLANNEL_SUBNET=10.42.3.1/24\n',
    "quote-end-only": 'FLANNEL_NETWORK=10.42.0.0/16"\nFLANNEL_SUBNET=10.42.3.1/24\n',
    "quote-mixed": "FLANNEL_NETWORK=\"10.42.0.0/16'\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "quoted-empty": 'FLANNEL_NETWORK=""\nFLANNEL_SUBNET=10.42.3.1/24\n',
    "empty-value": "FLANNEL_NETWORK=\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "no-equals": "FLANNEL_NETWORK 10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "bad-key-digit": "1FLANNEL=x\n" + K3S,
    "bad-key-dash": "FLANNEL-NET=x\n" + K3S,
    "bad-key-unicode": "FLANNEL_NETWÖRK=x\n" + K3S,
    "empty-key": "=x\n" + K3S,
    "value-with-equals": "FLANNEL_NETWORK=10.42.0.0/16=x\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "comments-blank": "# flanneld\n\n" + K3S + "   \n# end\n",
    "spaces-around": "FLANNEL_NETWORK = 10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "space-in-subnet": "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1 /24\n",
    "networks-list": "FLANNEL_NETWORK=10.42.0.0/16, 10.44.0.0/16\nFLANNEL_SUBNET=10.44.3.1/24\n"
    + REST,
    "networks-list-v6": K3S + "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56,2001:cafe:43::/56\n"
    "FLANNEL_IPV6_SUBNET=2001:cafe:43:3::1/64\n",
    "networks-empty-item": "FLANNEL_NETWORK=10.42.0.0/16,\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "network-host-bits": "FLANNEL_NETWORK=10.42.0.1/16\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "network-no-prefix": "FLANNEL_NETWORK=10.42.0.0\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "network-v6-in-v4": "FLANNEL_NETWORK=2001:cafe::/56\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "subnet-no-prefix": "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1\n",
    "subnet-list": "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24,10.42.4.1/24\n",
    "subnet-zone": K3S + "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
    "FLANNEL_IPV6_SUBNET=2001:cafe:42:3::1%eth0/64\n",
    "subnet-garbage": "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=x/24\n",
    "subnet-v6-in-v4": "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=2001:cafe::1/64\n",
    "subnet-outside": "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.43.3.1/24\n" + REST,
    "subnet-v6-outside": K3S + "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
    "FLANNEL_IPV6_SUBNET=2001:cafe:99::1/64\n",
    "v6-subnet-without-network": K3S + "FLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\n",
    "v6-network-without-subnet": K3S + "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n",
    "subnet-without-network": "FLANNEL_SUBNET=10.42.3.1/24\n" + REST,
    "network-without-subnet": "FLANNEL_NETWORK=10.42.0.0/16\n" + REST,
    "no-mtu": K3S.replace("FLANNEL_MTU=1450\n", ""),
    "no-ipmasq": K3S_BASE,
    "no-mtu-no-ipmasq": K3S_BASE.replace("FLANNEL_MTU=1450\n", ""),
    "v6-only-no-mtu": V6 + "FLANNEL_IPMASQ=false\n",
    "nothing": "",
    "mtu-garbage": K3S.replace("1450", "big"),
    "mtu-small": K3S.replace("1450", "67"),
    "mtu-negative": K3S.replace("1450", "-1"),
    "ipmasq-garbage": K3S_BASE + "FLANNEL_IPMASQ=yes\n",
    "ipmasq-upper": K3S_BASE + "FLANNEL_IPMASQ=TRUE\n",
    "duplicate-key": K3S + "FLANNEL_SUBNET=10.42.4.1/24\n",
    "unknown-key": K3S + "FLANNEL_BACKEND=vxlan\n",
    "crlf": K3S.replace("\n", "\r\n"),
    "no-trailing-newline": K3S.rstrip("\n"),
    "quote-doubled-start": 'FLANNEL_NETWORK=""10.42.0.0/16"\nFLANNEL_SUBNET=10.42.3.1/24\n',
    "quote-doubled-end": 'FLANNEL_NETWORK="10.42.0.0/16""\nFLANNEL_SUBNET=10.42.3.1/24\n',
    "single-quote-end-only": "FLANNEL_NETWORK=10.42.0.0/16'\nFLANNEL_SUBNET=10.42.3.1/24\n",
    "v6-networks-list-spaces": K3S + "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56, 2001:cafe:43::/56\n"
    "FLANNEL_IPV6_SUBNET=2001:cafe:43:3::1/64\n",
    "v6-subnet-with-space": K3S + "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
    "FLANNEL_IPV6_SUBNET=2001:cafe:42:3::1 /64\n",
    "v6-network-garbage": K3S + "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56,x/9\n"
    "FLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\n",
    "subnet-outside-a-list": "FLANNEL_NETWORK=10.42.0.0/16,10.44.0.0/16\n"
    "FLANNEL_SUBNET=10.43.3.1/24\n" + REST,
}


def answer(text: str) -> dict[str, Any]:
    try:
        return {"parsed": repr(parse_subnet_file(text, "/run/flannel/subnet.env"))}
    except CNIError as e:
        return {"error": [e.code, e.msg, e.details]}


def test_subnet_file_answers_match_the_reviewed_table() -> None:
    got = {name: answer(text) for name, text in FILES.items()}
    if os.environ.get("WEFT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want), "inputs changed: regenerate and review the table"
    wrong = {k: (want[k], got[k]) for k in want if got[k] != want[k]}
    assert not wrong, json.dumps(wrong, indent=1)[:6000]
    # the control: the table holds parsed files and refusals
    assert sum("parsed" in a for a in got.values()) >= 10
    assert sum("error" in a for a in got.values()) >= 20
