"""Benchmarks are not timed tests; this only checks that every script runs (small sizes)."""

import re
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
    # progress per module with its time, and the run's time and verdicts at the end
    done = re.findall(r"^\[(\d+)/(\d+)\] \w+: [0-9.]+ s", r.stderr, re.M)
    assert done and len(done) == int(done[0][1]), r.stderr
    assert "Targets met: " in r.stdout and "Run time: " in r.stdout
