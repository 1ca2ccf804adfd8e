"""What counts as "the client saw the same thing": the comparison of two observations.

``differences(recorded, replayed)`` lists every difference a client could act on:
status, headers (all but the hop-by-hop ones each server writes for its own
connection), framing, body bytes, transfer chunks, how the response ended;
for WebSockets the handshake, negotiated subprotocol and extensions, every message
(opcode, payload, order), the close frame (code, reason, or none) and abnormal ends.
Timing is compared where the client sees it: time to headers / accept, the start of
every burst of bytes the recording client saw, every message, and the close. The
reason phrase is not compared: an ASGI app cannot choose it (uvicorn writes the
standard phrase of the status), and no client acts on it.

``against_shape(shape, recorded)`` checks the recording itself showed the client what
the upstream sent; without it a broken upstream would make every comparison pass.
"""

from __future__ import annotations

from dataclasses import replace

from . import adapter
from .client import HttpObs, WsObs
from .shapes import HttpShape, Shape, WsShape

# Written by each server for its own connection; never compared.
HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection"})
# Computed by each WebSocket handshake from the client's key and offer; compared as
# negotiated values (subprotocol, extension names) instead.
WS_COMPUTED = HOP | {"upgrade", "sec-websocket-accept", "sec-websocket-extensions", "sec-websocket-protocol"}

# Timing tolerance: absolute + relative to the offset. It holds on this shared 2-core
# machine under load (p99 of |error| 9-15 ms), and still catches a replay that ignores gaps
# (off by the time so far) and the 5-9 % drift of chained sleeps past ~0.6 s (7 % of 1.2 s
# is 84 ms against 56 ms allowed). A shape with timing differences only is re-run alone.
TOL_ABS = 0.020
TOL_REL = 0.03
# The recording run's client waits on mitmproxy's throughput (it hands bodies on in 64 KB
# pieces, ~15-40 MB/s here), while the cassette keeps when each piece left the upstream:
# past the first bytes, replay may run ahead of the recording run by the bytes so far / this.
PROXY_BYTES_PER_S = 10e6


def _framing(obs: HttpObs) -> str | None:
    """Content-length framing must be kept (the header is the recording's); chunked and
    close-delimited are the same stream to a client, and which one a server can write is
    its own affair (mitmproxy writes close-delimited HTTP/1.1 for an HTTP/2 upstream,
    uvicorn always chunks)."""
    return "stream" if obs.framing in ("chunked", "close") else obs.framing


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 160 else r[:150] + f"...({len(r)} chars)"


def _diff(out: list[str], what: str, a, b) -> None:
    if a != b:
        if isinstance(a, (bytes, list)) and isinstance(b, (bytes, list)) and len(a) != len(b):
            out.append(f"{what}: recorded {len(a)} items/bytes, replayed {len(b)}: {_short(a)} vs {_short(b)}")
        elif isinstance(a, bytes) and isinstance(b, bytes):
            i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
            out.append(f"{what}: first difference at byte {i}: {_short(a[i:i + 40])} vs {_short(b[i:i + 40])}")
        else:
            out.append(f"{what}: recorded {_short(a)}, replayed {_short(b)}")


def is_timing(problem: str) -> bool:
    """A difference of timing only (of a response, or of a refusal's)."""
    return problem.startswith(("timing of", "refusal timing of"))


def _timing(out: list[str], errors: list[float], what: str, rec: float | None, rep: float | None,
            size: int = 0) -> None:
    """``size``: bytes the recording client had to receive through the proxy before this point."""
    if rec is None or rep is None:
        return
    err = rep - rec
    errors.append(err)
    tol = TOL_ABS + TOL_REL * rec
    if err > tol or -err > tol + size / PROXY_BYTES_PER_S:
        out.append(f"timing of {what}: recorded {rec * 1000:.1f} ms, replayed {rep * 1000:.1f} ms")


def http_differences(a: HttpObs, b: HttpObs, errors: list[float]) -> list[str]:
    out: list[str] = []
    _diff(out, "client error", a.error, b.error)
    _diff(out, "status", a.status, b.status)
    _diff(out, "headers", [h for h in a.headers if h[0] not in HOP], [h for h in b.headers if h[0] not in HOP])
    _diff(out, "framing", _framing(a), _framing(b))
    _diff(out, "body", a.body, b.body)
    if a.framing == b.framing == "chunked":
        _diff(out, "chunk sizes", [len(c) for c in a.chunks], [len(c) for c in b.chunks])
    _diff(out, "end", a.end, b.end)
    _timing(out, errors, "response headers", a.ttfb, b.ttfb)
    for offset, t in a.bursts():
        _timing(out, errors, f"body byte {offset}", t, b.arrival_of(offset), offset)
    if a.end == b.end and a.end != "left":
        _timing(out, errors, "end of the response", a.end_t, b.end_t, len(a.body))
    return out


def ws_differences(a: WsObs, b: WsObs, errors: list[float]) -> list[str]:
    out: list[str] = []
    _diff(out, "client error", a.error, b.error)
    if a.refusal is not None or b.refusal is not None:
        if a.refusal is None or b.refusal is None:
            return [*out, f"refusal: recorded {a.refusal is not None}, replayed {b.refusal is not None}"]
        return out + [f"refusal {d}" for d in http_differences(a.refusal, b.refusal, errors)]
    _diff(out, "status", a.status, b.status)
    _diff(out, "handshake headers", [h for h in a.headers if h[0] not in WS_COMPUTED],
          [h for h in b.headers if h[0] not in WS_COMPUTED])
    _diff(out, "subprotocol", a.subprotocol, b.subprotocol)
    _diff(out, "extensions", a.extensions, b.extensions)
    _diff(out, "messages", [(op, p) for _, op, p in a.messages], [(op, p) for _, op, p in b.messages])
    _diff(out, "close frame", a.close, b.close)
    _diff(out, "end", _ws_end(a), _ws_end(b))
    _timing(out, errors, "accept", a.accept_t, b.accept_t)
    size = 0
    for i, ((ta, _, pa), (tb, _, _)) in enumerate(zip(a.messages, b.messages)):
        size += len(pa)
        _timing(out, errors, f"message {i + 1}", ta, tb, size)
    if a.end in ("close", "eof", "reset") and _ws_end(b) == _ws_end(a):
        _timing(out, errors, "end", a.end_t, b.end_t)
    return out


def _drop_seen_through_mitmproxy(shape: Shape) -> bool:
    """mitmproxy (wsproto) answers an upstream that drops a WebSocket without a close frame by
    sending the client a 1000 close frame (1006 is a code no endpoint may send), unless the
    drop was a reset it saw first. The cassette keeps the drop and replay reproduces what
    the upstream did, so the recording run's client is the one that differs;
    ``as_upstream_sent`` puts the drop back before comparing."""
    return (isinstance(shape, WsShape) and shape.refusal is None and shape.client.leave_at is None
            and shape.end.by in ("drop", "reset"))


def as_upstream_sent(shape: Shape, recorded):
    if _drop_seen_through_mitmproxy(shape) and recorded.close in ((1000, ""), None):
        return replace(recorded, close=None, end="eof")
    return recorded


def _ws_end(obs: WsObs) -> str:
    # To a WebSocket client a FIN and a reset without a close frame are the same end
    # (1006); the cassette keeps no difference between them either.
    return "dropped" if obs.end in ("eof", "reset") else obs.end


def as_stored(shape: Shape, recorded):
    """A body holding a secret is stored redacted, and replay serves what was stored: the
    same length, the same chunks (redaction never changes the framing)."""
    if isinstance(shape, HttpShape) and shape.secret:
        chunks = [adapter.redacted(c) for c in recorded.chunks] if recorded.chunks is not None else None
        return replace(recorded, body=adapter.redacted(recorded.body), chunks=chunks)
    return recorded


def differences(shape: Shape, recorded, replayed, errors: list[float]) -> list[str]:
    if isinstance(shape, WsShape):
        return ws_differences(as_upstream_sent(shape, recorded), replayed, errors)
    return http_differences(as_stored(shape, recorded), replayed, errors)


def against_shape(shape: Shape, obs) -> list[str]:
    """Did the client, through the recorder, see what the upstream sent?"""
    out: list[str] = []
    if obs.error:
        return [f"client error while recording: {obs.error}"]
    if isinstance(shape, HttpShape):
        if shape.client.leave_at is not None and shape.client.leave_at < shape.ttfb or shape.end == "none":
            _diff(out, "status before the client left", None, obs.status)
            return out
        _diff(out, "status", shape.status, obs.status)
        if shape.end == "complete" and shape.client.leave_at is None:
            _diff(out, "body", shape.body, obs.body)
            _diff(out, "end", "complete", obs.end)
        elif not shape.body.startswith(obs.body):
            out.append(f"body is not a prefix of what the upstream sent ({len(obs.body)} bytes)")
        return out
    if shape.refusal is not None:
        _diff(out, "refusal status", shape.refusal.status, obs.refusal.status if obs.refusal else None)
        return out
    if shape.client.leave_at is not None:
        _diff(out, "status before the client left", None, obs.status)
        return out
    sent = [("text" if m.text else "binary", m.payload) for m in shape.preamble]
    sent += [("text" if m.text else "binary", m.payload) for t in shape.turns for m in t.replies]
    _diff(out, "messages", sent, [(op, p) for _, op, p in obs.messages])
    if _drop_seen_through_mitmproxy(shape) and obs.close not in ((1000, ""), None):
        out.append(f"a dropped upstream reached the client as close frame {obs.close}")
    return out
