"""The one rule for a leaked attachment, shared by ADD's reclaim, CNI STATUS and the
operator's ``weft ls``/``status``/``gc``, so they never disagree. Pure.

An attachment is **reclaimable** when weft recorded it and the network namespace it
recorded no longer exists, in this boot or an earlier one: no pod can use its address any
more. A reservation without a weft record (the reference host-local's) or a record that
names no netns cannot be judged and is never reclaimed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ipam.attachments import Attachment

RECLAIMABLE = "stale"
IN_USE = "live"
UNJUDGEABLE = "host-local"


def judge(record: Attachment | None, netns_exists: bool) -> str:
    """RECLAIMABLE, IN_USE or UNJUDGEABLE; ``netns_exists`` is about ``record.netns``."""
    if record is None or not record.netns:
        return UNJUDGEABLE
    return IN_USE if netns_exists else RECLAIMABLE


def is_reclaimable(record: Attachment | None, netns_exists: bool) -> bool:
    return judge(record, netns_exists) == RECLAIMABLE
