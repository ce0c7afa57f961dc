"""Edges the tables above left open, each written out by hand: MACs with hex letters, a
record-less row's kernel fields, an unsorted usage table, the edit distance's empty and
capped cases, a fresh range iterator, and the nesting check's unbalanced leftovers."""

from __future__ import annotations

import ipaddress

from cni.operator import state as opstate
from cni.operator.state import Observed, RangeUsage
from cni.plugin.check import drifts, plan_check
from cni.plugin.config import edit_distance
from cni.protocol.jsondecode import _too_deep
from ipam.ranges import Range, RangeIter, RangeSet
from tests.unit.test_check import NETNS, PREV, conf, intact, link
from tests.unit.test_opstate import BOOT, NOW, rec

A = ipaddress.ip_address


def test_mac_with_hex_letters_compares_without_case() -> None:
    prev = dict(PREV, interfaces=[*PREV["interfaces"][:2],
                                  dict(PREV["interfaces"][2], mac="02:AB:CD:EF:00:03")])
    exp = plan_check(conf(prevResult=prev), "c1", "eth0", NETNS)
    assert drifts(exp, intact()._replace(pod_link=link(2, "eth0", mac="02:ab:cd:ef:00:03"))) == []
    lower = dict(PREV, interfaces=[*PREV["interfaces"][:2],
                                   dict(PREV["interfaces"][2], mac="02:ab:cd:ef:00:03")])
    exp = plan_check(conf(prevResult=lower), "c1", "eth0", NETNS)
    assert drifts(exp, intact()._replace(pod_link=link(2, "eth0", mac="02:AB:CD:EF:00:03"))) == []


def test_a_row_without_record_or_netns_shows_no_kernel_state() -> None:
    hl = Observed(A("10.42.0.4"), "hl", "", None, True, True, NOW)
    no_netns = Observed(A("10.42.0.5"), "c", "eth0", rec("c", netns=""), True, True, NOW)
    rows = opstate.rows([hl, no_netns], BOOT, NOW)
    assert (rows[0].netns_exists, rows[0].veth_present) == (None, None)
    assert (rows[1].netns_exists, rows[1].veth_present) == (None, True)


def test_range_usage_reads_the_whole_table_whatever_its_order() -> None:
    rs = RangeSet([Range("10.42.0.0/29")])
    table = opstate.rows([Observed(A("10.42.0.2"), "l", "eth0", rec("l"), True, True, NOW)],
                         BOOT, NOW)
    record_only = opstate.rows([Observed(None, "r", "eth0", rec("r"), True, None, None)],
                               BOOT, NOW)
    assert opstate.range_usage((rs,), record_only + table) == [
        RangeUsage("10.42.0.2-10.42.0.6", 5, 1, 0, 0, 4)]


def test_edit_distance_empty_deletion_and_cap() -> None:
    assert edit_distance("", "ab") == 2 and edit_distance("ab", "") == 2
    assert edit_distance("ab", "a") == 1 and edit_distance("abc", "ab") == 1
    assert edit_distance("aa", "bbbb") == 3  # 4, capped at limit + 1


def test_a_fresh_iterator_has_no_current_range() -> None:
    it = RangeIter(RangeSet([Range("10.9.0.0/30")]))
    assert it.range is None
    assert next(it) == A("10.9.0.2") and it.range == Range("10.9.0.0/30")


def test_unbalanced_leftovers_count_as_levels() -> None:
    # 30 levels closed, then 40 openers never closed: 70 levels deep, no run of 65
    assert _too_deep(b"[" * 30 + b"]" * 30 + b"[" * 40)
    assert _too_deep(b"[" * 30 + b"]" * 30 + b'["x",' * 40)
    assert not _too_deep(b"[" * 30 + b"]" * 30 + b"[" * 34)
