"""Measure the start-up cost of the frozen weft forms (the numbers behind packaging choices).

    python3 packaging/bench.py --build [--out /tmp/weft-variants] [-n 50]
    python3 packaging/bench.py --out /tmp/weft-variants            # re-measure only

Builds (with --build) these variants of packaging/weft.spec into --out, then times
``-n`` execs of each for two cheap paths and reports p50/p95 wall time and peak RSS:

  VERSION      CNI_COMMAND=VERSION, nothing else (what libcni runs before everything)
  ADD-noenv    CNI_COMMAND=ADD with CNI_CONTAINERID/CNI_NETNS missing -> CNI error JSON
               (goes through config decoding but not cni.plugin.handlers/pyroute2)

plus ``source`` (python3 -m cni from the tree) as the baseline. With --add (root), it also
times full ADD+DEL pairs of the chosen binary in a throwaway ``wp-`` netns.
Nothing is installed; everything is written under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = os.environ.get("WEFT_PYTHON", sys.executable)

VARIANTS: dict[str, dict[str, str]] = {
    "onedir": {},  # the shipped form: noarchive, optimize=2, run-time hooks dropped
    "onedir-archive": {"WEFT_NOARCHIVE": "0"},
    "onedir-O0": {"WEFT_OPTIMIZE": "0"},
    "onedir-rthooks": {"WEFT_KEEP_RTHOOKS": "1"},
    "onefile": {"WEFT_ONEFILE": "1"},
}


def build(out: Path, names: list[str]) -> None:
    for name in names:
        env = dict(
            os.environ,
            **VARIANTS[name],
            WEFT_NAME=name,
            DISTDIR=str(out / "dist"),
            WORKDIR=str(out / "work" / name),
            PYTHON=PY,
        )
        subprocess.run([str(HERE / "build.sh")], env=env, check=True)


def binary(out: Path, name: str) -> list[str]:
    if name == "source":
        return [str(ROOT / "tests" / "weft-from-source")]
    if name == "onefile":
        return [str(out / "dist" / name)]
    return [str(out / "dist" / name / name)]


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def run_once(argv: list[str], env: dict[str, str], stdin: bytes) -> tuple[float, float, bytes]:
    """Wall time and CPU time (user+sys of the process and its waited-for children), in ms.

    CPU time is the steadier figure on a loaded machine; for onefile it includes the
    unpacking parent and the Python child."""
    r, w = os.pipe()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.PIPE, stdout=w, stderr=subprocess.DEVNULL
    )
    os.close(w)
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status, ru = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return dt * 1000, (ru.ru_utime + ru.ru_stime) * 1000, out


def peak_rss_mib(argv: list[str], env: dict[str, str], stdin: bytes) -> float:
    """Peak RSS of one exec via /usr/bin/time (a Python parent's own RSS would leak into
    wait4's ru_maxrss through fork)."""
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *argv], env=env, input=stdin, capture_output=True, check=False
    )
    return int(proc.stderr.decode().strip().splitlines()[-1]) / 1024


CONF = json.dumps(
    {
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "type": "weft",
        "delegate": {"hairpinMode": True, "forceAddress": True, "isDefaultGateway": True},
    }
)
PATHS = {
    "VERSION": ({"CNI_COMMAND": "VERSION"}, b"", b"supportedVersions"),
    "ADD-noenv": (
        {"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"},
        CONF.encode(),
        b'"code": 4',
    ),
}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def measure(forms: dict[str, list[str]], n: int) -> dict[str, dict[str, dict[str, float]]]:
    """n rounds; each round runs every form once per path (interleaved, so load spikes on a
    shared machine hit all forms alike)."""
    res: dict[str, dict[str, dict[str, float]]] = {f: {} for f in forms}
    for path, (env, stdin, expect) in PATHS.items():
        e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}
        wall: dict[str, list[float]] = {f: [] for f in forms}
        cpu: dict[str, list[float]] = {f: [] for f in forms}
        for argv in forms.values():
            run_once(argv, e, stdin)  # warm the page cache
        for _ in range(n):
            for form, argv in forms.items():
                w, c, out = run_once(argv, e, stdin)
                if expect not in out:
                    raise SystemExit(f"{argv[0]} {path}: unexpected output {out[:200]!r}")
                wall[form].append(w)
                cpu[form].append(c)
        for form, argv in forms.items():
            res[form][path] = {
                "p50_ms": pct(wall[form], 50),
                "p95_ms": pct(wall[form], 95),
                "cpu_p50_ms": pct(cpu[form], 50),
                "cpu_p95_ms": pct(cpu[form], 95),
                "maxrss_mib": round(peak_rss_mib(argv, e, stdin), 1),
            }
    return res


def bench_add(argv: list[str], n: int) -> dict[str, float]:
    """Full ADD then DEL, n times, in a throwaway node netns (needs root)."""
    import tempfile
    import uuid

    sys.path.insert(0, str(ROOT))
    from tests.netns import Node, delete_netns, new_netns

    tmp = Path(tempfile.mkdtemp(prefix="weft-bench-"))
    ns = new_netns("wp")
    node = Node(ns, tmp, plugin=argv[0])
    node.write_subnet()
    adds, dels = [], []
    try:
        pod = node.pod()
        for _ in range(n):
            cid = uuid.uuid4().hex
            t0 = time.perf_counter()
            r = node.add(pod, cid)
            adds.append((time.perf_counter() - t0) * 1000)
            if r.rc != 0:
                raise SystemExit(f"ADD failed: {r.stdout} {r.stderr}")
            t0 = time.perf_counter()
            r = node.delete(pod, cid)
            dels.append((time.perf_counter() - t0) * 1000)
            if r.rc != 0:
                raise SystemExit(f"DEL failed: {r.stdout} {r.stderr}")
    finally:
        for p in node.pods:
            delete_netns(p)
        delete_netns(ns)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "ADD_p50_ms": pct(adds, 50),
        "ADD_p95_ms": pct(adds, 95),
        "DEL_p50_ms": pct(dels, 50),
        "DEL_p95_ms": pct(dels, 95),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/weft-variants"))
    ap.add_argument("--build", action="store_true")
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--variants", default=",".join(["source", *VARIANTS]))
    ap.add_argument("--add", action="store_true", help="also time ADD+DEL pairs (root, netns)")
    args = ap.parse_args()
    names = args.variants.split(",")
    if args.build:
        build(args.out, [v for v in names if v != "source"])
    forms = {name: binary(args.out, name) for name in names}
    report: dict[str, dict[str, object]] = dict(measure(forms, args.n))  # type: ignore[arg-type]
    for name, argv in forms.items():
        if name != "source":
            report[name]["size_mib"] = round(du(args.out / "dist" / name) / 2**20, 1)
        if args.add:
            report[name]["add"] = bench_add(argv, max(5, args.n // 5))
        print(f"{name:18}", json.dumps(report[name]), flush=True)
    print(f"\nload average: {os.getloadavg()}, {os.cpu_count()} CPUs, n={args.n}")
    print(
        f"{'form':18} {'VERSION wall p50/p95':>21} {'cpu p50':>8} {'ADD-noenv wall p50/p95':>23}"
        f" {'cpu p50':>8} {'RSS MiB':>8} {'size MiB':>9}"
    )
    for name, row in report.items():
        v, e = row["VERSION"], row["ADD-noenv"]
        assert isinstance(v, dict) and isinstance(e, dict)
        print(
            f"{name:18} {v['p50_ms']:10.1f}/{v['p95_ms']:<10.1f} {v['cpu_p50_ms']:8.1f}"
            f" {e['p50_ms']:11.1f}/{e['p95_ms']:<11.1f} {e['cpu_p50_ms']:8.1f}"
            f" {max(v['maxrss_mib'], e['maxrss_mib']):8.1f} {row.get('size_mib', '-')!s:>9}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
