"""Every named traffic shape: recorded through the recorder, replayed with the upstream gone,
and the client must not see a difference (see compare.py for what is compared)."""

from __future__ import annotations

import pytest

from . import catalog
from .harness import run_batch

SHAPES = catalog.named()


@pytest.fixture(scope="module")
def outcomes(fidelity_dir):
    return {o.shape.name: o for o in run_batch(SHAPES, fidelity_dir, concurrency=3)}


@pytest.mark.parametrize("name", catalog.params(SHAPES))
def test_replay_is_the_recording(outcomes, name):
    outcome = outcomes[name]
    assert not outcome.problems, outcome.report()


def test_every_known_difference_names_a_shape_and_an_issue():
    names = {s.name for s in SHAPES}
    assert len(names) == len(SHAPES), "shape names must be unique"
    for name, reason in catalog.KNOWN.items():
        assert name in names, name
        assert reason.startswith("issue "), reason
