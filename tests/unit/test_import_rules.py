"""The import rules of weft's three programs, stated once, in one table, and checked.

Static rules read every module's source (imports inside functions included, ``if
TYPE_CHECKING:`` blocks excluded: they never run) and name the module and line that breaks
them. Loading rules start a fresh interpreter and look at what an import, or a whole CNI
exec, really loaded: they catch what a module pulls in through another.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cni", "cnispec", "ipam")

# Pure modules: decisions and records, tested without root; they take data, never fetch it.
PURE = (
    "cnispec.digest", "cnispec.errors", "cnispec.ip", "cnispec.rules",
    "cni.protocol.spec", "cni.protocol.types", "cni.protocol.jsondecode",
    "cni.plugin.config", "cni.plugin.plan", "cni.plugin.check",
    "cni.operator.state",
    "ipam.allocator", "ipam.ranges", "ipam.records", "ipam.store", "ipam.subnetfile",
)
# What doing I/O takes: the OS modules, and weft's own boundary modules.
IO = (
    "os", "io", "subprocess", "socket", "_socket", "fcntl", "ctypes", "select", "signal",
    "shutil", "tempfile", "pathlib", "mmap", "pyroute2",
    "cni.linux", "cni.helper", "cni.plugin.handlers", "cni.plugin.bridge", "cni.protocol.log",
    "cni.protocol.dispatch", "ipam.attachments", "ipam.disk", "ipam.files", "ipam.lock",
)
# Every module a CNI exec may run: in-process, or in a helper's child.
EXEC_PATH = ("cni.protocol", "cni.plugin", "cni.linux", "cni.helper", "ipam", "cnispec")


class Rule(NamedTuple):
    """``importers`` (modules, or packages with everything under them) import nothing of
    ``forbidden``, except the modules in ``exempt``."""

    why: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()


RULES = (
    Rule("pure modules import no I/O", PURE, IO),
    Rule("ipam and cnispec never import cni", ("ipam", "cnispec"), ("cni",)),
    Rule("cnispec is the shared leaf: it imports neither cni nor ipam", ("cnispec",), ("ipam",)),
    Rule("no CNI_COMMAND loads the operator CLI or pydantic", EXEC_PATH,
         ("cni.operator", "pydantic")),
    Rule("pydantic serves only the operator CLI's --json", PACKAGES, ("pydantic",),
         exempt=("cni.operator.jsonout",)),
    Rule("the allocator's pure modules load no heavy stdlib module (every ADD pays for it)",
         ("ipam.allocator", "ipam.ranges", "ipam.subnetfile", "ipam.store"),
         ("json", "hashlib", "dataclasses", "pathlib", "logging", "inspect")),
    Rule("one adapter imports pyroute2", PACKAGES, ("pyroute2",),
         exempt=("cni.linux.netlink",)),
    # what it loads at start-up is checked below, by loading it: builtin modules only
    Rule("the helper's client imports none of weft but its protocol, nor typing",
         ("cni.helper.client", "cni.helper.protocol"),
         ("cni", "cnispec", "ipam", "typing", "pydantic", "pyroute2")),
)
# The few imports a rule's own text allows, (importer, imported): named, not patterns.
ALLOWED = {
    ("cni.helper.client", "cni.helper"): "its own package's protocol module",
    ("cni.helper.client", "cni.helper.protocol"): "the wire protocol it speaks",
    ("cni.helper.client", "cnispec.digest"): "the source tree's build digest (never frozen)",
}


def _covers(prefixes: tuple[str, ...], name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class Import(NamedTuple):
    importer: str
    imported: str
    line: int


def imports_of(module: str, source: str) -> Iterator[Import]:
    """Every module ``source`` imports at run time (``from a import b`` yields ``a`` and
    ``a.b``: b may be a module); TYPE_CHECKING blocks are skipped. weft imports absolutely
    only, so a relative import is reported as itself."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                yield Import(module, a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level:
            yield Import(module, "." * node.level + (node.module or ""), node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = node.module or ""
            yield Import(module, base, node.lineno)
            for a in node.names:
                yield Import(module, f"{base}.{a.name}", node.lineno)


def modules() -> dict[str, str]:
    """Module name -> source, for every module of weft's packages."""
    found: dict[str, str] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path.read_text(encoding="utf-8")
    return found


def broken(rule: Rule, sources: dict[str, str]) -> list[str]:
    out = []
    for module, source in sources.items():
        if not _covers(rule.importers, module) or module in rule.exempt:
            continue
        for imp in imports_of(module, source):
            if any(imp.importer == a and _covers((b,), imp.imported) for a, b in ALLOWED):
                continue
            if _covers(rule.forbidden, imp.imported) and not _covers((module,), imp.imported):
                out.append(f"{module}:{imp.line} imports {imp.imported}")
    return out


SOURCES = modules()


@pytest.mark.parametrize("rule", RULES, ids=[r.why for r in RULES])
def test_rule_holds_in_the_source(rule: Rule) -> None:
    covered = [m for m in SOURCES if _covers(rule.importers, m)]
    assert covered, f"the rule names no existing module: {rule.importers}"
    assert broken(rule, SOURCES) == [], rule.why


def test_every_pure_module_exists_and_imports_are_absolute() -> None:
    assert set(PURE) <= set(SOURCES), sorted(set(PURE) - set(SOURCES))
    relative = [f"{i.importer}:{i.line}" for m, s in SOURCES.items() for i in imports_of(m, s)
                if i.imported.startswith(".")]
    assert relative == []


@pytest.mark.parametrize("rule", RULES, ids=[r.why for r in RULES])
def test_the_checker_sees_each_rule_broken(rule: Rule) -> None:
    """Each rule, broken on purpose in a copy of one module it covers (an import inside a
    function, the kind a reader misses), is reported with its line."""
    victim = next(m for m in sorted(SOURCES) if _covers(rule.importers, m)
                  and m not in rule.exempt)
    bad = next(f for f in rule.forbidden if not _covers((victim,), f))
    source = SOURCES[victim] + f"\n\ndef _sneaky() -> None:\n    import {bad}\n"
    line = len(source.splitlines())
    assert f"{victim}:{line} imports {bad}" in broken(rule, {**SOURCES, victim: source})


# ---- what really loads --------------------------------------------------------------------
_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
for name in sys.argv[2:]:
    __import__(name)
print(json.dumps({n: getattr(sys.modules[n], "__file__", None)
                  for n in sorted(set(sys.modules) - before)}))
"""


def loaded_by(*names: str) -> dict[str, str | None]:
    # -I: what the interpreter loads at start-up and no more (no user site, no env)
    out = subprocess.run([sys.executable, "-I", "-c", _PROBE, str(ROOT), *names],
                         capture_output=True, text=True, check=True, timeout=60)
    found: dict[str, str | None] = json.loads(out.stdout)
    return found


def test_the_helper_client_loads_no_python_source_but_its_own() -> None:
    loaded = loaded_by("cni.helper.client")
    ours = {n for n in loaded if _covers(PACKAGES, n)}
    assert ours == {"cni", "cni.helper", "cni.helper.client", "cni.helper.protocol"}, ours
    sourced = {n: f for n, f in loaded.items()
               if n not in ours and f is not None and not f.endswith(".so")}
    assert sourced == {}, sourced


def test_pure_modules_load_none_of_weft_s_boundary_modules() -> None:
    loaded = loaded_by(*PURE)
    boundary = sorted(n for n in loaded if _covers(IO, n) and _covers(PACKAGES, n))
    assert boundary == [] and "pyroute2" not in loaded, boundary


COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")


@pytest.mark.parametrize("command", COMMANDS)
def test_no_cni_command_loads_the_operator_cli_or_pydantic(command: str,
                                                           tmp_path: Path) -> None:
    """A whole exec of each command (refused for want of a subnet file, or answered, as no
    root is needed for either): the modules it loaded. The data dir is the test's own."""
    out_file = tmp_path / "modules"
    conf = {"cniVersion": "1.1.0", "name": "cbr0", "type": "weft",
            "subnetFile": str(tmp_path / "missing.env"),
            "ipam": {"dataDir": str(tmp_path / "data")}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "WEFT_"))}
    env.update(PYTHONPATH=str(ROOT), CNI_COMMAND=command, CNI_CONTAINERID="c1",
               CNI_NETNS=str(tmp_path / "no-netns"), CNI_IFNAME="eth0", CNI_PATH="/nowhere",
               WEFT_MODULES_OUT=str(out_file), WEFT_SOCKET=str(tmp_path / "no-helper.sock"))
    proc = subprocess.run([sys.executable, "-m", "cni"], input=json.dumps(conf).encode(),
                          env=env, capture_output=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr  # an answer, never a crash
    loaded = out_file.read_text().split()
    assert "cni.protocol.dispatch" in loaded
    if command != "VERSION":
        assert "cni.plugin.handlers" in loaded  # the handlers really ran
    leaked = [m for m in loaded if _covers(("cni.operator", "pydantic"), m)]
    assert leaked == [], leaked
