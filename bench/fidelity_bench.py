"""Fidelity: the named traffic shapes of tests/fidelity recorded through the recorder and
replayed with the upstream gone; shapes x runs, differences, timing error.

`make fidelity` is the long run (hundreds of generated shapes); this is the quick row: every third
named shape.
"""

from __future__ import annotations

import tempfile

from common import pct


def run(quick: bool = False) -> list[dict]:
    from tests.fidelity import catalog
    from tests.fidelity.harness import run_batch

    everything = catalog.named()
    # every third named shape (the test suite runs them all, `make fidelity` hundreds more):
    # the row is the timing a client observes, and a sample of shapes keeps make bench short
    shapes = [s for s in everything if not s.heavy][:8] if quick else everything[::3]
    with tempfile.TemporaryDirectory() as d:
        outcomes = run_batch(shapes, d, concurrency=2, record_stats=False)
    differing = [o.shape.name for o in outcomes if o.problems]
    unexpected = [n for n in differing if n not in catalog.KNOWN]
    errors = [abs(e) * 1000 for o in outcomes if o.shape.name not in catalog.KNOWN for e in o.timing]
    # client-observed timing error (replay vs recording) goes beside the verdict: a point
    # beyond the suite's tolerance is already a difference, so it has no target of its own
    return [
        {"bench": f"fidelity: {len(shapes)} of {len(everything)} named shapes (tests/fidelity), record then replay",
         "metric": "shapes x runs / differing (known, xfail) / unexpected; timing error p50 / p95 / max",
         "value": f"{len(shapes)} x 2 / {len(differing) - len(unexpected)} / {len(unexpected)}"
                  + (f" ({', '.join(unexpected)})" if unexpected else "")
                  + f"; {pct(errors, 50):.2f} / {pct(errors, 95):.2f} / {max(errors, default=0):.2f} ms",
         "target": "0 unexpected", "ok": not unexpected},
    ]
