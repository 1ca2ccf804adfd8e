"""proxy: record and replay model-API traffic (HTTP, SSE, WebSocket) with chunk boundaries
and timing intact.

    import proxy

    with proxy.replaying("tests/cassettes/chat.db", speed=0) as p:      # or: async with
        client = OpenAI(base_url=p.base_url, api_key="sk-test")
        ...
    print(p.summary.served, p.summary.misses, p.errors)

``replaying``, ``recording`` and ``use_cassette`` return a ``ModelProxy`` (see ``proxy.api``).
The names below are loaded on first use: ``import proxy`` alone imports nothing heavy
(no server, no HTTP client, no mitmproxy), so ``import proxy.model`` stays cheap too.
"""

from __future__ import annotations

import logging

# A library says nothing unless its user configures logging: without this, Python's
# last-resort handler printed each miss on stderr a second time beside the exception's note.
logging.getLogger("proxy").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "CassetteError",
    "CassetteMismatch",
    "ModelProxy",
    "RecordMode",
    "ServeError",
    "Summary",
    "recording",
    "replaying",
    "use_cassette",
]


def __getattr__(name: str):
    if name in __all__:
        from . import api  # the server, matching and the store: loaded when first asked for

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'proxy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
