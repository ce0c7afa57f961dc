"""Render a side-by-side markdown results table from conformance junit files.

    python3 conformance/table.py weft=weft.xml reference=ref.xml [> table.md]

Cells: ``pass``, ``xfail`` (known deviation, reason listed below the table), ``**FAIL**``,
``**ERROR**``, ``skip`` and ``-`` (test not collected for that plugin, e.g. a version it does
not claim).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def outcomes(path: Path) -> dict[str, tuple[str, str]]:
    """test id -> (cell, detail) for one junit file."""
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        failure, error = case.find("failure"), case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            out[name] = ("**FAIL**", (failure.get("message") or "").splitlines()[0][:160])
        elif error is not None:
            out[name] = ("**ERROR**", (error.get("message") or "").splitlines()[0][:160])
        elif skipped is not None and skipped.get("type") == "pytest.xfail":
            out[name] = ("xfail", skipped.get("message") or "")
        elif skipped is not None:
            out[name] = ("skip", skipped.get("message") or "")
        else:
            out[name] = ("pass", "")
    return out


def schema_counts(path: Path) -> dict[str, str]:
    """The ``schema_validated_<kind>`` testsuite properties the suite records."""
    prefix = "schema_validated_"
    return {
        (prop.get("name") or "")[len(prefix) :]: prop.get("value") or "0"
        for prop in ET.parse(path).getroot().iter("property")
        if (prop.get("name") or "").startswith(prefix)
    }


def render(columns: list[tuple[str, Path]]) -> str:
    results = [(label, outcomes(path)) for label, path in columns]
    names: list[str] = []
    for _, res in results:
        names.extend(n for n in res if n not in names)
    lines = [
        "| check | " + " | ".join(label for label, _ in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for name in names:
        cells = [res.get(name, ("-", ""))[0] for _, res in results]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines.append("")
    for label, res in results:
        counts: dict[str, int] = {}
        for cell, _ in res.values():
            counts[cell] = counts.get(cell, 0) + 1
        summary = ", ".join(f"{n} {c.strip('*').lower()}" for c, n in sorted(counts.items()))
        lines.append(f"**{label}**: {summary}")
        lines.append("")
        checked = schema_counts(dict(columns)[label])
        if checked:
            what = ", ".join(f"{n} {kind}" for kind, n in sorted(checked.items()))
            lines.append(f"checked against the spec models (conformance/schema.py): {what}")
            lines.append("")
        for name, (cell, detail) in res.items():
            if cell != "pass" and detail:
                lines.append(f"- `{name}` ({cell.strip('*').lower()}): {detail}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    columns: list[tuple[str, Path]] = []
    for arg in argv:
        label, sep, path = arg.partition("=")
        if not sep:
            print(__doc__, file=sys.stderr)
            return 2
        columns.append((label, Path(path)))
    if not columns:
        print(__doc__, file=sys.stderr)
        return 2
    print(render(columns))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
