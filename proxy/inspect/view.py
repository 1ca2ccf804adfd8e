"""The view model of ``proxy inspect``: plain dicts with stable keys, so ``--json`` is
just the view model and every renderer (console, text, html) reads the same thing.
``listing()`` is the table of interactions, ``detail()`` one interaction in full: its
bodies decoded from their content encoding, every chunk and frame with its data, and
a ``timeline()`` of one-line summaries.

A cassette is input from outside: any string may hold markup or control characters,
so renderers escape everything they print (``printable()`` for terminals and text,
``html.escape`` for the page). The store refuses a row whose numeric columns hold
anything else; ``number()`` still keeps a renderer from formatting a non-number (or a
NaN) as one.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator

from ..encoding import DecodeError, Decoder, decode_body
from ..eventstream import CONTENT_TYPE as EVENTSTREAM, EventStreamError, EventStreamParser
from ..events import short, summarize
from ..model import Interaction, Kind, origin
from ..sse import SSEParser
from ..sse import summarize as summarize_sse
from ..store import Cassette


# -- numbers and text from outside -------------------------------------------

def number(v) -> float | None:
    """A numeric value, or None for anything else (and for NaN or infinity)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if v == v and abs(v) != float("inf") else None


def integer(v) -> int | None:
    n = number(v)
    return int(n) if n is not None else None


def _ms(v) -> float | None:
    v = number(v)
    return None if v is None else round(v * 1000, 3)


# C0 and C1 controls (tab and newline kept where asked), DEL, line/paragraph separators,
# and bidirectional overrides, which can make a terminal show text other than what is there.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_NL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return {9: "\\t", 10: "\\n", 13: "\\r", 27: "\\e"}.get(c) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")


def printable(text, keep_newlines: bool = False) -> str:
    """``text`` with control characters shown as escapes (``\\e``, ``\\x07``, ``\\r``)."""
    return (_CONTROL if keep_newlines else _CONTROL_NL).sub(_escape, str(text))


def fmt_ms(v) -> str:
    v = number(v)
    return "" if v is None else f"{v:.1f} ms"


# -- the list ----------------------------------------------------------------

def origin_of(scheme, host, port) -> str:
    """``scheme://host[:port]`` (``model.origin``, what forward replay matches on), or ""
    when no host was recorded (a base-URL recording made without one)."""
    return origin(str(scheme or ""), str(host), integer(port) or 0) if host else ""


def show_origin(c: Cassette) -> bool:
    """Whether the table shows each row's origin: when the host is part of what replay
    matches (a forward-mode cassette) or the rows went to more than one origin."""
    return dict(c.meta).get("mode") == "forward" or len(c.origins(2)) > 1


def listing_rows(c: Cassette) -> Iterator[dict]:
    """The rows of ``listing()``, streamed from the file (the first come at once, whatever
    the cassette's size)."""
    for r in c.summaries():
        query = str(r["query"] or "")
        yield {
            "n": integer(r["seq"]),
            "kind": str(r["kind"] or ""),
            "method": str(r["method"] or ""),
            "origin": origin_of(r["scheme"], r["host"], r["port"]),
            "path": str(r["path"] or "") + ("?" + query if query else ""),
            "status": integer(r["status"]),
            "events": integer(r["event_count"]),
            "bytes": integer(r["body_bytes"]),
            "ttfb_ms": _ms(r["ttfb"]),
            "duration_ms": _ms(r["duration"]),
            "end": str(r["end"] or ""),
            "end_detail": str(r["end_detail"] or ""),
            "started_at": number(r["started_at"]),
        }


def listing_head(c: Cassette, count: int) -> dict:
    meta = dict(c.meta)
    return {
        "file": str(c.path),
        "schema_version": c.schema_version,
        "recorded_at": meta.get("created_at"),
        "upstream": meta.get("upstream"),
        "mode": meta.get("mode"),
        "count": count,
    }


def listing(c: Cassette) -> dict:
    rows = list(listing_rows(c))
    return {**listing_head(c, len(rows)), "interactions": rows}


# -- bodies ------------------------------------------------------------------

def data_view(data: bytes, parse_json: bool = False, binary: bool = False) -> dict:
    """Bytes as the view shows them: ``{"size", "json"}``, ``{"size", "text"}`` or, for
    bytes that are not UTF-8 (or a binary WebSocket frame), ``{"size", "base64"}``."""
    out: dict = {"size": len(data)}
    if binary:
        out["base64"] = base64.b64encode(data).decode()
        return out
    if parse_json and data.strip():
        try:
            out["json"] = json.loads(data)
            return out
        except ValueError:
            pass
    try:
        out["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["base64"] = base64.b64encode(data).decode()
    return out


def view_bytes(view: dict) -> bytes:
    """The bytes a ``data_view`` stands for (JSON re-serialised)."""
    if "base64" in view:
        return base64.b64decode(view["base64"])
    if "json" in view:
        return json.dumps(view["json"], ensure_ascii=False).encode()
    return view.get("text", "").encode()


def decoded(data: bytes, encoding: str | None) -> tuple[bytes, str | None]:
    """(body without its content encoding, or as stored if it cannot be decoded; the problem)."""
    if not encoding or encoding.strip().lower() in ("", "identity"):
        return data, None
    try:
        return decode_body(data, encoding), None
    except DecodeError as e:
        return data, str(e)


def response_body(it: Interaction) -> tuple[bytes, str | None, str | None]:
    """(the response body decoded, its content encoding, why it could not be decoded)."""
    enc = it.response.header("content-encoding") if it.response else None
    body, problem = decoded(it.body, enc)
    return body, enc, problem


def chunks(it: Interaction) -> tuple[list[dict], str | None]:
    """Every response chunk with its offset, raw size and data (decoded, where the response
    has a content encoding and it decodes); and why decoding failed, if it did."""
    enc = it.response.header("content-encoding") if it.response else None
    try:
        dec: Decoder | None = Decoder(enc)
    except DecodeError as e:
        dec, problem = None, str(e)
    else:
        problem = None
    out = []
    for c in it.chunks:
        data = c.data
        if dec is not None:
            try:
                data = dec.feed(c.data)
            except DecodeError as e:  # show the bytes as stored from here on
                dec, problem = None, str(e)
        out.append({"offset_ms": _ms(c.offset), "bytes": len(c.data), "data": data_view(data)})
    return out, problem


# -- the timeline of summaries -----------------------------------------------

def frame_summary(payload: bytes, is_text: bool) -> tuple[str, str]:
    if not is_text:
        return "binary", f"{len(payload)} bytes"
    try:
        doc = json.loads(payload)
    except ValueError:
        return "text", short(payload.decode("utf-8", "replace"))
    return summarize(doc)


def _eventstream_summary(msg) -> tuple[str, str]:
    """A Bedrock message, named by ``:event-type`` (or by the provider's own event type
    when its payload wraps one in ``bytes``)."""
    try:
        doc = json.loads(msg.payload)
    except ValueError:
        return msg.name, f"{len(msg.payload)} bytes"
    return summarize(doc, msg.name)


def timeline(it: Interaction) -> list[dict]:
    out = []
    if it.kind is Kind.WEBSOCKET:
        for f in it.frames:
            name, summary = frame_summary(f.payload, f.is_text)
            out.append({"offset_ms": _ms(f.offset), "dir": f.direction.value, "type": "text" if f.is_text else "binary",
                        "name": name, "summary": summary, "bytes": len(f.payload)})
        return out
    ctype = ((it.response.header("content-type", "") if it.response else "") or "").lower()
    parser = SSEParser() if "event-stream" in ctype else EventStreamParser() if EVENTSTREAM in ctype else None
    views, _ = chunks(it)
    for c, v in zip(it.chunks, views):
        data = view_bytes(v["data"])
        if parser is not None:
            try:
                events = parser.feed(data)
            except EventStreamError as e:
                parser, events = None, []
                out.append({"offset_ms": v["offset_ms"], "dir": "server", "type": "chunk", "name": "(not an event stream)",
                            "summary": str(e), "bytes": len(c.data)})
                continue
            if not events:
                out.append({"offset_ms": v["offset_ms"], "dir": "server", "type": "chunk", "name": "(partial event)",
                            "summary": f"{len(c.data)} bytes, event continues in the next chunk", "bytes": len(c.data)})
            for ev in events:
                name, summary = summarize_sse(ev, 70) if isinstance(parser, SSEParser) else _eventstream_summary(ev)
                out.append({"offset_ms": v["offset_ms"], "dir": "server", "type": "event", "name": name,
                            "summary": summary, "bytes": len(c.data)})
            continue
        text = v["data"].get("text")
        out.append({"offset_ms": v["offset_ms"], "dir": "server", "type": "chunk", "name": "chunk",
                    "summary": short(text) if text is not None else f"{len(data)} bytes, binary", "bytes": len(c.data)})
    return out


# -- one interaction ---------------------------------------------------------

def detail(it: Interaction) -> dict:
    resp = it.response
    response = None
    if resp is not None:
        response = {"status": integer(resp.status), "reason": str(resp.reason or ""),
                    "headers": [[str(k), str(v)] for k, v in resp.headers]}
    view = {
        "n": integer(it.seq),
        "kind": it.kind.value,
        "request": {
            "method": str(it.request.method),
            "origin": origin_of(it.request.scheme, it.request.host, it.request.port),
            "scheme": str(it.request.scheme),
            "host": str(it.request.host),
            "port": integer(it.request.port),
            "http_version": str(it.request.http_version or ""),
            "target": str(it.request.target),
            "headers": [[str(k), str(v)] for k, v in it.request.headers],
            "body_encoding": it.request.body_encoding,
            "body": data_view(it.request.body, parse_json=True),
        },
        "response": response,
        "ttfb_ms": _ms(it.ttfb),
        "accept_delay_ms": _ms(it.accept_delay),
        "duration_ms": _ms(it.duration),
        "end": it.end.value,
        "end_detail": str(it.end_detail or ""),
        "close": None if it.close is None else {"code": integer(it.close.code), "reason": str(it.close.reason or ""),
                                                "by": it.close.by.value if it.close.by else None},
        "timeline": timeline(it),
    }
    if it.kind is Kind.WEBSOCKET:
        view["frames"] = [{"offset_ms": _ms(f.offset), "dir": f.direction.value, "type": "text" if f.is_text else "binary",
                           "bytes": len(f.payload), "data": data_view(f.payload, binary=not f.is_text)} for f in it.frames]
    elif resp is not None:
        body, enc, problem = response_body(it)
        response["body_encoding"] = enc
        response["body"] = data_view(body, parse_json=True)
        if problem:
            response["body_problem"] = problem
        response["chunks"], chunk_problem = chunks(it)
        if chunk_problem and not problem:
            response["body_problem"] = chunk_problem
    return view


def body_text(body: dict) -> str:
    """A body from the view model, as a person reads it (binary as a hex dump)."""
    if "json" in body:
        return json.dumps(body["json"], indent=2, ensure_ascii=False)
    if "text" in body:
        return body["text"]
    return hexdump(base64.b64decode(body["base64"]))


def hexdump(data: bytes, width: int = 16) -> str:
    lines = []
    for i in range(0, len(data), width):
        row = data[i : i + width]
        hexes = " ".join(f"{b:02x}" for b in row)
        text = "".join(chr(b) if 0x20 <= b < 0x7f else "." for b in row)
        lines.append(f"{i:08x}  {hexes:<{width * 3 - 1}}  |{text}|")
    return "\n".join(lines)
