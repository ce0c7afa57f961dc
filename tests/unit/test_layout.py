"""The README's layout table names every module of every package and subpackage."""

from __future__ import annotations

import re

from tests.netns import ROOT

PACKAGE_DIRS = ("cnispec", "ipam", "cni/protocol", "cni/plugin", "cni/linux", "cni/helper",
                "cni/operator")


def layout_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Layout"):text.index("## Design notes")]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)/` \| (.*)\|$", section,
                                                        re.M)}


def test_every_package_has_a_row_naming_each_of_its_modules() -> None:
    rows = layout_rows()
    subpackages = sorted(p.parent.relative_to(ROOT).as_posix()
                         for p in (ROOT / "cni").glob("*/__init__.py"))
    assert sorted(d for d in PACKAGE_DIRS if d.startswith("cni/")) == subpackages
    missing = {}
    for d in PACKAGE_DIRS:
        assert d in rows, f"no layout row for {d}/"
        names = sorted(p.stem for p in (ROOT / d).glob("*.py") if p.stem != "__init__")
        absent = [n for n in names if f"`{n}`" not in rows[d] and f"`{n}:" not in rows[d]]
        if absent:
            missing[d] = absent
    assert missing == {}
