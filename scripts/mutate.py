#!/usr/bin/env python3
"""``make mutate``: mutation testing of weft's pure modules against tests/unit, with mutmut
(its configuration: ``[tool.mutmut]`` in pyproject.toml).

Runs mutmut in a copy of the tree (build/mutate/work: mutmut rewrites the sources it copies
into its ``mutants/`` directory), then writes build/mutate/report.md: per module the mutants
made, killed (a unit test failed, or the tests timed out), and survived, and every survivor
with its diff and its justification from tests/mutate/justified.toml, or UNJUSTIFIED.
Exits 1 when fewer than 90 % are killed or a survivor has no justification.

Outside CI (README, Tests): it runs the unit tests once per mutant, thousands of times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "mutate"
WORK = OUT / "work"
JUSTIFIED = ROOT / "tests" / "mutate" / "justified.toml"
COPIED = ("cni", "cnispec", "ipam", "tests", "packaging", "pyproject.toml")
MIN_KILLED = 0.90
KILLED = {"killed", "timeout", "caught by type check"}


def copy_tree() -> None:
    if WORK.exists():
        shutil.rmtree(WORK)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--", *COPIED], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src, dst = ROOT / rel, WORK / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def run_mutmut(children: int) -> None:
    log = OUT / "run.log"
    with open(log, "wb") as f:
        rc = subprocess.call(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)],
            cwd=WORK,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    if rc != 0:
        sys.exit(f"mutate: mutmut run failed ({rc}); see {log}")


def statuses() -> dict[str, tuple[str, str]]:
    """mutant name -> (source path, status), from mutmut's per-file results."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, tuple[str, str]] = {}
    for meta in sorted((WORK / "mutants").rglob("*.py.meta")):
        source = str(meta.relative_to(WORK / "mutants"))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in codes.items():
            out[name] = (source, status_by_exit_code[code])
    return out


def diff_of(name: str, source: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(WORK)
    try:
        return "\n".join(get_diff_for_mutant(name, path=Path(source)).split("\n")[2:])
    finally:
        os.chdir(cwd)


def justifications() -> dict[str, str]:
    """mutant name -> why it may survive (tests/mutate/justified.toml: groups of names)."""
    doc = tomllib.loads(JUSTIFIED.read_text()) if JUSTIFIED.exists() else {}
    out: dict[str, str] = {}
    for group in doc.get("survivor", []):
        for name in group["mutants"]:
            out[name] = group["why"]
    return out


def report(results: dict[str, tuple[str, str]]) -> int:
    why = justifications()
    per: dict[str, Counter[str]] = {}
    for source, status in results.values():
        per.setdefault(source, Counter())[status] += 1
    survivors = sorted(n for n, (_, s) in results.items() if s not in KILLED)
    killed = sum(1 for _, s in results.values() if s in KILLED)
    total = len(results)
    score = killed / total if total else 0.0
    unjustified = [n for n in survivors if n not in why]
    stale = sorted(set(why) - set(survivors))
    lines = [
        "# make mutate: mutmut over weft's pure modules against tests/unit",
        "",
        f"{killed} of {total} mutants killed: **{score:.1%}** (at least {MIN_KILLED:.0%} "
        f"required); {len(survivors)} survivors, {len(unjustified)} without a justification.",
        "",
        "| module | mutants | killed | survived | other |",
        "| --- | --- | --- | --- | --- |",
    ]
    for source, c in sorted(per.items()):
        k = sum(c[s] for s in KILLED)
        rest = sorted((s, n) for s, n in c.items() if s not in KILLED | {"survived"})
        other = ", ".join(f"{s}: {n}" for s, n in rest)
        lines.append(f"| `{source}` | {sum(c.values())} | {k} | {c['survived']} | {other or '-'} |")
    if stale:
        lines += ["", "Justified names that no longer survive (remove them from "
                  f"`{JUSTIFIED.relative_to(ROOT)}`): " + ", ".join(f"`{n}`" for n in stale)]
    lines += ["", "## Survivors", ""]
    for name in survivors:
        source, status = results[name]
        lines += [f"### `{name}` ({status})", "", why.get(name, "**UNJUSTIFIED**"), "",
                  "```diff", diff_of(name, source), "```", ""]
    (OUT / "report.md").write_text("\n".join(lines))
    print(f"mutate: {killed}/{total} killed ({score:.1%}), {len(survivors)} survivors, "
          f"{len(unjustified)} unjustified; report: {OUT / 'report.md'}")
    return 0 if score >= MIN_KILLED and not unjustified else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--report-only", action="store_true", help="re-read the last run's results")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        copy_tree()
        run_mutmut(args.jobs)
    return report(statuses())


if __name__ == "__main__":
    sys.exit(main())
