"""Run every benchmark and print one markdown table (also written to bench/RESULTS.md).

    make bench            # full run
    python bench/run.py --quick   # small sizes, used by the test suite to check the scripts run
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODULES = ["startup_bench", "replay_bench", "record_bench", "ws_bench", "inspect_bench", "vs_bench", "store_bench",
           "match_bench", "fidelity_bench", "forward_bench"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="comma-separated module names")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    mods = args.only.split(",") if args.only else MODULES
    rows = []
    for name in mods:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += importlib.import_module(name).run(quick=args.quick)
    lines = ["| benchmark | metric | value | target | met |", "|---|---|---|---|---|"]
    for r in rows:
        met = "" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        lines.append(f"| {r['bench']} | {r['metric']} | {r['value']} | {r['target']} | {met} |")
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        Path(args.out).write_text(f"# Benchmark results\n\n{stamp}; {machine()}; loopback, HTTP/1.1.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
