"""The view model of ``proxy inspect``: plain dicts with stable keys, so ``--json`` is
just the view model and every renderer (console, text, html) reads the same thing.
``listing()`` is the table of interactions, ``detail()`` one interaction with its
``timeline()``."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

from ..model import Interaction, Kind
from ..sse import SSEParser, summarize
from ..store import Cassette


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def listing_rows(c: Cassette) -> Iterator[dict]:
    """The rows of ``listing()``, streamed from the file (the first come at once, whatever
    the cassette's size)."""
    for r in c.summaries():
        yield {
            "n": r["seq"],
            "kind": r["kind"],
            "method": r["method"],
            "path": r["path"] + ("?" + r["query"] if r["query"] else ""),
            "status": r["status"],
            "events": r["event_count"],
            "bytes": r["body_bytes"],
            "ttfb_ms": _ms(r["ttfb"]),
            "duration_ms": _ms(r["duration"]),
            "end": r["end"],
            "end_detail": r["end_detail"] or "",
            "started_at": r["started_at"],
        }


def listing_head(c: Cassette, count: int) -> dict:
    meta = dict(c.meta)
    return {
        "file": str(c.path),
        "schema_version": c.schema_version,
        "recorded_at": meta.get("created_at"),
        "upstream": meta.get("upstream"),
        "count": count,
    }


def listing(c: Cassette) -> dict:
    rows = list(listing_rows(c))
    return {**listing_head(c, len(rows)), "interactions": rows}


def _body(data: bytes) -> dict:
    if not data:
        return {"text": ""}
    try:
        return {"json": json.loads(data)}
    except ValueError:
        pass
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _short(text: str, width: int = 70) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def _frame_summary(payload: bytes, is_text: bool) -> tuple[str, str]:
    if not is_text:
        return "binary", f"{len(payload)} bytes"
    try:
        doc = json.loads(payload)
    except ValueError:
        return "text", _short(payload.decode("utf-8", "replace"))
    if isinstance(doc, dict):
        name = str(doc.get("type", "json"))
        if isinstance(doc.get("delta"), str):
            return name, repr(doc["delta"])
        resp = doc.get("response")
        if isinstance(resp, dict) and resp.get("status"):
            return name, f"response {resp.get('id', '')} {resp['status']}".strip()
        return name, _short(json.dumps(doc, separators=(",", ":")))
    return "json", _short(payload.decode())


def timeline(it: Interaction) -> list[dict]:
    out = []
    if it.kind is Kind.WEBSOCKET:
        for f in it.frames:
            name, summary = _frame_summary(f.payload, f.is_text)
            out.append({"offset_ms": _ms(f.offset), "dir": f.direction.value, "type": "text" if f.is_text else "binary",
                        "name": name, "summary": summary, "bytes": len(f.payload)})
        return out
    ctype = (it.response.header("content-type", "") if it.response else "") or ""
    if "event-stream" in ctype:
        parser = SSEParser()
        for c in it.chunks:
            events = parser.feed(c.data)
            if not events:
                out.append({"offset_ms": _ms(c.offset), "dir": "server", "type": "chunk", "name": "(partial event)",
                            "summary": f"{len(c.data)} bytes, event continues in the next chunk", "bytes": len(c.data)})
            for ev in events:
                name, summary = summarize(ev, 70)
                out.append({"offset_ms": _ms(c.offset), "dir": "server", "type": "event", "name": name,
                            "summary": summary, "bytes": len(c.data)})
        return out
    for c in it.chunks:
        out.append({"offset_ms": _ms(c.offset), "dir": "server", "type": "chunk", "name": "chunk",
                    "summary": _short(c.data.decode("utf-8", "replace")), "bytes": len(c.data)})
    return out


def detail(it: Interaction) -> dict:
    resp = it.response
    return {
        "n": it.seq,
        "kind": it.kind.value,
        "request": {
            "method": it.request.method,
            "target": it.request.target,
            "headers": [list(h) for h in it.request.headers],
            "body_encoding": it.request.body_encoding,
            "body": _body(it.request.body),
        },
        "response": None if resp is None else {"status": resp.status, "reason": resp.reason,
                                               "headers": [list(h) for h in resp.headers]},
        "ttfb_ms": _ms(it.ttfb),
        "accept_delay_ms": _ms(it.accept_delay),
        "duration_ms": _ms(it.duration),
        "end": it.end.value,
        "end_detail": it.end_detail,
        "close": None if it.close is None else {"code": it.close.code, "reason": it.close.reason,
                                                "by": it.close.by.value if it.close.by else None},
        "timeline": timeline(it),
    }




def body_text(body: dict) -> str:
    """A request body from the view model, as a person reads it."""
    if "json" in body:
        return json.dumps(body["json"], indent=2, ensure_ascii=False)
    if "text" in body:
        return body["text"]
    return f"<{len(base64.b64decode(body['base64']))} bytes, binary>"


def fmt_ms(v) -> str:
    return "" if v is None else f"{v:.1f} ms"
