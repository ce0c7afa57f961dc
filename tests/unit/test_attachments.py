"""weft's attachment records: typed round trip, on-disk format, distrust of what is read."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest

from cni.protocol.spec import PodRef, parse_cni_args, pod_ref
from cnispec.digest import sha256_hex
from cnispec.errors import InvalidConfig
from ipam.attachments import AttachmentStore
from ipam.records import Attachment

IF = ipaddress.ip_interface

REC = Attachment(
    container_id="c1",
    ifname="eth0",
    host_veth="veth0123456789a",
    netns="/var/run/netns/x",
    boot_id="b0",
    ip_masq=True,
    bridge="cni0",
    ips=(IF("10.42.0.5/24"), IF("2001:cafe:42::5/64")),
    pod_namespace="kube-system",
    pod_name="coredns-7b98449c4-x2x9z",
)


@pytest.fixture
def records(tmp_path: Path) -> AttachmentStore:
    return AttachmentStore(str(tmp_path / "cbr0"))


def test_json_round_trip_and_exact_bytes() -> None:
    assert Attachment.from_json(REC.to_json()) == REC
    assert json.loads(REC.to_json()) == {
        "bootID": "b0",
        "bridge": "cni0",
        "containerID": "c1",
        "hostVeth": "veth0123456789a",
        "ifname": "eth0",
        "ipMasq": True,
        "ips": ["10.42.0.5/24", "2001:cafe:42::5/64"],
        "netns": "/var/run/netns/x",
        "podName": "coredns-7b98449c4-x2x9z",
        "podNamespace": "kube-system",
    }
    assert REC.versions == {4, 6}


def test_record_without_pod_reads_and_writes_the_older_format() -> None:
    """A record written before the pod fields existed parses; one without a pod writes
    exactly the older keys."""
    old = (
        b'{"bootID":"b0","bridge":"cni0","containerID":"c1","hostVeth":"veth0123456789a",'
        b'"ifname":"eth0","ipMasq":false,"ips":["10.42.0.5/24"],"netns":"/run/netns/x"}'
    )
    rec = Attachment.from_json(old)
    assert (rec.pod_namespace, rec.pod_name, rec.ip_masq) == ("", "", False)
    assert rec.to_json() == old


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"[]", "not a JSON object"),
        (b'{"containerID":"c1"}', "expected"),
        (REC.to_json().replace(b'"ipMasq":true', b'"ipMasq":"yes"'), "ipMasq"),
        (REC.to_json().replace(b'"10.42.0.5/24"', b"5"), "ips"),
        (REC.to_json().replace(b'"10.42.0.5/24"', b'"10.42.0.500/24"'), "10.42.0.500"),
        (REC.to_json().replace(b'"podName":"', b'"podName":7,"x":"'), "podName"),
    ],
)
def test_malformed_records_raise_value_error(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Attachment.from_json(raw)


def test_store_put_get_delete_all(records: AttachmentStore, tmp_path: Path) -> None:
    other = REC._replace(container_id="c2", pod_namespace="", pod_name="")
    records.put(REC)
    records.put(other)
    assert records.get("c1", "eth0") == REC
    assert records.get("c1", "net1") is None
    assert sorted(records.all()) == sorted([REC, other])
    adir = tmp_path / "cbr0" / ".weft"
    name = sha256_hex(b"c1\neth0") + ".json"
    assert (adir / name).read_bytes() == REC.to_json()
    assert not [n for n in os.listdir(adir) if n.startswith(".tmp-")]
    records.put(REC._replace(netns="/run/netns/y"))  # overwrite
    assert records.get("c1", "eth0") == REC._replace(netns="/run/netns/y")
    records.delete("c1", "eth0")
    records.delete("c1", "eth0")  # idempotent
    assert records.get("c1", "eth0") is None and records.all() == [other]
    assert records.problems == []


def test_untrusted_records_are_reported_and_ignored(
    records: AttachmentStore, tmp_path: Path
) -> None:
    records.put(REC)
    adir = tmp_path / "cbr0" / ".weft"
    path = adir / (sha256_hex(b"c1\neth0") + ".json")
    path.write_bytes(b"{not json")
    assert records.get("c1", "eth0") is None and records.all() == []
    assert len(records.problems) == 2 and str(path) in records.problems[0]
    # a record under another attachment's name (copied, or forged)
    path.write_bytes(REC._replace(container_id="c9").to_json())
    assert records.get("c1", "eth0") is None
    assert "does not match its name" in records.problems[-1]
    (adir / "deadbeef.json").write_bytes(REC.to_json())
    assert records.all() == []
    os.symlink(adir / "deadbeef.json", adir / (sha256_hex(b"c2\neth0") + ".json"))
    assert records.get("c2", "eth0") is None and "symlink" in records.problems[-1]


def test_reads_never_create_directories(tmp_path: Path) -> None:
    records = AttachmentStore(str(tmp_path / "missing"))
    assert records.get("c", "eth0") is None and records.all() == []
    records.delete("c", "eth0")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "cid, ifname", [("../x", "eth0"), ("a/b", "eth0"), ("c", "a/b"), ("", "e")]
)
def test_path_traversal_refused(
    records: AttachmentStore, tmp_path: Path, cid: str, ifname: str
) -> None:
    for call in (
        lambda: records.put(REC._replace(container_id=cid, ifname=ifname)),
        lambda: records.get(cid, ifname),
        lambda: records.delete(cid, ifname),
    ):
        with pytest.raises(InvalidConfig):
            call()
    assert list(tmp_path.iterdir()) == []


def test_pod_ref_from_cni_args_as_runtimes_send_them() -> None:
    raw = (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
        "K8S_POD_INFRA_CONTAINER_ID=0123abcd;K8S_POD_UID=5f0c-11"
    )
    assert pod_ref(parse_cni_args(raw)) == PodRef("default", "web-0")
    assert pod_ref(parse_cni_args("IgnoreUnknown=1")) == PodRef("", "")
    assert pod_ref({}) == PodRef()
    # not a Kubernetes name: dropped, never refused and never written as is
    bad = {"K8S_POD_NAMESPACE": "Kube System", "K8S_POD_NAME": "x" * 254}
    assert pod_ref(bad) == PodRef("", "")
    assert pod_ref({"K8S_POD_NAME": 'a"b\n'}) == PodRef("", "")
