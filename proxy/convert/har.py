"""HAR 1.2 <-> Interactions.

Reading (browsers' exports, mitmproxy's ``hardump``, our own): an entry is an HTTP
exchange, or a WebSocket session when it has Chrome's ``_webSocketMessages`` extension
(``{type: send|receive, time: epoch seconds, opcode: 1 text | 2 binary (base64), data}``)
or a 101 status. HAR keeps response bodies decoded (``content.text``, base64 when
``content.encoding`` says so), so ``Content-Encoding`` is dropped and ``Content-Length``
set to the body. Text is held as text, decoded by a charset its writer chose; it is
encoded back by the same rule (``_text_charset``: mitmproxy decodes an SSE stream as
latin-1). Timing kept: ``startedDateTime``; ``timings.wait`` as the time to
headers (accept delay for a socket); the body as one chunk at wait + receive; frames at
their own times. HTTP/2 pseudo-headers (``:authority``...) are dropped. Entries with no
response (status 0: blocked, failed) are skipped and reported.

Writing: every entry valid HAR 1.2 (the fields Chrome DevTools and other viewers
require), bodies decoded from their content encoding, WebSocket frames as
``_webSocketMessages``, and a ``_proxy`` extension with what HAR has no place for
(chunk boundaries and offsets, the raw body when it was content-encoded, exact timing,
how the interaction ended, the close; on the log, the cassette's upstream and mode), so
export -> import gives the cassette back, a forward-mode one still in forward mode.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..encoding import DecodeError, decode_body
from ..model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response, origin
from ..store import Cassette
from .common import ConvertError, fix_body_headers

_VERSION = "0.1.0"


# -- reading -----------------------------------------------------------------

def _exact(ext: dict, name: str) -> float | None:
    """A time our own export wrote in ``_proxy`` (null: never measured)."""
    return None if ext[name] is None else float(ext[name])


def _epoch(text: str) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ConvertError(f"bad startedDateTime {text!r}") from None


def _ms(value) -> float:
    """A HAR timing in seconds; -1 (not applicable) and missing count as 0."""
    return max(0.0, float(value)) / 1000 if isinstance(value, (int, float)) else 0.0


def _headers(items) -> list[tuple[str, str]]:
    out = []
    for h in items or []:
        name, value = (h.get("name"), h.get("value")) if isinstance(h, dict) else (h[0], h[1])
        if str(name).startswith(":"):  # HTTP/2 pseudo-headers: not headers of an HTTP/1.1 replay
            continue
        out.append((str(name), str(value)))
    return out


def _charset(ctype: str) -> str | None:
    for param in ctype.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip("'\"")
    return None


_UTF8_TYPES = ("json", "html", "xml", "javascript", "ecmascript", "text/css")


def _text_charset(ctype: str, writer: str) -> str:
    """The charset the HAR's writer decoded a text body with, to encode it back. A
    declared charset, else UTF-8; but mitmproxy (``hardump``) decodes a type that names
    none and is not JSON, HTML, XML, JavaScript or CSS as latin-1 (text/event-stream,
    text/plain), and our own export always writes UTF-8."""
    if writer == "proxy":
        return "utf-8"
    declared = _charset(ctype)
    if declared:
        return "gb18030" if declared.lower() in ("gb2312", "gbk") else declared
    if writer == "mitmproxy" and not any(t in ctype.lower() for t in _UTF8_TYPES):
        return "latin-1"
    return "utf-8"


def _text(obj: dict, ctype: str = "", writer: str = "") -> bytes:
    text = obj.get("text") or ""
    if obj.get("encoding") == "base64":
        return base64.b64decode(text)
    # mitmproxy writes bytes it could not decode surrogate-escaped: they come back as they were.
    try:
        return text.encode(_text_charset(ctype, writer), "surrogateescape")
    except (LookupError, UnicodeEncodeError):  # an unknown charset, or text it cannot hold
        return text.encode("utf-8", "surrogateescape")


def _header(headers, name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


def _request(entry: dict, ws: bool, writer: str = "") -> Request:
    raw = entry["request"]
    parts = urlsplit(raw["url"])
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    headers = _headers(raw.get("headers"))
    post = raw.get("postData") or {}
    body = _text(post, _header(headers, "content-type") or str(post.get("mimeType") or ""), writer)
    encoding = next((v for k, v in headers if k.lower() == "content-encoding"), None)
    if encoding and body:
        try:
            body = decode_body(body, encoding)
        except DecodeError:
            pass  # HAR tools store request bodies decoded already
    ext = entry.get("_proxy") or {}
    # Our own export says when its httpVersion is only HAR's required placeholder (not recorded).
    version = ext["httpVersion"] if "httpVersion" in ext else raw.get("httpVersion")
    return Request(method=str(raw.get("method", "GET")).upper(), path=parts.path or "/", query=parts.query,
                   headers=headers, body=body, body_encoding=encoding, scheme=scheme, host=parts.hostname or "",
                   port=parts.port or (443 if scheme == "https" else 80), http_version=str(version or ""))


def _entry(entry: dict, writer: str = "") -> Interaction | None:
    resp_raw = entry.get("response") or {}
    status = resp_raw.get("status")
    ext = entry.get("_proxy") or {}
    if not isinstance(status, int) or status <= 0:
        if ext.get("end") == End.INCOMPLETE.value:  # our own export of an interaction cut before its response
            return Interaction(Kind.HTTP, _request(entry, False, writer), None, end=End.INCOMPLETE,
                               started_at=float(ext.get("startedAt", 0.0)), ttfb=_exact(ext, "ttfb") if "ttfb" in ext
                               else None, duration=_exact(ext, "duration") if "duration" in ext else None)
        return None
    messages = entry.get("_webSocketMessages")
    ws = messages is not None or entry.get("_resourceType") == "websocket" or status == 101
    req = _request(entry, ws, writer)
    started = float(ext.get("startedAt", _epoch(entry["startedDateTime"])))
    timings = entry.get("timings") or {}
    ttfb = _exact(ext, "ttfb") if "ttfb" in ext else _ms(timings.get("wait"))
    receive = _ms(timings.get("receive"))
    duration = _exact(ext, "duration") if "duration" in ext else (_ms(entry.get("time")) or (ttfb or 0.0) + receive)
    content = resp_raw.get("content") or {}
    headers = _headers(resp_raw.get("headers"))
    if "rawBody" in ext:  # our own export of a content-encoded body: the bytes as they were sent
        body = base64.b64decode(ext["rawBody"])
    else:
        body = _text(content, _header(headers, "content-type") or str(content.get("mimeType") or ""), writer)
        headers = fix_body_headers(headers, body, stored_decoded=True)
    resp = Response(status, str(resp_raw.get("statusText") or ""), headers)
    try:
        end = End(ext.get("end", End.COMPLETE.value))
    except ValueError:
        end = End.COMPLETE
    it = Interaction(Kind.WEBSOCKET if ws and status == 101 else Kind.HTTP, req, resp, ttfb=ttfb, duration=duration,
                     end=end, end_detail=str(ext.get("endDetail", "")), started_at=started)
    if it.kind is Kind.WEBSOCKET:
        for m in messages or []:
            if m.get("opcode", 1) not in (1, 2):  # control frames: the replay server makes its own
                continue
            text = m.get("opcode", 1) == 1
            data = str(m.get("data", ""))
            payload = data.encode("utf-8") if text else base64.b64decode(data)
            t = float(m.get("time", started))
            offset = max(0.0, t - started if t >= started else t)  # epoch seconds (Chrome, mitmproxy), else relative
            it.frames.append(Frame(Direction.CLIENT if m.get("type") == "send" else Direction.SERVER, text, offset,
                                   payload))
        close = ext.get("close")
        if close:
            it.close = Close(close.get("code"), close.get("reason", ""),
                             Direction(close["by"]) if close.get("by") else None)
        if "duration" not in ext and it.frames:
            it.duration = max(duration, it.frames[-1].offset)
    elif "chunks" in ext:  # chunk boundaries and offsets as recorded
        pos = 0
        for offset, size in ext["chunks"]:
            it.chunks.append(Chunk(float(offset), body[pos : pos + size]))
            pos += size
        if pos != len(body):
            raise ConvertError("_proxy.chunks do not add up to the body")
    elif body:
        it.chunks.append(Chunk((ttfb or 0.0) + receive, body))
    return it


def read_har(path: str | Path) -> tuple[list[Interaction], list[str]]:
    """(interactions in the file's order, why entries were skipped)."""
    interactions, skipped, _ = load_har(path)
    return interactions, skipped


def load_har(path: str | Path) -> tuple[list[Interaction], list[str], dict[str, str]]:
    """``read_har`` and the cassette's own ``upstream`` and ``mode`` when the file is our
    export (its log's ``_proxy``), so a forward-mode cassette comes back one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        entries = doc["log"]["entries"]
        writer = str((doc["log"].get("creator") or {}).get("name") or "")
        ext = doc["log"].get("_proxy") if writer == "proxy" else None
        meta = {k: str(ext[k]) for k in ("upstream", "mode") if ext.get(k)} if isinstance(ext, dict) else {}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConvertError(f"{path}: not a HAR file ({e!r})") from None
    out, skipped = [], []
    for i, entry in enumerate(entries, 1):
        try:
            it = _entry(entry, writer)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ConvertError):
                raise ConvertError(f"{path}: entry {i}: {e}") from None
            raise ConvertError(f"{path}: entry {i} is malformed ({e!r})") from None
        if it is None:
            url = (entry.get("request") or {}).get("url", "?")
            error = (entry.get("response") or {}).get("_error") or "no response"
            skipped.append(f"entry {i} {url}: {error}")
        else:
            out.append(it)
    return out, skipped, meta


# -- writing -----------------------------------------------------------------

def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _name_values(pairs) -> list[dict]:
    return [{"name": k, "value": v} for k, v in pairs]


def _content(data: bytes, mime: str) -> dict:
    out = {"size": len(data), "mimeType": mime}
    try:
        out["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["text"], out["encoding"] = base64.b64encode(data).decode(), "base64"
    return out


def _url(it: Interaction, default_origin: str) -> str:
    r = it.request
    scheme = r.scheme or "http"
    if it.kind is Kind.WEBSOCKET:
        scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    # model.origin: an IPv6 host in brackets, the port only when not the scheme's default
    return (origin(scheme, r.host, r.port) if r.host else default_origin) + r.target


def _export(it: Interaction, default_origin: str) -> dict:
    req, resp = it.request, it.response
    ttfb, duration = it.ttfb or 0.0, it.duration or 0.0
    # The exact values, None (never measured: cut before a response) included.
    ext: dict = {"seq": it.seq, "startedAt": it.started_at, "ttfb": it.ttfb, "duration": it.duration,
                 "end": it.end.value}
    if it.end_detail:
        ext["endDetail"] = it.end_detail
    version = req.http_version or "HTTP/1.1"  # HAR requires one; a cassette made before it was recorded has none
    if not req.http_version:
        ext["httpVersion"] = None
    mime = req.header("content-type") or ""
    entry: dict = {
        "startedDateTime": _iso(it.started_at),
        "time": round(duration * 1000, 3),
        "request": {
            "method": req.method,
            "url": _url(it, default_origin),
            "httpVersion": version,
            "cookies": [],
            "headers": _name_values(req.headers),
            "queryString": _name_values(parse_qsl(req.query, keep_blank_values=True)),
            "headersSize": -1,
            "bodySize": len(req.body),
        },
        "cache": {},
        "timings": {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": 0,
                    "wait": round(ttfb * 1000, 3), "receive": round(max(0.0, duration - ttfb) * 1000, 3)},
    }
    if req.body:
        post = _content(req.body, mime)
        entry["request"]["postData"] = {"mimeType": mime, "text": post["text"], **({"encoding": "base64"}
                                                                                    if "encoding" in post else {})}
    headers = resp.headers if resp else []
    ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
    response = {"status": resp.status if resp else 0, "statusText": resp.reason if resp else "",
                "httpVersion": version, "cookies": [], "headers": _name_values(headers),
                "content": {"size": 0, "mimeType": ctype},
                "redirectURL": next((v for k, v in headers if k.lower() == "location"), ""),
                "headersSize": -1, "bodySize": -1}
    if it.kind is Kind.WEBSOCKET:
        entry["_resourceType"] = "websocket"
        entry["_webSocketMessages"] = [
            {"type": "send" if f.direction is Direction.CLIENT else "receive", "time": it.started_at + f.offset,
             "opcode": 1 if f.is_text else 2,
             "data": f.payload.decode("utf-8", "replace") if f.is_text else base64.b64encode(f.payload).decode()}
            for f in it.frames]
        if it.close is not None:
            ext["close"] = {"code": it.close.code, "reason": it.close.reason,
                            "by": it.close.by.value if it.close.by else None}
    else:
        entry["_resourceType"] = "fetch"
        raw = it.body
        encoding = next((v for k, v in headers if k.lower() == "content-encoding"), None)
        body, compression = raw, None
        if encoding:  # HAR holds the body decoded; the bytes as sent go in _proxy
            ext["rawBody"] = base64.b64encode(raw).decode()
            try:
                body = decode_body(raw, encoding)
                compression = len(body) - len(raw)
            except DecodeError:
                pass
        response["content"] = _content(body, ctype)
        if compression is not None:
            response["content"]["compression"] = compression
        response["bodySize"] = len(raw)
        ext["chunks"] = [[c.offset, len(c.data)] for c in it.chunks]
    entry["response"] = response
    entry["_proxy"] = ext
    return entry


def export_har(c: Cassette) -> dict:
    """The cassette as a HAR 1.2 document (a dict; ``json.dump`` it)."""
    meta = dict(c.meta)
    upstream = str(meta.get("upstream") or "")
    origin = upstream if upstream.startswith(("http://", "https://")) else "http://localhost"
    entries = [_export(it, origin.rstrip("/")) for it in c.interactions()]
    # What the cassette is, beyond its entries: a forward-mode one matches on origin when replayed.
    ext = {k: meta[k] for k in ("upstream", "mode") if meta.get(k)}
    return {"log": {"version": "1.2", "creator": {"name": "proxy", "version": _VERSION,
                                                  "comment": f"exported from {c.path}"},
                    "pages": [], "entries": entries, "_proxy": ext}}
