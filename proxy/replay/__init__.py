"""Replay: an engine with no I/O (``engine``), the ASGI app that plays its scripts
(``app`` over ``http`` and ``websocket``, helpers in ``asgi``), many cassettes on one
port (``cassettes``) and the relay of misses to a recorder (``forward``). The app is
served by ``proxy.uvicorn_server``.

No mitmproxy import anywhere under here.
"""

from __future__ import annotations

from ..matching import MatchConfig
from ..redaction import Redactor
from ..store import Cassette
from .engine import Engine


def load_engine(path, config: MatchConfig | None = None, redactor: Redactor | None = None) -> Engine:
    """Read a cassette into an Engine. Every blob is decoded now (a corrupt cassette fails
    here, not mid-test); an interaction's chunks and frames are built when it is matched,
    so a 10,000-interaction cassette serves its first match quickly."""
    c = Cassette.open(path)
    try:
        c.verify()  # every blob checked now: a damaged cassette fails here, not mid-test
        interactions = list(c.interactions(with_events=False))
    except BaseException:
        c.close()
        raise
    return Engine(interactions, config or MatchConfig(), redactor or Redactor(), loader=c)


__all__ = ["Engine", "load_engine"]
