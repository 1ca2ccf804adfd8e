"""Replay: an engine with no I/O (``engine``) and a uvicorn adapter (``server``).

No mitmproxy import anywhere under here.
"""

from __future__ import annotations

from ..matching import MatchConfig
from ..redaction import Redactor
from ..store import Cassette
from .engine import Engine


def load_engine(path, config: MatchConfig | None = None, redactor: Redactor | None = None) -> Engine:
    """Read a whole cassette (so a corrupt one fails now, not mid-test) into an Engine."""
    with Cassette.open(path) as c:
        interactions = list(c.interactions())
    return Engine(interactions, config or MatchConfig(), redactor or Redactor())


__all__ = ["Engine", "load_engine"]
