"""Record mode new_episodes: misses are relayed upstream by the replay server and recorded.

The client's view through the relay must be what replay then serves, the upstream must
get exactly the client's request headers (no accept-encoding or user-agent of the relay's
own), and every end must be recorded as it happened (a client that drops its WebSocket
is a drop, not a clean 1000), with no traceback.

Left out: a refusal with a chunked body. The relay reads a refusal whole (the websockets
client does), so a new_episodes client gets its body as one chunk, where replay (and a
client talking to the upstream) get the recorded chunks.
"""

from __future__ import annotations

import logging
import time

from . import adapter
from . import shapes as S
from .client import request_headers
from .harness import exchange, record_then_replay, run_batch
from .upstream import Upstream

SHAPES = [S.openai_responses(), S.json_body("length"), S.anthropic_529(), S.models_get(), S.encoded("gzip", True),
          S.ws_basic(), S.ws_close(None), S.ws_close(4001, "bye", by="client"), S.ws_drop("client_drop"),
          S.ws_drop("drop"), S.ws_refused("length"), S.ws_deflate(True, False), S.ws_deflate(True, True)]


def test_new_episodes_records_what_the_client_did(fidelity_dir, caplog):
    upstreams: list[Upstream] = []

    def upstream(registry):
        upstreams.append(Upstream(registry))
        return upstreams[-1]

    caplog.set_level(logging.WARNING)
    outcomes = run_batch(SHAPES, fidelity_dir, upstream=upstream, recorder=adapter.start_new_episodes,
                         record_stats=False)
    problems = [o.report() for o in outcomes if o.problems]
    assert not problems, "\n".join(problems)
    # the upstream got the client's headers and nothing the relay would add
    for up in upstreams:  # (a re-run after a timing difference has an upstream of its own)
        for _, target, headers, _ in up.requests:
            shape = up.registry.lookup(target)
            if isinstance(shape, S.HttpShape):
                sent = sorted(k for k, _ in request_headers(shape, "any"))
                assert sorted(k.lower() for k, _ in headers) == sent, (shape.name, headers)
    # the app's errors (uvicorn logs what escapes it) and proxy's own; not asyncio's note on
    # the recorder's loop closing with connection tasks still pending
    tracebacks = [r for r in caplog.records if r.name.startswith(("uvicorn", "proxy"))
                  and (r.exc_info or r.levelno >= logging.ERROR)]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


def test_a_dropped_websocket_client_is_recorded_as_dropped(fidelity_dir):
    shape = S.ws_drop("client_drop")
    _, seen, _, cassette = record_then_replay(
        [shape], fidelity_dir, lambda url, items: [exchange(url, sid, s) for sid, s in items],
        recorder=adapter.start_new_episodes)
    assert len(seen[0].messages) == sum(len(t.replies) for t in shape.turns) and seen[0].end == "left"
    (it,) = adapter.interactions(cassette)
    assert it.close.code is None and it.close.by.value == "client" and it.end.value == "client_gone"


def test_a_client_that_cancels_a_relayed_stream_is_recorded_as_gone(fidelity_dir):
    """The relay stops reading the upstream when its client leaves, as the recorder would see
    the client leave: recorded as client_gone (not a complete stream the client never read)."""
    shape = S.client_cancels_mid_stream()  # leaves at 0.35 s; the rest of the stream comes at 1.2 s

    def drive_and_stay(url, items):
        seen = [exchange(url, sid, s) for sid, s in items]
        time.sleep(shape.duration + 0.3)  # the relay keeps running after the client left, as it does in use
        return seen

    _, seen, _, cassette = record_then_replay([shape], fidelity_dir, drive_and_stay, recorder=adapter.start_new_episodes)
    assert seen[0].end == "left"
    (it,) = adapter.interactions(cassette)
    assert it.end.value == "client_gone", it.end
    assert it.chunks and it.chunks[-1].offset < 1.0, [c.offset for c in it.chunks]
