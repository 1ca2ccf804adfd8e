"""Replay: an engine with no I/O (``engine``), the ASGI app that plays its scripts
(``app`` over ``http`` and ``websocket``, helpers in ``asgi``), many cassettes on one
port (``cassettes``) and the relay of misses to a recorder (``forward``). The app is
served by ``proxy.uvicorn_server``.

No mitmproxy import anywhere under here.
"""

from __future__ import annotations

import threading

from ..matching import MatchConfig
from ..redaction import Redactor
from ..store import Cassette
from .engine import Engine


def load_engine(path, config: MatchConfig | None = None, redactor: Redactor | None = None) -> Engine:
    """An Engine over a cassette's index: opening reads the schema and meta only, whatever
    the cassette's size; a recording's events are read (and checked) when it is matched.
    Blocking (it opens a file): call it off the event loop when others are being served.
    ``verify(path, stop)`` checks the rest of the file, beside serving."""
    c = Cassette.open(path)
    try:
        return Engine(c.source(), config or MatchConfig(), redactor or Redactor())
    except BaseException:
        c.close()
        raise


def verify(path, stop: threading.Event | None = None) -> int:
    """Read and check every row and blob of a cassette (O(file)); raises CassetteError at
    the first damage. ``stop`` ends it early (returns -1)."""
    with Cassette.open(path) as c:
        return c.verify(stop)


__all__ = ["Engine", "load_engine", "verify"]
