"""Run every benchmark and print one markdown table (also written to bench/RESULTS.md).

    make bench                    # full run, <= 10 min (BUDGET); writes bench/RESULTS.md
    python bench/run.py --quick   # small sizes, used by the test suite to check the scripts run
    python bench/run.py --only vs_bench,store_bench --out /tmp/x.md

Rules for a row (issue 15): a row that claims speed has its peer beside it, measured in the
same run (a bare uvicorn app, bare mitmproxy, VCR.py, the old matcher, a base-URL replay),
and the ratio; a row with neither a target nor a peer is noise and is not printed.

Progress goes to stderr, one line per module with its elapsed time. A module that fails
becomes a row saying so (the run goes on, and exits 1).
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODULES = ["startup_bench", "replay_bench", "record_bench", "ws_bench", "inspect_bench", "vs_bench", "store_bench",
           "match_bench", "fidelity_bench", "forward_bench", "fault_bench"]
BUDGET = 600.0  # seconds for a full run (issue 15: `make bench` finishes in <= 10 min)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = "load average %.1f at start" % os.getloadavg()[0]
    except OSError:
        load = ""
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {load}"


def precompile() -> None:
    """Byte-compile proxy/ so spawned processes start as an installed package does (pip
    compiles at install time). Under PYTHONDONTWRITEBYTECODE=1 nothing else would, and every
    spawn of `proxy` would compile ~60 modules from source first: +0.15 s of CPU."""
    compileall.compile_dir(str(HERE.parent / "proxy"), quiet=1)


def run_module(name: str, quick: bool) -> list[dict]:
    try:
        return importlib.import_module(name).run(quick=quick)
    except Exception as e:  # one broken module must not lose the other nine minutes of results
        traceback.print_exc()
        return [{"bench": name, "metric": "(the module failed)", "value": f"{type(e).__name__}: {e}"[:200],
                 "target": "runs", "ok": False}]


def table(rows: list[dict]) -> str:
    lines = ["| benchmark | metric | value | target | met |", "|---|---|---|---|---|"]
    for r in rows:
        met = "" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        lines.append(f"| {r['bench']} | {r['metric']} | {r['value']} | {r['target']} | {met} |")
    return "\n".join(lines)


def summary(rows: list[dict], times: dict[str, float], total: float, full: bool) -> str:
    judged = [r for r in rows if r["ok"] is not None]
    met = [r for r in judged if r["ok"]]
    out = [f"Targets met: {len(met)} of {len(judged)}."]
    for label, group in (("Met", met), ("Not met", [r for r in judged if not r["ok"]])):
        if group:
            out.append(f"\n{label}:\n")
            out += [f"- {r['bench']}: {r['metric']} = {r['value']} (target {r['target']})" for r in group]
    within = f" (budget {BUDGET / 60:.0f} min: {'met' if total <= BUDGET else '**not met**'})" if full else ""
    out.append(f"\nRun time: {total:.0f} s{within}; per module: "
               + ", ".join(f"{n} {t:.0f} s" for n, t in times.items()) + ".")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (the test suite runs this)")
    ap.add_argument("--only", help="comma-separated module names")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    mods = args.only.split(",") if args.only else MODULES
    start = time.perf_counter()
    precompile()
    rows, times = [], {}
    for i, name in enumerate(mods, 1):
        print(f"[{i}/{len(mods)}] {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        got = run_module(name, args.quick)
        times[name] = time.perf_counter() - t
        rows += got
        print(f"[{i}/{len(mods)}] {name}: {times[name]:.1f} s, {len(got)} rows "
              f"(total {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    text = f"{table(rows)}\n\n{summary(rows, times, total, full=not args.quick and not args.only)}"
    print(text)
    if not args.quick:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        Path(args.out).write_text(f"# Benchmark results\n\n{stamp}; {machine()}; loopback, HTTP/1.1; "
                                  f"`make bench` (bench/run.py).\n\n{text}\n")
    failed = any(r["metric"] == "(the module failed)" for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
