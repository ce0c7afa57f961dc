"""A netns path is only a name: the record keeps the identity (nsfs device, inode) of the
namespace it named at ADD, and staleness compares it. Pure decisions and the record's
format, no root."""

from __future__ import annotations

import json

import pytest

from cni.operator import state as opstate
from cni.operator.state import Observed
from cni.plugin.plan import NETNS_GONE, NETNS_OTHER, NETNS_SAME, is_stale, netns_state
from ipam.records import Attachment, NetnsId
from tests.unit.test_attachments import REC

POD_NS = NetnsId(4, 4026532801)
OTHER_NS = NetnsId(4, 4026531840)  # e.g. the host's, once /proc/<pid>/ns/net's pid is reused
WITH_ID = REC._replace(netns_id=POD_NS)
WITHOUT_ID = REC  # written before weft recorded the identity


def seen(ns: NetnsId | None) -> object:
    return lambda path: ns if path == REC.netns else None


@pytest.mark.parametrize(
    ("record", "now", "state", "stale"),
    [
        (WITH_ID, POD_NS, NETNS_SAME, False),
        (WITH_ID, OTHER_NS, NETNS_OTHER, True),
        (WITH_ID, None, NETNS_GONE, True),
        # no identity recorded: the path alone decides, as before
        (WITHOUT_ID, OTHER_NS, NETNS_SAME, False),
        (WITHOUT_ID, None, NETNS_GONE, True),
    ],
)
def test_stale_when_gone_or_another_namespace(
    record: Attachment, now: NetnsId | None, state: str, stale: bool
) -> None:
    assert netns_state(record, now) == state
    assert is_stale(record, seen(now)) is stale  # type: ignore[arg-type]


def test_identity_round_trips_and_older_records_read_without_it() -> None:
    data = json.loads(WITH_ID.to_json())
    assert (data["netnsDevice"], data["netnsInode"]) == (4, 4026532801)
    assert Attachment.from_json(WITH_ID.to_json()) == WITH_ID
    assert "netnsDevice" not in json.loads(WITHOUT_ID.to_json())
    assert Attachment.from_json(WITHOUT_ID.to_json()).netns_id is None


@pytest.mark.parametrize(
    "extra",
    [
        {"netnsDevice": 4},
        {"netnsInode": 5},
        {"netnsDevice": "4", "netnsInode": 5},
        {"netnsDevice": True, "netnsInode": 5},
        {"netnsDevice": 4, "netnsInode": -1},
        {"netnsDevice": 4.0, "netnsInode": 5},
    ],
)
def test_a_malformed_identity_is_a_malformed_record(extra: dict[str, object]) -> None:
    data = json.loads(WITHOUT_ID.to_json())
    data.update(extra)
    with pytest.raises(ValueError, match="netns"):
        Attachment.from_json(json.dumps(data).encode())


def test_ls_row_says_the_path_names_another_namespace() -> None:
    def row(record: Attachment, now: NetnsId | None) -> opstate.Row:
        o = Observed(None, record.container_id, record.ifname, record, now, False, None)
        [r] = opstate.rows([o], record.boot_id, 0.0)
        return r

    other = row(WITH_ID, OTHER_NS)
    assert (other.state, other.netns_exists, other.netns_state) == ("stale", True, NETNS_OTHER)
    assert "names another namespace" in other.reason
    live = row(WITH_ID, POD_NS)
    assert (live.state, live.netns_state) == ("live", NETNS_SAME)
    gone = row(WITH_ID, None)
    assert (gone.state, gone.netns_exists, gone.netns_state) == ("stale", False, NETNS_GONE)
    legacy = row(WITHOUT_ID, OTHER_NS)
    assert (legacy.state, legacy.netns_state) == ("live", NETNS_SAME)
    assert opstate.gc_plan([other]).release == ((REC.container_id, REC.ifname),)
