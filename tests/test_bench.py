"""Benchmarks are not timed tests; this only checks that every script runs (small sizes)."""

import subprocess
import sys

from .conftest import ROOT


def test_every_benchmark_runs_quick():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert len(rows) >= 6
    assert all("nan" not in ln for ln in rows), r.stdout
