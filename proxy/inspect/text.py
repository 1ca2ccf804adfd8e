"""``proxy inspect --text``: a stable dump for ``git diff`` (textconv)."""

from __future__ import annotations

from ..model import Direction
from ..store import Cassette
from .view import body_text, detail, listing


def text_dump(c: Cassette, seq: int | None = None) -> str:
    """Plain text, no colours, no terminal width, no wall-clock fields: diffs stay readable.
    With ``seq``, the header and that one interaction only."""
    view = listing(c)
    out = [f"# proxy cassette, schema {view['schema_version']}, upstream {view['upstream']}, "
           f"{view['count']} interaction(s)"]
    for it in c.interactions() if seq is None else [c.get(seq)]:
        d = detail(it)
        req, resp = d["request"], d["response"]
        out.append("")
        out.append(f"== #{d['n']} {d['kind']} {req['method']} {req['target']} -> "
                   f"{resp['status'] if resp else '-'} ({d['end']}{': ' + d['end_detail'] if d['end_detail'] else ''})")
        for k, v in req["headers"]:
            out.append(f"> {k}: {v}")
        if req["body"] != {"text": ""}:
            out += ["> " + ln for ln in body_text(req["body"]).splitlines()]
        if resp:
            out.append(f"< {resp['status']} {resp['reason']}")
            out += [f"< {k}: {v}" for k, v in resp["headers"]]
        for e in d["timeline"]:
            arrow = ">" if e["dir"] == Direction.CLIENT.value else "<"
            out.append(f"{arrow} {e['offset_ms']:10.1f} ms  {e['type']:6} {e['name']}  {e['summary']}")
        if d["close"]:
            out.append(f"  close {d['close']['code']} {d['close']['reason']!r} by {d['close']['by']}")
    return "\n".join(out) + "\n"
