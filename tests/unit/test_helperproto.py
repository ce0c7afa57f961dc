"""The helper's client is the first thing every exec runs: it may load no Python source but
weft's own (only builtin and extension modules), and the protocol lives in one module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
import cni.handoff
new = {}
for name in sorted(set(sys.modules) - before):
    f = getattr(sys.modules[name], "__file__", None)
    new[name] = f
print(json.dumps(new))
"""


def test_the_exec_paths_client_loads_no_python_source_but_weft_s() -> None:
    # -I: what the interpreter loads at start-up and no more (no user site, no env)
    out = subprocess.run([sys.executable, "-I", "-c", _PROBE, str(ROOT)], capture_output=True,
                         text=True, check=True, timeout=60)
    loaded: dict[str, str | None] = json.loads(out.stdout)
    ours = {n for n in loaded if n == "cni" or n.startswith("cni.")}
    assert ours == {"cni", "cni.handoff", "cni.helperproto"}, sorted(ours)
    sourced = {n: f for n, f in loaded.items()
               if n not in ours and f is not None and not f.endswith(".so")}
    assert sourced == {}, sourced
