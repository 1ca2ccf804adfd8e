"""Traffic shapes: exactly what the test upstream sends, and what the client does.

A shape is pure data. ``HttpShape`` is one HTTP exchange: the response head after
``ttfb``, then each body ``Part`` written in one write at its offset (seconds after
the request arrived), framed by content-length or chunked (one HTTP chunk per part),
ended cleanly, by a FIN mid-body (``eof``), by a TCP reset, or never (``none``: the
upstream holds the request). ``WsShape`` is one WebSocket session: accept delay,
101 headers, server frames before the first client frame, turns (client frames sent
back to back, then the server's replies with their gaps) and the end (a close frame
from either side, with or without a status, or a dropped connection); or a refused
upgrade. ``ClientPlan`` says when the client gives up.

The builders below make the shapes real clients see from model APIs; the
hypothesis strategies at the bottom generate the rest. Adding a shape is adding a
function that returns one.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import struct
import zlib
from dataclasses import dataclass, replace

import brotli
import zstandard
from hypothesis import assume
from hypothesis import strategies as st

from . import adapter

Headers = tuple[tuple[str, str], ...]

DATE = ("date", "Tue, 21 Nov 2026 13:10:50 GMT")
HEAVY = 256_000  # bytes: a shape this big runs alone (see harness)


@dataclass(frozen=True)
class Part:
    at: float  # seconds after the request arrived
    data: bytes


@dataclass(frozen=True)
class ClientPlan:
    leave_at: float | None = None  # the client closes its socket this long after sending (cancel / timeout)
    wait: float = 3.0  # otherwise it waits at most this long past the shape's last event


@dataclass(frozen=True)
class HttpShape:
    name: str
    kind: str  # groups shapes in the timing report: sse, json, encoded, binary, ...
    method: str = "POST"
    path: str = "/v1/responses"
    query: str = ""
    request_headers: Headers = (("content-type", "application/json"),)
    request_body: bytes = b"{}"
    status: int = 200
    reason: str = "OK"
    headers: Headers = ()  # every response header but the framing one
    framing: str = "chunked"  # chunked | length
    ttfb: float = 0.0
    parts: tuple[Part, ...] = ()
    end: str = "complete"  # complete | eof (FIN mid-body) | reset (RST mid-body) | none (no response at all)
    client: ClientPlan = ClientPlan()
    secret: bool = False  # the body holds a key: replay must serve it redacted, with the same framing

    @property
    def body(self) -> bytes:
        return b"".join(p.data for p in self.parts)

    @property
    def duration(self) -> float:
        return max([self.ttfb, *(p.at for p in self.parts)])

    @property
    def heavy(self) -> bool:
        return sum(len(p.data) for p in self.parts) > HEAVY


@dataclass(frozen=True)
class WsMsg:
    gap: float  # seconds after the previous server frame of the same turn (or the turn's start)
    text: bool
    payload: bytes


@dataclass(frozen=True)
class WsTurn:
    client: tuple[WsMsg, ...]  # sent back to back (pipelined when more than one); gaps ignored
    replies: tuple[WsMsg, ...] = ()  # sent once the turn's last client frame arrived


@dataclass(frozen=True)
class WsEnd:
    by: str = "server"  # server | client (close frames) | drop | reset (server, no close frame) | client_drop
    gap: float = 0.02  # after the last reply
    code: int | None = 1000  # None: a close frame without status (the peer reads 1005)
    reason: str = ""


@dataclass(frozen=True)
class Refusal:
    status: int = 426
    reason: str = "Upgrade Required"
    headers: Headers = (("content-type", "application/json"),)
    framing: str = "length"
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True)
class WsShape:
    name: str
    kind: str = "ws"
    path: str = "/v1/responses"
    query: str = ""
    request_headers: Headers = ()
    subprotocols: tuple[str, ...] = ()  # offered by the client
    server_subprotocols: tuple[str, ...] = ()  # accepted by the upstream
    client_deflate: bool = False
    server_deflate: bool = False
    accept_delay: float = 0.0
    headers: Headers = ()  # extra headers on the 101
    preamble: tuple[WsMsg, ...] = ()
    turns: tuple[WsTurn, ...] = ()
    end: WsEnd = WsEnd()
    refusal: Refusal | None = None
    client: ClientPlan = ClientPlan()

    @property
    def heavy(self) -> bool:
        return sum(len(m.payload) for t in self.turns for m in (*t.client, *t.replies)) > HEAVY

    @property
    def duration(self) -> float:
        gaps = [m.gap for m in self.preamble] + [m.gap for t in self.turns for m in t.replies]
        return self.accept_delay + sum(gaps) + self.end.gap


Shape = HttpShape | WsShape


# -- bodies ------------------------------------------------------------------------


def sse(event: str | None, data: dict | str, sep: bytes = b"\n\n") -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return (head + f"data: {text}").encode() + sep


def paced(blobs: list[bytes], gap: float, start: float = 0.0) -> tuple[Part, ...]:
    return tuple(Part(round(start + i * gap, 6), b) for i, b in enumerate(blobs))


def words(n: int, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    vocab = "the a model stream replay record chunk token delta fidelity every byte same order time".split()
    return [rnd.choice(vocab) + " " for _ in range(n)]


def openai_responses_events(n: int = 5, seed: int = 0) -> list[bytes]:
    rid = f"resp_{seed:04d}fid"
    resp = {"id": rid, "object": "response", "status": "in_progress", "model": "gpt-4.1-mini", "output": []}
    out = [sse("response.created", {"type": "response.created", "sequence_number": 0, "response": resp})]
    text = ""
    for i, w in enumerate(words(n, seed)):
        text += w
        out.append(sse("response.output_text.delta", {"type": "response.output_text.delta", "item_id": "msg_1",
                                                       "output_index": 0, "content_index": 0, "delta": w,
                                                       "sequence_number": i + 1}))
    done = dict(resp, status="completed", output=[{"type": "message", "id": "msg_1", "role": "assistant",
                                                   "content": [{"type": "output_text", "text": text}]}])
    out.append(sse("response.completed", {"type": "response.completed", "sequence_number": n + 1, "response": done}))
    return out


def openai_chat_events(n: int = 5, seed: int = 0) -> list[bytes]:
    def chunk(delta: dict, finish=None) -> bytes:
        return sse(None, {"id": f"chatcmpl-{seed}", "object": "chat.completion.chunk", "created": 1700000000,
                          "model": "gpt-4.1-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": w}) for w in words(n, seed)]
    out.append(chunk({}, "stop"))
    out.append(sse(None, "[DONE]"))
    return out


def anthropic_events(n: int = 5, seed: int = 0, error_at: int | None = None) -> list[bytes]:
    msg = {"id": f"msg_{seed:04d}", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5",
           "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}
    out = [sse("message_start", {"type": "message_start", "message": msg}),
           sse("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
           sse("ping", {"type": "ping"})]
    for i, w in enumerate(words(n, seed)):
        if error_at is not None and i == error_at:
            out.append(sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
            return out
        out.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": w}}))
        if i == n // 2:
            out.append(sse("ping", {"type": "ping"}))
    out += [sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": n}}),
            sse("message_stop", {"type": "message_stop"})]
    return out


def gemini_chunk(text: str, last: bool = False, seed: int = 0) -> dict:
    cand = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if last:
        cand["finishReason"] = "STOP"
    return {"candidates": [cand], "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 9},
            "modelVersion": "gemini-2.5-flash", "responseId": f"fid{seed:04d}"}


def gemini_sse_events(n: int = 4, seed: int = 0) -> list[bytes]:
    ws = words(n, seed)
    return [sse(None, gemini_chunk(w, i == n - 1, seed), b"\r\n\r\n") for i, w in enumerate(ws)]


def gemini_array_pieces(n: int = 4, seed: int = 0) -> list[bytes]:
    """The streamed JSON array google sends without alt=sse: '[{...}', ',\\r\\n{...}', ..., ']'."""
    ws = words(n, seed)
    items = [json.dumps(gemini_chunk(w, i == n - 1, seed), indent=2).encode() for i, w in enumerate(ws)]
    return [b"[" + items[0]] + [b",\r\n" + it for it in items[1:]] + [b"]"]


def eventstream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One application/vnd.amazon.eventstream message (prelude, CRCs, string headers)."""
    hb = b"".join(struct.pack(">B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
                  for k, v in headers.items())
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + hb + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def bedrock_events(n: int = 4, seed: int = 0) -> list[bytes]:
    out = []
    for ev in anthropic_events(n, seed):
        doc = json.loads(ev.split(b"data: ", 1)[1])
        payload = json.dumps({"bytes": base64.b64encode(json.dumps(doc).encode()).decode(), "p": "abcd"}).encode()
        out.append(eventstream_message({":event-type": "chunk", ":content-type": "application/json",
                                        ":message-type": "event"}, payload))
    return out


def token(size: int, seed: int, keylike: bool) -> str:
    """A base64url token like the Responses API's ``encrypted_content``. Random base64url holds
    ``sk-`` about once in 262,144 characters; ``keylike=False`` removes every occurrence."""
    rnd = random.Random(seed)
    raw = base64.urlsafe_b64encode(rnd.randbytes(size * 3 // 4 + 3)).decode().rstrip("=")[:size]
    if not keylike:
        raw = raw.replace("sk-", "sK-")
    elif "sk-" not in raw[: size - 20]:
        raw = raw[: size // 2] + "sk-" + raw[size // 2 + 3:]
    return raw


# -- content encodings -----------------------------------------------------------


def encoder(name: str):
    """(compress one piece, finish) for a streamed encoding: every piece decodes on arrival."""
    if name == "gzip":
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return (lambda b: c.compress(b) + c.flush(zlib.Z_SYNC_FLUSH)), c.flush
    if name == "deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, 15)
        return (lambda b: c.compress(b) + c.flush(zlib.Z_SYNC_FLUSH)), c.flush
    if name == "br":
        c = brotli.Compressor()
        return (lambda b: c.process(b) + c.flush()), c.finish
    if name == "zstd":
        c = zstandard.ZstdCompressor().compressobj()
        return (lambda b: c.compress(b) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)), c.flush
    raise ValueError(name)


def compress_whole(name: str, data: bytes) -> bytes:
    if name == "gzip":
        return gzip.compress(data, mtime=0)
    if name == "deflate":
        return zlib.compress(data)
    if name == "br":
        return brotli.compress(data)
    if name == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(name)


def encode_stream(name: str, blobs: list[bytes]) -> list[bytes]:
    piece, finish = encoder(name)
    out = [piece(b) for b in blobs]
    out[-1] += finish()
    return [b for b in out if b]


def split_even(data: bytes, n: int) -> list[bytes]:
    step = max(1, -(-len(data) // n))
    return [data[i:i + step] for i in range(0, len(data), step)] or [b""]


# -- named shapes ------------------------------------------------------------------

SSE_HEADERS: Headers = (("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"), DATE,
                        ("x-request-id", "req_fid"), ("openai-processing-ms", "41"))
JSON_HEADERS: Headers = (("content-type", "application/json"), DATE, ("x-request-id", "req_fid"))
ANTHROPIC_HEADERS: Headers = (("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"),
                              ("request-id", "req_011fid"), ("anthropic-organization-id", "org-fid"), DATE)


def openai_responses(gap: float = 0.03, n: int = 5) -> HttpShape:
    body = json.dumps({"model": "gpt-4.1-mini", "input": "hi", "stream": True}).encode()
    return HttpShape("openai-responses-sse", "sse", request_body=body,
                     request_headers=(("content-type", "application/json"), ("accept", "text/event-stream")),
                     headers=SSE_HEADERS, ttfb=0.02, parts=paced(openai_responses_events(n), gap, 0.02))


def openai_chat(gap: float = 0.025) -> HttpShape:
    body = json.dumps({"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}],
                       "stream": True}).encode()
    return HttpShape("openai-chat-sse", "sse", path="/v1/chat/completions", request_body=body,
                     headers=SSE_HEADERS, ttfb=0.015, parts=paced(openai_chat_events(6), gap, 0.015))


def anthropic_messages(error_at: int | None = None) -> HttpShape:
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    name = "anthropic-messages-sse" if error_at is None else "anthropic-error-mid-stream"
    return HttpShape(name, "sse", path="/v1/messages", query="beta=true", request_body=body,
                     request_headers=(("content-type", "application/json"), ("anthropic-version", "2023-06-01")),
                     headers=ANTHROPIC_HEADERS, ttfb=0.03,
                     parts=paced(anthropic_events(6, error_at=error_at), 0.02, 0.03))


def anthropic_529() -> HttpShape:
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                       "request_id": "req_011fid"}).encode()
    return HttpShape("anthropic-529-overloaded", "json", path="/v1/messages", status=529, reason="",
                     headers=(("content-type", "application/json"), ("x-should-retry", "true"), DATE),
                     framing="length", ttfb=0.01, parts=(Part(0.01, body),))


def gemini_sse() -> HttpShape:
    model = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    return HttpShape("gemini-alt-sse", "sse", path=model, query="alt=sse",
                     headers=(("content-type", "text/event-stream"), ("x-goog-api-client", "fid"), DATE,
                              ("server", "scaffolding on HTTPServer2")),
                     ttfb=0.02, parts=paced(gemini_sse_events(5), 0.03, 0.02))


def gemini_json_array() -> HttpShape:
    model = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    return HttpShape("gemini-json-array", "json", path=model,
                     headers=(("content-type", "application/json; charset=UTF-8"), DATE, ("vary", "Origin")),
                     ttfb=0.02, parts=paced(gemini_array_pieces(4), 0.03, 0.02))


def bedrock_stream() -> HttpShape:
    return HttpShape("bedrock-eventstream", "binary",
                     path="/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke-with-response-stream",
                     headers=(("content-type", "application/vnd.amazon.eventstream"), DATE,
                              ("x-amzn-requestid", "3f1e-fid"),
                              ("x-amzn-bedrock-content-type", "application/json")),
                     ttfb=0.03, parts=paced(bedrock_events(5), 0.025, 0.03))


def json_body(framing: str, size: int = 900) -> HttpShape:
    doc = {"id": "resp_json", "object": "response", "output_text": "".join(words(size // 6))}
    body = json.dumps(doc).encode()
    parts = (Part(0.02, body),) if framing == "length" else paced(split_even(body, 3), 0.03, 0.02)
    return HttpShape(f"json-{framing}", "json", headers=JSON_HEADERS, framing=framing, ttfb=0.02, parts=parts)


def models_get() -> HttpShape:
    body = json.dumps({"object": "list", "data": [{"id": "gpt-4.1-mini", "object": "model"}]}).encode()
    return HttpShape("openai-models-get", "json", method="GET", path="/v1/models", request_body=b"",
                     request_headers=(), headers=JSON_HEADERS, framing="length", ttfb=0.005, parts=(Part(0.005, body),))


def encoded(enc: str, streamed: bool, framing: str = "chunked") -> HttpShape:
    events = openai_responses_events(6)
    if streamed:
        blobs = encode_stream(enc, events)
    else:
        blobs = split_even(compress_whole(enc, b"".join(events)), 3)
    parts = paced(blobs, 0.025, 0.02) if framing == "chunked" or streamed else (Part(0.02, b"".join(blobs)),)
    ctype = "text/event-stream" if streamed else "application/json"
    return HttpShape(f"{enc}-{'streamed' if streamed else 'whole'}-{framing}", "encoded",
                     headers=(("content-type", ctype), ("content-encoding", enc), DATE, ("vary", "Accept-Encoding")),
                     request_headers=(("content-type", "application/json"), ("accept-encoding", enc)),
                     framing=framing, ttfb=0.02, parts=parts)


def keylike_words(framing: str) -> HttpShape:
    # words that hold "sk-" (split in the source so that no key-shaped literal sits in a file)
    text = ("Follow the task-" "specific-instructions and ask-" "the-user-before-running anything; "
            "the risk-" "assessment-checklist-for-deploys applies.")
    doc = {"type": "message", "content": [{"type": "output_text", "text": text}]}
    body = json.dumps(doc).encode()
    parts = (Part(0.01, body),) if framing == "length" else paced(split_even(body, 2), 0.02, 0.01)
    return HttpShape(f"keylike-words-{framing}", "json", headers=JSON_HEADERS, framing=framing, ttfb=0.01,
                     parts=parts)


def big_token(size: int, keylike: bool, framing: str = "length") -> HttpShape:
    doc = {"type": "reasoning", "id": "rs_fid", "encrypted_content": token(size, size, keylike)}
    body = json.dumps(doc).encode()
    parts = (Part(0.02, body),) if framing == "length" else paced(split_even(body, 4), 0.02, 0.02)
    label = f"{size // 1000}k" if size < 1_000_000 else f"{size // 1_000_000}m"
    return HttpShape(f"token-{label}{'-keylike' if keylike else ''}-{framing}", "big", headers=JSON_HEADERS,
                     framing=framing, ttfb=0.02, parts=parts, client=ClientPlan(wait=8.0))


def fake_key() -> str:
    return "sk-" + "proj-" + "Ab3dEf9hIj" * 4  # key-shaped at run time, never in the file


def secret(framing: str) -> HttpShape:
    """A key in the response (the model echoed it): replay serves it redacted, framing intact."""
    events = [sse("response.output_text.delta", {"delta": f"the key is {fake_key()}, keep it safe"}),
              *openai_responses_events(3)]
    parts = paced(events, 0.03, 0.02) if framing == "chunked" else (Part(0.02, b"".join(events)),)
    return HttpShape(f"secret-in-body-{framing}", "sse", headers=SSE_HEADERS, framing=framing, ttfb=0.02, parts=parts,
                     secret=True)


def big_chunks() -> HttpShape:
    """Writes over 64 KB: mitmproxy hands them on in pieces; the client must see the same pieces."""
    blobs = [sse("response.output_text.delta", {"delta": "x" * size}) for size in (70_000, 150_000, 10)]
    return HttpShape("chunks-over-64k", "big", headers=SSE_HEADERS, ttfb=0.01, parts=paced(blobs, 0.04, 0.01))


def cut(how: str, framing: str) -> HttpShape:
    events = openai_responses_events(6)[:4]
    return HttpShape(f"upstream-{how}-{framing}", "sse", headers=SSE_HEADERS, framing=framing, ttfb=0.01,
                     parts=paced(events, 0.02, 0.01), end=how)


def rate_limited() -> HttpShape:
    body = json.dumps({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
    return HttpShape("openai-429", "json", status=429, reason="Too Many Requests",
                     headers=(("content-type", "application/json"), ("retry-after", "7"), DATE,
                              ("x-ratelimit-remaining-requests", "0")),
                     framing="length", ttfb=0.01, parts=(Part(0.01, body.encode()),))


def client_cancels_mid_stream() -> HttpShape:
    events = openai_responses_events(8)
    parts = paced(events[:3], 0.03, 0.02) + paced(events[3:], 0.03, 1.2)
    return HttpShape("client-cancel-mid-stream", "client", headers=SSE_HEADERS, ttfb=0.02, parts=parts,
                     client=ClientPlan(leave_at=0.35))


def client_timeout_before_headers() -> HttpShape:
    body = json.dumps({"id": "resp_late"}).encode()
    return HttpShape("client-timeout-before-headers", "client", headers=JSON_HEADERS, framing="length", ttfb=1.5,
                     parts=(Part(1.5, body),), client=ClientPlan(leave_at=0.3))


def upstream_never_answers() -> HttpShape:
    return HttpShape("upstream-holds-request", "client", end="none", client=ClientPlan(leave_at=0.3))


# -- WebSocket ---------------------------------------------------------------------


def jmsg(gap: float, **doc) -> WsMsg:
    return WsMsg(gap, True, json.dumps(doc, separators=(",", ":")).encode())


def ws_reply(n: int, gap: float, rid: str) -> tuple[WsMsg, ...]:
    out = [jmsg(gap, type="response.created", response={"id": rid})]
    out += [jmsg(gap, type="response.output_text.delta", delta=w) for w in words(n)]
    out.append(jmsg(gap, type="response.completed", response={"id": rid}))
    return tuple(out)


def ws_turns(k: int = 2, gap: float = 0.02) -> tuple[WsTurn, ...]:
    return tuple(WsTurn((jmsg(0, type="response.create", model="gpt-4.1-mini", input=f"turn {i}"),),
                        ws_reply(3, gap, f"resp_{i}")) for i in range(k))


WS_HEADERS: Headers = (("openai-beta", "responses_websockets=2026-02-06"), ("session_id", "fid-session"))


def ws_basic(**kw) -> WsShape:
    base = dict(name="ws-text-turns", request_headers=WS_HEADERS, headers=(("x-codex-turn-state", "ts-fid"),),
                turns=ws_turns(2), end=WsEnd("server", 0.03, 1000, ""))
    base.update(kw)
    return WsShape(**base)


def ws_binary() -> WsShape:
    rnd = random.Random(7)
    turns = (WsTurn((WsMsg(0, False, rnd.randbytes(300)),),
                    (WsMsg(0.02, False, rnd.randbytes(1000)), WsMsg(0.02, False, b"\x00\xff" * 9))),
             WsTurn((WsMsg(0, True, b'{"type":"ping"}'),), (WsMsg(0.02, False, rnd.randbytes(17)),)))
    return WsShape("ws-binary", kind="ws", turns=turns, end=WsEnd("server", 0.02, 1000, "bye"))


def ws_big_frame() -> WsShape:
    big = base64.b64encode(random.Random(3).randbytes(1_500_000))  # 2 MB of text
    turns = (WsTurn((WsMsg(0, True, b'{"type":"input_audio_buffer.append","audio":"' + big[:100] + b'"}'),),
                    (WsMsg(0.02, True, b'{"type":"delta","audio":"' + big + b'"}'), jmsg(0.02, type="done"))),)
    return WsShape("ws-2mb-frame", kind="ws-big", turns=turns, end=WsEnd("server", 0.02, 1000, ""),
                   client=ClientPlan(wait=8.0))


def ws_deflate(client: bool, server: bool) -> WsShape:
    name = f"ws-deflate-client-{'on' if client else 'off'}-server-{'on' if server else 'off'}"
    return ws_basic(name=name, client_deflate=client, server_deflate=server)


def ws_push() -> WsShape:
    """The server speaks first (session.created) and pushes between turns (rate limits)."""
    turns = ws_turns(2)
    pushed = WsTurn(turns[0].client, turns[0].replies + (jmsg(0.15, type="rate_limits.updated", remaining=9),))
    return ws_basic(name="ws-server-push", preamble=(jmsg(0.02, type="session.created", session={"id": "s1"}),),
                    turns=(pushed, turns[1]), subprotocols=("realtime",), server_subprotocols=("realtime",),
                    path="/v1/realtime", query="model=gpt-realtime")


def ws_pipelined() -> WsShape:
    frames = tuple(jmsg(0, type="conversation.item.create", item={"n": i}) for i in range(3))
    return ws_basic(name="ws-pipelined-client", turns=(WsTurn(frames, ws_reply(2, 0.02, "resp_p")),))


def ws_close(code: int | None, reason: str = "", by: str = "server") -> WsShape:
    label = "none" if code is None else str(code)
    return ws_basic(name=f"ws-close-{by}-{label}", end=WsEnd(by, 0.03, code, reason))


def ws_drop(how: str) -> WsShape:
    return ws_basic(name=f"ws-{how}", end=WsEnd(how, 0.03, None, ""))


def ws_delayed_accept() -> WsShape:
    return ws_basic(name="ws-delayed-accept", accept_delay=0.3)


def ws_refused(framing: str) -> WsShape:
    body = json.dumps({"error": {"code": "websocket_not_enabled", "message": "use HTTP"}}).encode()
    parts = (Part(0.01, body),) if framing == "length" else paced(split_even(body, 2), 0.02, 0.01)
    return ws_basic(name=f"ws-refused-{framing}", refusal=Refusal(framing=framing, parts=parts,
                                                                 headers=(("content-type", "application/json"), DATE)))


def ws_client_leaves_during_accept() -> WsShape:
    return ws_basic(name="ws-client-leaves-during-accept", kind="client", accept_delay=1.5,
                    client=ClientPlan(leave_at=0.3))


def gemini_live() -> WsShape:
    key = "AI" + "za" + "Sy" + "Fid" * 11  # key-shaped at run time, never in the file
    setup = jmsg(0, setup={"model": "models/gemini-2.0-flash-live-001"})
    turns = (WsTurn((setup,), (WsMsg(0.02, False, b'{"setupComplete":{}}'),)),
             WsTurn((jmsg(0, clientContent={"turns": [{"parts": [{"text": "hi"}]}], "turnComplete": True}),),
                    (WsMsg(0.03, False, b'{"serverContent":{"modelTurn":{"parts":[{"text":"hello"}]}}}'),
                     WsMsg(0.02, False, b'{"serverContent":{"turnComplete":true}}'))))
    return WsShape("gemini-live", kind="ws",
                   path="/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent",
                   query=f"key={key}", turns=turns, end=WsEnd("client", 0.02, 1000, ""))


# -- hypothesis strategies -------------------------------------------------------------

# A client that leaves does so this long into a pause of twice this length: far enough
# from any byte that both runs see the same bytes before it leaves.
LEAVE_MARGIN = 0.15
GAPS = st.one_of(st.just(0.0), st.floats(0.0005, 0.004), st.floats(0.015, 0.08)).map(lambda g: round(g, 4))
ENCODINGS = ("identity", "gzip", "br", "zstd", "deflate")
def holds_no_secret(pieces: list[bytes]) -> bool:
    """Neither a piece nor their concatenation (the recorder scans a stream, or a connection's
    frames, as one) would be changed by redaction: the bytes must replay unchanged."""
    whole = b"".join(pieces)
    return adapter.redacted(whole) == whole and all(adapter.redacted(p) == p for p in pieces)


FILLER = st.text("abcdefghijklmnopqrstuvwxyz ", min_size=40, max_size=40)
# Text as model APIs send it, hyphenated words that look like key prefixes included: bytes
# that hold no secret must replay unchanged.
KEYLIKE = st.sampled_from(["task-" "specific-instructions", "ask-" "the-user-before-running", "risk-" "assessment-checklist",
                           "desk-" "research-notes-for-the-week", "sk-"])
TEXT = st.lists(st.one_of(st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,:{}\"'\n-_", min_size=1,
                                  max_size=60), KEYLIKE), min_size=1, max_size=8).map("".join).filter(
    lambda t: adapter.redacted(t.encode()) == t.encode())  # a random run can look like a key: such text is left out


@st.composite
def http_shapes(draw) -> HttpShape:
    kind = draw(st.sampled_from(["sse-openai", "sse-chat", "sse-anthropic", "sse-gemini", "gemini-array",
                                 "bedrock", "json", "text", "token"]))
    n = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 999))
    blobs = {"sse-openai": lambda: openai_responses_events(n, seed),
             "sse-chat": lambda: openai_chat_events(n, seed),
             "sse-anthropic": lambda: anthropic_events(n, seed),
             "sse-gemini": lambda: gemini_sse_events(n, seed),
             "gemini-array": lambda: gemini_array_pieces(n, seed),
             "bedrock": lambda: bedrock_events(n, seed),
             "json": lambda: [json.dumps({"text": draw(TEXT)}).encode()],
             "text": lambda: [draw(TEXT).encode() for _ in range(n)],
             # a base64url token such as encrypted_content: 1 KB to 300 KB, an sk- in it or not
             "token": lambda: [json.dumps({"encrypted_content": token(draw(st.integers(1_000, 300_000)), seed,
                                                                      draw(st.booleans()))}).encode()]}[kind]()
    if draw(st.integers(0, 9)) == 0:  # now and then a write over 64 KB
        blobs.append(draw(FILLER).encode() * (70_000 // 40 + 1))
    assume(holds_no_secret(blobs))
    enc = draw(st.sampled_from(ENCODINGS))
    if enc != "identity":
        blobs = encode_stream(enc, blobs) if draw(st.booleans()) else [compress_whole(enc, b"".join(blobs))]
    # re-chunk: split or join writes so events straddle chunk boundaries
    data = b"".join(blobs)
    if draw(st.booleans()) and len(data) > 1:
        cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=8))))
        blobs = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    ttfb = draw(GAPS)
    at, parts = ttfb, []
    for b in blobs:
        at = round(at + draw(GAPS), 4)
        parts.append(Part(at, b))
    framing = draw(st.sampled_from(["chunked", "length"]))
    end = draw(st.sampled_from(["complete"] * 6 + ["eof", "reset"]))
    status = draw(st.sampled_from([200] * 8 + [400, 429, 500, 503]))
    client = ClientPlan()
    leaves = draw(st.sampled_from([None] * 8 + ["before-headers", "mid-stream"]))
    if leaves == "before-headers":  # the client times out while the upstream thinks
        ttfb = round(ttfb + LEAVE_MARGIN * 2, 4)
        parts = [Part(round(p.at + LEAVE_MARGIN * 2, 4), p.data) for p in parts]
        client = ClientPlan(leave_at=round(ttfb - LEAVE_MARGIN, 4))
    elif leaves == "mid-stream" and len(parts) > 1:  # the client cancels in a long pause of the stream
        cut = draw(st.integers(1, len(parts) - 1))
        pause_at = parts[cut - 1].at
        parts = parts[:cut] + [Part(round(p.at + LEAVE_MARGIN * 2, 4), p.data) for p in parts[cut:]]
        client = ClientPlan(leave_at=round(pause_at + LEAVE_MARGIN, 4))
    ctype = {"bedrock": "application/vnd.amazon.eventstream", "json": "application/json",
             "gemini-array": "application/json", "token": "application/json"}.get(kind, "text/event-stream")
    headers = [("content-type", ctype), DATE, ("x-request-id", f"req_{seed}")]
    if enc != "identity":
        headers.append(("content-encoding", enc))
    name = f"gen-{kind}-{enc}-{framing}-{end}" + (f"-client-leaves-{leaves}" if client.leave_at else "")
    return HttpShape(name, kind.split("-")[0] if kind.startswith("sse") else kind,
                     status=status, reason=REASONS[status], headers=tuple(headers), framing=framing,
                     ttfb=ttfb, parts=tuple(parts), end=end, client=client)


REASONS = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable", 426: "Upgrade Required"}

WS_PAYLOAD = st.one_of(TEXT.map(lambda t: (True, t.encode())),
                       st.binary(min_size=0, max_size=400).map(lambda b: (False, b)))


@st.composite
def ws_msgs(draw, min_size=0, max_size=5) -> tuple[WsMsg, ...]:
    out = []
    for text, payload in draw(st.lists(WS_PAYLOAD, min_size=min_size, max_size=max_size)):
        out.append(WsMsg(draw(GAPS), text, payload))
    return tuple(out)


@st.composite
def ws_shapes(draw) -> WsShape:
    turns = []
    for _ in range(draw(st.integers(0, 4))):
        client = draw(ws_msgs(1, 3))
        turns.append(WsTurn(client, draw(ws_msgs(0, 5))))
    preamble = draw(ws_msgs(0, 2))
    assume(holds_no_secret([m.payload for m in preamble] + [m.payload for t in turns for m in t.replies]))
    end = draw(st.sampled_from(WS_ENDS))
    client_deflate = draw(st.booleans())
    accept_delay = draw(st.sampled_from([0.0, 0.0, 0.05, 0.12]))
    client = ClientPlan()
    if draw(st.integers(0, 11)) == 0:  # the client gives up while the upstream holds the 101 back
        accept_delay, client = LEAVE_MARGIN * 2, ClientPlan(leave_at=LEAVE_MARGIN)
    return WsShape(
        f"gen-ws-{end.by}-{end.code}" + ("-client-leaves" if client.leave_at else ""), kind="ws",
        client_deflate=client_deflate, server_deflate=draw(st.booleans()), accept_delay=accept_delay,
        headers=(("x-codex-turn-state", "ts-gen"),) if draw(st.booleans()) else (),
        preamble=preamble, turns=tuple(turns), end=replace(end, gap=draw(GAPS)), client=client)


WS_ENDS = [WsEnd("server", 0.02, 1000, ""), WsEnd("server", 0.02, 1001, "going away"),
           WsEnd("server", 0.02, None, ""), WsEnd("server", 0.02, 1011, "internal error"),
           WsEnd("server", 0.02, 4321, "custom reason"), WsEnd("drop", 0.02, None), WsEnd("reset", 0.02, None),
           WsEnd("client", 0.02, 1000, ""), WsEnd("client", 0.02, 4000, "client reason"),
           WsEnd("client_drop", 0.02, None)]


def shapes() -> st.SearchStrategy[Shape]:
    return st.one_of(http_shapes(), http_shapes(), ws_shapes())


def batch(max_size: int = 10, min_size: int = 1) -> st.SearchStrategy[list[Shape]]:
    return st.lists(shapes(), min_size=min_size, max_size=max_size)


__all__ = ["ClientPlan", "HttpShape", "Part", "Refusal", "Shape", "WsEnd", "WsMsg", "WsShape", "WsTurn"]
