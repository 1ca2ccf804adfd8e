"""Replay: an engine with no I/O (``engine``), the ASGI app that plays its scripts
(``app`` over ``http`` and ``websocket``, helpers in ``asgi``), many cassettes on one
port (``cassettes``) and the relay of misses to a recorder (``forward``). The app is
served by ``proxy.uvicorn_server``.

No mitmproxy import anywhere under here.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from ..matching import MatchConfig
from ..redaction import Redactor
from ..store import Cassette
from .engine import Engine


def load_engine(path, config: MatchConfig | None = None, redactor: Redactor | None = None,
                forward: bool = False) -> Engine:
    """An Engine over a cassette's index: opening reads the schema and meta only, whatever
    the cassette's size; a recording's events are read (and checked) when it is matched.
    Blocking (it opens a file): call it off the event loop when others are being served.
    ``verify(path, stop)`` checks the rest of the file, beside serving.

    ``forward``: requests come through the forward-mode front and carry their origin;
    a cassette recorded in forward mode then matches on it too (a base-URL cassette
    knows only its one upstream, so there it is not compared)."""
    c = Cassette.open(path)
    try:
        config = config or MatchConfig()
        if forward and c.meta.get("mode") == "forward":
            config = replace(config, match_origin=True)
        return Engine(c.source(), config, redactor or Redactor())
    except BaseException:
        c.close()
        raise


def verify(path, stop: threading.Event | None = None) -> int:
    """Read and check every row and blob of a cassette (O(file)); raises CassetteError at
    the first damage. ``stop`` ends it early (returns -1)."""
    with Cassette.open(path) as c:
        return c.verify(stop)


__all__ = ["Engine", "load_engine", "verify"]
