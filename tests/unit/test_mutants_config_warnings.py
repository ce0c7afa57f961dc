"""``config_warnings`` and its typo guess, warning by warning, written out by hand: a config
with an unknown or misplaced key in every section weft reads gets exactly these lines."""

from __future__ import annotations

from cni.plugin.config import config_warnings, edit_distance, probable_key


def test_every_section_warns_with_its_place_and_guess() -> None:
    flannel = {
        "cniVersion": "1.0.0", "name": "cbr0", "type": "weft", "subnetFile": "/x",
        "mtu": 1400, "isGatway": True,
        "delegate": {"hairpinmode": True, "ipam": {}, "dns": {"nameserver": []}},
        "ipam": {"dataDir": "/d", "ranges": [[{"subnet": "10.0.0.0/24", "rangestart": "x"}]],
                 "subnet": "10.0.0.0/24", "datadir": "/e"},
        "dns": {"serch": []},
    }
    assert config_warnings(flannel) == [
        "config: unknown key 'isGatway' ignored (did you mean 'isGateway'?)",
        "config: 'mtu' at the top level is ignored in the flannel shape; put it under 'delegate'",
        "config: unknown key 'delegate.hairpinmode' ignored (did you mean 'hairpinMode'?)",
        "config: 'delegate.ipam' is ignored: the ranges come from the subnet file; set dataDir "
        "and routes in the top-level 'ipam'",
        "config: unknown key 'ipam.datadir' ignored (did you mean 'dataDir'?)",
        "config: 'ipam.ranges' is ignored in the flannel shape: the ranges come from the "
        "subnet file",
        "config: 'ipam.subnet' is ignored in the flannel shape: the ranges come from the "
        "subnet file",
        "config: unknown key 'ipam.ranges[0][0].rangestart' ignored (did you mean "
        "'rangeStart'?)",
        "config: unknown key 'dns.serch' ignored (did you mean 'search'?)",
        "config: unknown key 'delegate.dns.nameserver' ignored (did you mean 'nameservers'?)",
    ]


def test_bridge_shape_warnings() -> None:
    bridge = {"cniVersion": "1.0.0", "name": "cbr0", "type": "weft", "dataDir": "/d",
              "hairpinmode": True,
              "ipam": {"ranges": ["x", [1, {"subnet": "10.0.0.0/24", "gw": "10.0.0.1"}]]}}
    assert config_warnings(bridge) == [
        "config: unknown key 'hairpinmode' ignored (did you mean 'hairpinMode'?)",
        "config: 'dataDir' is a flannel-shape key, ignored in the bridge shape",
        "config: unknown key 'ipam.ranges[1][1].gw' ignored",
    ]


def test_edit_distance_is_levenshtein_capped() -> None:
    assert edit_distance("mtu", "mtu") == 0
    assert edit_distance("MTU", "mtu") == 0  # case-insensitive
    assert edit_distance("mtu", "mtuu") == 1 and edit_distance("bridge", "brigde") == 2
    assert edit_distance("abc", "abd") == 1 and edit_distance("abcd", "bcd") == 1
    assert edit_distance("ab", "abcd") == 2  # the length difference alone, at the limit
    assert edit_distance("ab", "abcde") == 3  # over it: limit + 1 at once
    assert edit_distance("abcdef", "uvwxyz") == 3  # capped, however far
    assert edit_distance("kitten", "sitting", limit=5) == 3
    assert edit_distance("flaw", "lawn", limit=1) == 2


def test_probable_key_takes_the_nearest_then_the_first_by_name() -> None:
    assert probable_key("mtuu", frozenset({"mtu", "mtus"})) in ("mtu", "mtus")
    assert probable_key("abx", frozenset({"abz", "aby"})) == "aby"  # a tie: by name
    assert probable_key("abxx", frozenset({"abyy", "abxy"})) == "abxy"  # the nearer
    assert probable_key("ab", frozenset({"abcd"})) == "abcd"  # distance 2 still guessed
    assert probable_key("ab", frozenset({"abcde"})) is None
