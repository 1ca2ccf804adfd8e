"""Generated shapes (hypothesis): chunkings, gaps, sizes, encodings, framings, ends, WebSocket
turns and closes. `make test` runs a small fixed sample; `make fidelity` runs FIDELITY_SHAPES."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, Phase, given, settings

from . import shapes as S
from .conftest import LONG_SHAPES
from .harness import run_batch

BATCH = 10 if LONG_SHAPES else 6
EXAMPLES = math.ceil(LONG_SHAPES / BATCH) if LONG_SHAPES else 3

# No shrinking: one example is a whole batch recorded and replayed; the failure report
# names each differing shape with every difference, which is what a shrink would find.
RUN = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG_SHAPES,
               phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))


@RUN
@given(batch=S.batch(BATCH, BATCH if LONG_SHAPES else 3))
def test_generated_shapes_replay_as_recorded(batch, fidelity_dir):
    outcomes = run_batch(batch, fidelity_dir, concurrency=2)
    problems = [o.report() for o in outcomes if o.problems]
    assert not problems, "\n".join(problems)
