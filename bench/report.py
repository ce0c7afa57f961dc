"""Statistics, the weft/reference (and weft/baseline) table, target checks, markdown/JSON output
and the PNG plot."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from typing import Any

WEFT = "weft"
REF = "reference"
HELPER = "weft-helper"  # the same frozen weft, every exec handed to a `weft serve` helper
BASE = "baseline"  # another frozen weft (bench.py --baseline), in-process
BASE_HELPER = "baseline-helper"  # that build through its own `weft serve`, when it has one
COMMANDS = ("ADD", "CHECK", "DEL")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "mean": math.nan, "max": math.nan}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
    }


def fill_window(capacity: int) -> int:
    """How many ADDs at each end of the fill are summarised (10 for a /24)."""
    return max(1, min(10, capacity // 10))


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def finalize(results: dict[str, Any], labels: Sequence[str]) -> None:
    """Add ``stats``, ``figures`` and ``targets`` to ``results`` (in place)."""
    stats: dict[str, Any] = {}
    for label in labels:
        s: dict[str, Any] = {}
        single = results.get("single", {}).get(label, {})
        for cmd, series in single.items():
            s[cmd] = {k: _stats(v) for k, v in series.items()}
        fill = results.get("fill", {}).get(label)
        if fill:
            walls = fill["add_wall_ms"]
            w = fill_window(len(walls))
            early = statistics.median(walls[:w])
            late = statistics.median(walls[-w:])
            cpus = fill.get("add_cpu_ms", [])
            early_cpu = statistics.median(cpus[:w]) if cpus else math.nan
            late_cpu = statistics.median(cpus[-w:]) if cpus else math.nan
            s["fill"] = {
                "window": w,
                "early_reservations": f"0..{w - 1}",
                "late_reservations": f"{len(walls) - w}..{len(walls) - 1}",
                "early_add_ms": round(early, 3),
                "late_add_ms": round(late, 3),
                "late_over_early": _ratio(late, early),
                "early_add_cpu_ms": round(early_cpu, 3),
                "late_add_cpu_ms": round(late_cpu, 3),
                "late_over_early_cpu": _ratio(late_cpu, early_cpu),
                "add_wall": _stats(walls),
                "del_wall": _stats(fill.get("del_wall_ms", [])),
            }
        stats[label] = s
    results["stats"] = stats

    def g(label: str, *path: str) -> float | None:
        cur: Any = stats.get(label)
        for p in path:
            if not isinstance(cur, dict) or p not in cur:
                return None
            cur = cur[p]
        return float(cur) if isinstance(cur, int | float) else None

    def gb(label: str, key: str) -> float | None:
        b = results.get("burst", {}).get(label)
        return float(b["summary"][key]) if b else None

    rows: list[dict[str, Any]] = []
    base = BASE in labels

    def row(section: str, metric: str, unit: str, vals: dict[str, float | None]) -> None:
        r = {
            "section": section,
            "metric": metric,
            "unit": unit,
            "values": vals,
            "ratio": _ratio(vals.get(WEFT), vals.get(REF)),
            "ratio_helper": _ratio(vals.get(HELPER), vals.get(REF)),
        }
        if base:
            r["ratio_baseline"] = _ratio(vals.get(WEFT), vals.get(BASE))
            r["ratio_helper_baseline"] = _ratio(vals.get(HELPER), vals.get(BASE_HELPER))
        rows.append(r)

    for cmd in (*COMMANDS, "cycle"):
        name = "ADD+DEL cycle" if cmd == "cycle" else cmd
        for q in ("p50", "p95"):
            row("single", f"{name} wall {q}", "ms", {lb: g(lb, cmd, "wall_ms", q) for lb in labels})
        for q in ("p50", "p95"):
            row("single", f"{name} CPU {q}", "ms", {lb: g(lb, cmd, "cpu_ms", q) for lb in labels})
    for cmd in COMMANDS:
        row(
            "single",
            f"{cmd} peak RSS",
            "MiB",
            {lb: _mib(g(lb, cmd, "rss_kib", "max")) for lb in labels},
        )
    if results.get("burst"):
        n = results["params"]["burst"]
        for key, metric in (
            ("add_wall_ms", f"{n} ADDs wall"),
            ("del_wall_ms", f"{n} DELs wall"),
            ("total_wall_ms", "ADD+DEL total wall"),
            ("add_cpu_ms", f"{n} ADDs CPU"),
            ("del_cpu_ms", f"{n} DELs CPU"),
            ("total_cpu_ms", "ADD+DEL total CPU"),
        ):
            row("burst", metric, "ms", {lb: gb(lb, key) for lb in labels})
        row("burst", "peak RSS", "MiB", {lb: _mib(gb(lb, "max_rss_kib")) for lb in labels})
    if results.get("fill"):
        row(
            "fill",
            "ADD wall, store nearly empty",
            "ms",
            {lb: g(lb, "fill", "early_add_ms") for lb in labels},
        )
        row(
            "fill",
            "ADD wall, store nearly full",
            "ms",
            {lb: g(lb, "fill", "late_add_ms") for lb in labels},
        )
        row(
            "fill",
            "full / empty ADD cost",
            "x",
            {lb: g(lb, "fill", "late_over_early") for lb in labels},
        )
        row(
            "fill",
            "full / empty ADD CPU",
            "x",
            {lb: g(lb, "fill", "late_over_early_cpu") for lb in labels},
        )
        row(
            "fill",
            "ADD wall p50 (all)",
            "ms",
            {lb: g(lb, "fill", "add_wall", "p50") for lb in labels},
        )
        row(
            "fill",
            "DEL wall p50 (all)",
            "ms",
            {lb: g(lb, "fill", "del_wall", "p50") for lb in labels},
        )
    peak = {
        lb: _mib(results.get("correctness", {}).get(lb, {}).get("final", {}).get("peak_rss_kib"))
        for lb in labels
    }
    row("all", "peak RSS of any exec", "MiB", peak)
    serves = {
        lb: results.get(key) or {} for lb, key in ((HELPER, "helper"), (BASE_HELPER, BASE_HELPER))
    }
    if any(serves.values()):
        none: dict[str, float | None] = {lb: None for lb in labels}
        row(
            "helper",
            "weft serve RSS (end of run)",
            "MiB",
            {**none, **{lb: _mib(h.get("rss_kib")) for lb, h in serves.items() if h}},
        )
        row(
            "helper",
            "weft serve + its waiting spare child, RSS summed",
            "MiB",
            {**none, **{lb: _mib((h.get("rss_kib") or 0) + (h.get("spare_rss_kib") or 0))
                        for lb, h in serves.items() if h}},
        )
        row(
            "helper",
            "weft serve peak RSS (VmHWM)",
            "MiB",
            {**none, **{lb: _mib(h.get("hwm_kib")) for lb, h in serves.items() if h}},
        )
    results["figures"] = rows
    results["targets"] = _targets(results, labels, rows)


def _mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / 1024.0, 2)


def _targets(
    results: dict[str, Any], labels: Sequence[str], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    have = WEFT in labels and REF in labels

    def ratio_of(metric: str) -> float | None:
        for r in rows:
            if r["metric"] == metric:
                return r["ratio"]  # type: ignore[no-any-return]
        return None

    def value_of(metric: str, label: str) -> float | None:
        for r in rows:
            if r["metric"] == metric:
                return r["values"].get(label)  # type: ignore[no-any-return]
        return None

    burst_ok: bool | None = None
    bc = results.get("correctness", {}).get(WEFT, {}).get("burst")
    if bc:
        burst_ok = (
            bc.get("all_distinct")
            and bc.get("add_failed") == 0
            and bc.get("del_failed") == 0
            and bc.get("duplicates") == 0
        )
    out: list[dict[str, Any]] = []

    def target(
        name: str, value: float | None, limit: float, unit: str, extra_ok: bool | None = True
    ) -> None:
        if not have or value is None:
            status = "n/a"
        else:
            status = "PASS" if value <= limit and extra_ok else "MISS"
        out.append(
            {
                "target": name,
                "limit": f"<= {limit:g}{unit}",
                "value": value,
                "unit": unit,
                "status": status,
            }
        )

    cyc = ratio_of("ADD+DEL cycle wall p50")
    target("single ADD+DEL cycle wall p50, weft/ref", cyc, 4.0, "x")
    target("  stretch: same, <= 3x", cyc, 3.0, "x")
    target("CHECK wall p50, weft/ref", ratio_of("CHECK wall p50"), 4.0, "x")
    target(
        "burst ADD+DEL total wall, weft/ref, 0 duplicates/failures",
        ratio_of("ADD+DEL total wall"),
        4.0,
        "x",
        burst_ok,
    )
    target("fill: weft ADD cost full / empty", value_of("full / empty ADD cost", WEFT), 1.5, "x")
    target("weft peak RSS per exec", value_of("peak RSS of any exec", WEFT), 40.0, " MiB")
    if HELPER in labels:

        def helper_ratio(metric: str) -> float | None:
            for r in rows:
                if r["metric"] == metric:
                    return r["ratio_helper"]  # type: ignore[no-any-return]
            return None

        hb = results.get("correctness", {}).get(HELPER, {}).get("burst")
        helper_burst_ok = bool(hb) and (
            hb.get("all_distinct")
            and hb.get("add_failed") == 0
            and hb.get("del_failed") == 0
            and hb.get("duplicates") == 0
        )
        target("helper ADD wall p50, helper/ref", helper_ratio("ADD wall p50"), 2.5, "x")
        target("helper DEL wall p50, helper/ref", helper_ratio("DEL wall p50"), 1.3, "x")
        target("helper ADD+DEL cycle wall p50, helper/ref", helper_ratio("ADD+DEL cycle wall p50"),
               2.0, "x")
        target(
            "helper burst ADD+DEL total wall, helper/ref, 0 duplicates/failures",
            helper_ratio("ADD+DEL total wall"),
            2.5,
            "x",
            helper_burst_ok,
        )
        target("weft serve + its waiting spare child, RSS summed",
               value_of("weft serve + its waiting spare child, RSS summed", HELPER), 40.0, " MiB")
    return out


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "x":
        return f"{v:.2f}x"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}"


def table_lines(results: dict[str, Any], labels: Sequence[str], md: bool) -> list[str]:
    ratios = [("weft/ref", "ratio")]
    if HELPER in labels:
        ratios.append(("helper/ref", "ratio_helper"))
    if BASE in labels:
        ratios.append(("weft/base", "ratio_baseline"))
    if HELPER in labels and BASE_HELPER in labels:
        ratios.append(("helper/base-helper", "ratio_helper_baseline"))
    cols = ["section", "metric", "unit", *labels, *(name for name, _ in ratios)]
    body = [
        [
            r["section"],
            r["metric"],
            r["unit"],
            *[_fmt(r["values"].get(lb), r["unit"]) for lb in labels],
            *[_fmt(r.get(key), "x") for _, key in ratios],
        ]
        for r in results["figures"]
    ]
    return _grid(cols, body, md)


def baseline_lines(results: dict[str, Any], md: bool) -> list[str]:
    """Which build the baseline columns ran: its path, its own version line, its helper."""
    b = results.get("baseline")
    if not b:
        return []
    q = "`" if md else ""
    serve = "no `weft serve`: no baseline-helper column, no helper/base-helper ratio"
    if b["helper_column"]:
        serve = "has `weft serve`: column baseline-helper"
    elif b["has_serve"]:
        serve = "has `weft serve` (not benchmarked: --no-helper)"
    return [
        f"baseline: {q}{b['path']}{q}",
        f"  version: {q}{b['version']}{q}",
        f"  {serve}",
    ]


def target_lines(results: dict[str, Any], md: bool) -> list[str]:
    cols = ["target", "limit", "value", "status"]
    body = [
        [t["target"], t["limit"], _fmt(t["value"], t["unit"].strip()), t["status"]]
        for t in results["targets"]
    ]
    return _grid(cols, body, md)


def _grid(cols: list[str], body: list[list[str]], md: bool) -> list[str]:
    if md:
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(c.strip() for c in r) + " |" for r in body]
        return lines
    widths = [
        max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(cols)
    ]
    sep = "  "
    lines = [
        sep.join(c.ljust(w) for c, w in zip(cols, widths, strict=True)),
        sep.join("-" * w for w in widths),
    ]
    for r in body:
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append(sep.join(cells))
    return lines


def correctness_lines(results: dict[str, Any], md: bool) -> list[str]:
    lines: list[str] = []
    for label, scen in results.get("correctness", {}).items():
        for name, fields in scen.items():
            kv = ", ".join(f"{k}={v}" for k, v in fields.items())
            lines.append(f"- {label} / {name}: {kv}" if md else f"  {label}/{name}: {kv}")
    return lines


def markdown(results: dict[str, Any], labels: Sequence[str]) -> str:
    meta = results["meta"]
    out = ["# weft benchmark: weft vs reference (bridge + host-local)", ""]
    out.append(f"Run {meta['date']} - {'OK' if results['ok'] else 'CORRECTNESS FAILURES'}")
    if results.get("baseline"):
        out += ["", "## Baseline", ""] + [
            f"- {line.strip()}" for line in baseline_lines(results, md=True)
        ]
    out += ["", "## Machine", "", "| key | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in meta.items()]
    out += ["", "## Plugins", ""]
    for lb, p in results["plugins"].items():
        out.append(f"- **{lb}**: `{p['path']}` ({p['style']} config) version: `{p['version']}`")
    params = results["params"]
    out += ["", "## Parameters", "", "```", json.dumps(params, indent=1), "```", ""]
    out += [
        "## Figures",
        "",
        "Single-cycle figures are per exec over the recorded reps; burst figures are the "
        "median over rounds; fill compares the median ADD of the first and last window.",
        "",
    ]
    out += table_lines(results, labels, md=True)
    out += ["", "## Targets", ""]
    out += target_lines(results, md=True)
    out += ["", "## Notes", ""]
    out += [
        f"- Plugins are exec'd {params.get('exec_mode', '?')}: wall, CPU (user+sys) and "
        "ru_maxrss are the plugin's own (incl. children it waits for, e.g. host-local); "
        "burst totals are measured around the whole spawn-all / reap-all.",
        "- The reference is Debian's containernetworking-plugins; its bridge CHECK fails on the "
        "k3s route without gw (containernetworking/plugins#886, fixed in v1.3.0), so its CHECK "
        "figures are for a CHECK that stops at route validation (near its end).",
        "- A run from source (`tests/weft-from-source`) includes the interpreter's start-up "
        "(site, .pth files of this Python); the frozen `dist/weft/weft` is the real subject.",
        "- The machine is shared: see loadavg_start/end above before trusting small differences.",
    ]
    if results.get("baseline"):
        out.append(
            "- weft/base and helper/base-helper compare this build with the baseline build, "
            "both alternating in this run: below 1.00x this build is the faster."
        )
    out += ["", "## Correctness", ""]
    out += correctness_lines(results, md=True)
    if results["failures"]:
        out += ["", "### Failures", ""] + [f"- {f}" for f in results["failures"]]
    out += ["", "![latency](latency.png)", ""]
    return "\n".join(out)


def emit(results: dict[str, Any], out_dir: str, plot: bool = True) -> None:
    labels = list(results["plugins"])
    os.makedirs(out_dir, exist_ok=True)
    print()
    if results.get("baseline"):
        print("\n".join(baseline_lines(results, md=False)))
        print()
    print("\n".join(table_lines(results, labels, md=False)))
    print()
    print("\n".join(target_lines(results, md=False)))
    print()
    print("correctness:")
    print("\n".join(correctness_lines(results, md=False)))
    json_path = os.path.join(out_dir, "latest.json")
    md_path = os.path.join(out_dir, "latest.md")
    _atomic_write(json_path, json.dumps(results, indent=1, default=str) + "\n")
    _atomic_write(md_path, markdown(results, labels))
    print(f"\nwrote {md_path}, {json_path}")
    if plot:
        png = os.path.join(out_dir, "latency.png")
        try:
            plot_png(results, labels, png)
            print(f"wrote {png}")
        except ImportError as exc:
            print(f"no plot: {exc} (pip install matplotlib)")


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


COLORS = {
    WEFT: "#d95f02",
    REF: "#1b9e77",
    HELPER: "#7570b3",
    BASE: "#e6ab02",
    BASE_HELPER: "#a6761d",
}


def plot_png(results: dict[str, Any], labels: Sequence[str], path: str) -> None:
    import matplotlib  # lazily: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fill = results.get("fill") or {}
    burst = results.get("burst") or {}
    ncols = 2 + (1 if burst else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 5), squeeze=False)
    ax = axes[0][0]
    positions: list[float] = []
    data: list[list[float]] = []
    colors: list[str] = []
    width = 0.8 / max(1, len(labels))
    for ci, cmd in enumerate(COMMANDS):
        for li, lb in enumerate(labels):
            vals = results.get("single", {}).get(lb, {}).get(cmd, {}).get("wall_ms", [])
            pos = ci + (li - (len(labels) - 1) / 2) * width
            positions.append(pos)
            data.append(vals)
            colors.append(COLORS.get(lb, "gray"))
            xs = [pos + (((j * 7919) % 100) / 100 - 0.5) * width * 0.5 for j in range(len(vals))]
            ax.scatter(xs, vals, s=6, color=COLORS.get(lb, "gray"), alpha=0.5, zorder=3)
    bp = ax.boxplot(
        data, positions=positions, widths=width * 0.8, showfliers=False, patch_artist=True
    )
    for patch, c in zip(bp["boxes"], colors, strict=True):
        patch.set_facecolor(c)
        patch.set_alpha(0.25)
    ax.set_xticks(range(len(COMMANDS)), COMMANDS)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_ylabel("wall per exec (ms, log)")
    ax.set_title(f"single pod: wall per command ({results['params']['reps']} reps)")
    for lb in labels:
        ax.scatter([], [], color=COLORS.get(lb, "gray"), label=lb)
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)

    ax = axes[0][1]
    for lb in labels:
        walls = fill.get(lb, {}).get("add_wall_ms", [])
        if not walls:
            continue
        ax.scatter(range(len(walls)), walls, s=5, alpha=0.4, color=COLORS.get(lb, "gray"))
        k = 9
        med = [
            statistics.median(walls[max(0, i - k // 2) : i + k // 2 + 1]) for i in range(len(walls))
        ]
        ax.plot(range(len(walls)), med, color=COLORS.get(lb, "gray"), label=f"{lb} (median of 9)")
    ax.set_xlabel("reservations already in the store")
    ax.set_ylabel("ADD wall (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("fill: ADD cost as the subnet fills")
    if fill:
        ax.legend()
    ax.grid(True, alpha=0.3)

    if burst:
        ax = axes[0][2]
        n = results["params"]["burst"]
        keys = [("add_wall_ms", f"{n} ADDs"), ("del_wall_ms", f"{n} DELs")]
        for li, lb in enumerate(labels):
            rounds = burst.get(lb, {}).get("rounds", [])
            for ki, (key, _) in enumerate(keys):
                vals = [r[key] / 1000 for r in rounds]
                x = ki + (li - (len(labels) - 1) / 2) * width
                ax.bar(
                    x,
                    statistics.median(vals) if vals else 0,
                    width * 0.9,
                    color=COLORS.get(lb, "gray"),
                    alpha=0.6,
                    label=lb if ki == 0 else None,
                )
                ax.scatter([x] * len(vals), vals, s=10, color="black", zorder=3)
        ax.set_xticks(range(len(keys)), [k[1] for k in keys])
        ax.set_ylabel("total wall (s), bars = median, dots = rounds")
        ax.set_title(f"burst: {n} concurrent execs")
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)

    meta = results["meta"]
    fig.suptitle(
        f"weft vs reference - {meta['cpu_model']} x{meta['cores']}, "
        f"kernel {meta['kernel']}, {meta['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
