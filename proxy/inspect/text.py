"""``proxy inspect --text``: everything a cassette holds as stable plain text, for
``git diff`` (textconv): where each request went (scheme, host, port), every header, the
request body, every response chunk and WebSocket frame in full with its offset and size
(decoded from its content encoding; binary as a hex dump; a JSON request body
pretty-printed when that loses nothing), the close. A change to any byte shows up as a changed line.
Control characters are escaped; no colours, no terminal width, no wall-clock fields."""

from __future__ import annotations

import base64
import json

from ..store import Cassette
from .view import body_text, data_view, detail, fmt_ms, hexdump, listing, printable


def _data_lines(prefix: str, view: dict) -> list[str]:
    if "base64" in view:
        text = hexdump(base64.b64decode(view["base64"]))
    else:
        text = body_text(view)
    lines = text.split("\n")
    if lines and lines[-1] == "" and len(lines) > 1:
        lines.pop()  # the chunk ended with a newline: no empty last line
    # White space at a line's end is data (a changed byte is a changed line): kept.
    return [f"{prefix}  {printable(ln)}" if ln else prefix for ln in lines]


_SPELLINGS = [(a, sep) for a in (False, True) for sep in ((",", ":"), (", ", ": "))]


def _as_sent(view: dict, raw: bytes) -> dict:
    """A JSON body is shown pretty-printed only when that loses nothing: when the bytes
    sent are what a JSON writer makes of it (compact or with spaces, escaped or not).
    Otherwise (other spacing, ``1.00``, a repeated key) the text as sent, so any change
    to it is a changed line."""
    if "json" not in view:
        return view
    for ensure_ascii, sep in _SPELLINGS:
        if json.dumps(view["json"], ensure_ascii=ensure_ascii, separators=sep).encode() == raw:
            return view
    return data_view(raw)


def _kind(view: dict) -> str:
    return "binary" if "base64" in view else "json" if "json" in view else "text"


def text_dump(c: Cassette, seq: int | None = None) -> str:
    """With ``seq``, the header and that one interaction only."""
    view = listing(c)
    out = [f"# proxy cassette, schema {view['schema_version']}, upstream {printable(view['upstream'])}, "
           f"{view['count']} interaction(s)"]
    for it in c.interactions() if seq is None else [c.get(seq)]:
        d = detail(it)
        req, resp = d["request"], d["response"]
        out.append("")
        end = d["end"] + (": " + d["end_detail"] if d["end_detail"] else "")
        out.append(printable(f"== #{d['n']} {d['kind']} {req['method']} {req['target']} -> "
                             f"{resp['status'] if resp else '-'} ({end})"))
        # As stored (not model.origin's spelling): a changed case or default port is a changed line.
        version = f", {req['http_version']}" if req["http_version"] else ""
        out.append(printable(f"  origin {req['scheme']}://{req['host']}, port {req['port']}{version}"))
        out += [printable(f"> {k}: {v}") for k, v in req["headers"]]
        req["body"] = _as_sent(req["body"], it.request.body)
        if req["body"]["size"]:
            sent = f", sent as {req['body_encoding']}" if req["body_encoding"] else ""
            out.append(f"> body {req['body']['size']} bytes {_kind(req['body'])}{printable(sent)}")
            out += _data_lines(">", req["body"])
        if resp:
            out.append(printable(f"< {resp['status']} {resp['reason']}"))
            out += [printable(f"< {k}: {v}") for k, v in resp["headers"]]
        timing = "accept delay" if d["kind"] == "websocket" else "time to headers"
        out.append(f"  {timing} {fmt_ms(d['ttfb_ms']) or '-'}, duration {fmt_ms(d['duration_ms']) or '-'}")
        if resp and "chunks" in resp:
            if resp.get("body_encoding"):
                note = f"decoded from {resp['body_encoding']}" if not resp.get("body_problem") else resp["body_problem"]
                out.append(printable(f"< body {resp['body']['size']} bytes ({note})"))
            for i, ch in enumerate(resp["chunks"], 1):
                dec = f", {ch['data']['size']} decoded" if resp.get("body_encoding") else ""
                out.append(f"< chunk {i} at {fmt_ms(ch['offset_ms'])}: {ch['bytes']} bytes{dec} {_kind(ch['data'])}")
                out += _data_lines("<", ch["data"])
        for f in d.get("frames", []):
            arrow = ">" if f["dir"] == "client" else "<"
            out.append(f"{arrow} frame at {fmt_ms(f['offset_ms'])}: {f['dir']} {f['bytes']} bytes {f['type']}")
            out += _data_lines(arrow, f["data"])
        if d["close"]:
            out.append(printable(f"  close {d['close']['code']} {d['close']['reason']!r} by {d['close']['by']}"))
    return "\n".join(out) + "\n"
