"""proxy inspect: a cassette for a person (rich tables), a program (--json), git (--text)
or a browser (--html).

One view model feeds every renderer: ``listing()`` for the table of interactions and
``detail()`` for one interaction with its timeline. Both are plain dicts with stable
keys, so ``--json`` is just the view model.
"""

from __future__ import annotations

import base64
import html
import json
import sys

from .model import Direction, Interaction, Kind
from .sse import SSEParser, summarize
from .store import Cassette


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


# -- view model ---------------------------------------------------------------


def listing(c: Cassette) -> dict:
    rows = []
    for r in c.summaries():
        rows.append(
            {
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
        )
    meta = dict(c.meta)
    return {
        "file": str(c.path),
        "schema_version": c.schema_version,
        "recorded_at": meta.get("created_at"),
        "upstream": meta.get("upstream"),
        "count": len(rows),
        "interactions": rows,
    }


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


# -- renderers ------------------------------------------------------------------


def _console():
    from rich.console import Console

    # Not a terminal (a pipe, a file): wide enough that nothing is cut.
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def _fmt_ms(v) -> str:
    return "" if v is None else f"{v:.1f} ms"


def aligned(columns: list[tuple[str, bool]], rows: list[list[str]], styles=None):
    """A table as one rich Text: header, rule, aligned rows; ``styles(row)`` may colour a row.

    rich's Table lays out every cell through its renderer (~0.8 ms a row: 8 s for
    10,000 interactions); here widths are computed once and the whole table is one
    Text, which prints 10,000 rows in well under a second.
    """
    from rich.text import Text

    widths = [len(name) for name, _ in columns]
    for r in rows:
        for i, cell in enumerate(r):
            if len(cell) > widths[i]:
                widths[i] = len(cell)

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if right else c.ljust(w)
                         for c, w, (_, right) in zip(cells, widths, columns)).rstrip()

    text = Text()
    text.append(line([name for name, _ in columns]) + "\n", style="bold")
    text.append("  ".join("-" * w for w in widths) + "\n", style="dim")
    for r in rows:
        text.append(line(r) + "\n", style=styles(r) if styles else "")
    return text


LIST_COLUMNS = [("#", True), ("kind", False), ("method", False), ("path", False), ("status", True),
                ("chunks/frames", True), ("bytes", True), ("ttfb/accept", True), ("duration", True), ("end", False)]


def show_list(c: Cassette, as_json: bool) -> None:
    view = listing(c)
    if as_json:
        print(json.dumps(view, indent=1))
        return
    console = _console()
    console.print(f"[bold]{view['file']}[/bold]  schema {view['schema_version']}  recorded {view['recorded_at']}  "
                  f"upstream {view['upstream']}  {view['count']} interaction(s)")
    rows = [[str(r["n"]), r["kind"], r["method"] or "", r["path"], str(r["status"] or "-"), str(r["events"]),
             str(r["bytes"]), _fmt_ms(r["ttfb_ms"]), _fmt_ms(r["duration_ms"]),
             r["end"] + (f" ({r['end_detail']})" if r["end"] != "complete" and r["end_detail"] else "")]
            for r in view["interactions"]]
    console.print(aligned(LIST_COLUMNS, rows, lambda r: "" if r[-1] == "complete" else "red"), soft_wrap=True, end="")


def show_one(c: Cassette, seq: int, as_json: bool) -> None:
    view = detail(c.get(seq))
    if as_json:
        print(json.dumps(view, indent=1))
        return
    console = _console()
    req, resp = view["request"], view["response"]
    status = f"{resp['status']} {resp['reason']}" if resp else "no response"
    console.print(f"[bold]#{view['n']} {view['kind']} {req['method']} {req['target']} -> {status}[/bold]  ({view['end']}"
                  f"{': ' + view['end_detail'] if view['end_detail'] else ''})")
    timing = "accept delay" if view["kind"] == "websocket" else "time to headers"
    console.print(f"{timing} {_fmt_ms(view['ttfb_ms'])}, duration {_fmt_ms(view['duration_ms'])}")
    console.print("\n[bold]request headers[/bold]")
    for k, v in req["headers"]:
        console.print(f"  {k}: {v}", markup=False)
    if req["body"] != {"text": ""}:
        enc = f" (sent as {req['body_encoding']})" if req["body_encoding"] else ""
        console.print(f"\n[bold]request body{enc}[/bold]")
        console.print(_body_text(req["body"]), markup=False)
    if resp:
        console.print("\n[bold]response headers[/bold]")
        for k, v in resp["headers"]:
            console.print(f"  {k}: {v}", markup=False)
    console.print("\n[bold]timeline[/bold]")
    cols = [("offset", True), ("dir", False), ("type", False), ("event", False), ("summary", False)]
    rows = [[_fmt_ms(e["offset_ms"]), e["dir"], e["type"], e["name"], e["summary"]] for e in view["timeline"]]
    console.print(aligned(cols, rows, lambda r: "magenta" if r[1] == "client" else ""), soft_wrap=True, end="")
    if view["close"]:
        cl = view["close"]
        code = cl["code"] if cl["code"] is not None else "none (abnormal end)"
        console.print(f"close: code {code} {cl['reason']!r} by {cl['by'] or 'unknown'}")


def _body_text(body: dict) -> str:
    if "json" in body:
        return json.dumps(body["json"], indent=2, ensure_ascii=False)
    if "text" in body:
        return body["text"]
    return f"<{len(base64.b64decode(body['base64']))} bytes, binary>"


# -- --text: a stable dump for `git diff` (textconv) ----------------------------


def text_dump(c: Cassette) -> str:
    """Plain text, no colours, no terminal width, no wall-clock fields: diffs stay readable."""
    view = listing(c)
    out = [f"# proxy cassette, schema {view['schema_version']}, upstream {view['upstream']}, "
           f"{view['count']} interaction(s)"]
    for it in c.interactions():
        d = detail(it)
        req, resp = d["request"], d["response"]
        out.append("")
        out.append(f"== #{d['n']} {d['kind']} {req['method']} {req['target']} -> "
                   f"{resp['status'] if resp else '-'} ({d['end']}{': ' + d['end_detail'] if d['end_detail'] else ''})")
        for k, v in req["headers"]:
            out.append(f"> {k}: {v}")
        if req["body"] != {"text": ""}:
            out += ["> " + ln for ln in _body_text(req["body"]).splitlines()]
        if resp:
            out.append(f"< {resp['status']} {resp['reason']}")
            out += [f"< {k}: {v}" for k, v in resp["headers"]]
        for e in d["timeline"]:
            arrow = ">" if e["dir"] == Direction.CLIENT.value else "<"
            out.append(f"{arrow} {e['offset_ms']:10.1f} ms  {e['type']:6} {e['name']}  {e['summary']}")
        if d["close"]:
            out.append(f"  close {d['close']['code']} {d['close']['reason']!r} by {d['close']['by']}")
    return "\n".join(out) + "\n"


# -- --html: a self-contained page with a waterfall -------------------------------


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:18px}table{border-collapse:collapse;margin:12px 0}
td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f4f4f4}.num{text-align:right}.end-complete{color:#2a7}.end-other{color:#c33;font-weight:600}
.legend span{display:inline-block;margin-right:16px}.sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}
svg text{font:12px system-ui,sans-serif}
"""


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``raw``: axis labels at round times."""
    import math

    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def html_page(c: Cassette) -> str:
    view = listing(c)
    its = list(c.interactions())
    t0 = min((it.started_at for it in its), default=0.0)
    spans = [((it.started_at - t0), (it.started_at - t0) + (it.duration or 0.0)) for it in its]
    total = max((e for _, e in spans), default=0.0) or 1.0
    label_w, plot_w, row_h = 260, 900, 26
    height = row_h * len(its) + 40
    svg = [f'<svg id="waterfall" xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 20}" height="{height}">']

    def x(t: float) -> float:
        return label_w + t / total * plot_w

    step = _nice_step(total / 5)
    for i in range(int(total / step) + 1):  # time axis at round values
        t = i * step
        svg.append(f'<line x1="{x(t):.1f}" y1="0" x2="{x(t):.1f}" y2="{height - 20}" stroke="#eee"/>')
        svg.append(f'<text x="{x(t):.1f}" y="{height - 5}" text-anchor="middle">{t * 1000:.0f} ms</text>')
    for row, (it, (start, end)) in enumerate(zip(its, spans)):
        y = row * row_h + 4
        label = f"#{it.seq} {it.kind.value} {it.request.method} {it.request.target}"[:40]
        svg.append(f'<text x="4" y="{y + 14}">{html.escape(label)}</text>')
        svg.append(f'<rect class="bar" x="{x(start):.1f}" y="{y + 3}" width="{max(1.0, x(end) - x(start)):.1f}" '
                   f'height="14" fill="#dde7f5"/>')
        if it.ttfb:  # time to first byte / accept delay
            svg.append(f'<rect class="wait" x="{x(start):.1f}" y="{y + 3}" width="{max(1.0, x(start + it.ttfb) - x(start)):.1f}" '
                       f'height="14" fill="#f0b429"><title>{"accept delay" if it.kind is Kind.WEBSOCKET else "time to headers"} '
                       f'{it.ttfb * 1000:.1f} ms</title></rect>')
        server = [ch.offset for ch in it.chunks] + [f.offset for f in it.frames if f.direction is Direction.SERVER]
        client = [f.offset for f in it.frames if f.direction is Direction.CLIENT]
        for off in server:
            svg.append(f'<line class="tick server" x1="{x(start + off):.1f}" y1="{y + 1}" x2="{x(start + off):.1f}" '
                       f'y2="{y + 19}" stroke="#1f6feb" stroke-width="1.5"/>')
        for off in client:  # drawn last and taller, so they stay visible among server ticks
            svg.append(f'<line class="tick client" x1="{x(start + off):.1f}" y1="{y - 2}" x2="{x(start + off):.1f}" '
                       f'y2="{y + 22}" stroke="#8250df" stroke-width="3"/>')
    svg.append("</svg>")

    rows = []
    for r in view["interactions"]:
        cls = "end-complete" if r["end"] == "complete" else "end-other"
        rows.append(
            f"<tr><td class=num>{r['n']}</td><td>{r['kind']}</td><td>{html.escape(r['method'] or '')}</td>"
            f"<td>{html.escape(r['path'])}</td><td class=num>{r['status'] or '-'}</td><td class=num>{r['events']}</td>"
            f"<td class=num>{r['bytes']}</td><td class=num>{_fmt_ms(r['ttfb_ms'])}</td>"
            f"<td class=num>{_fmt_ms(r['duration_ms'])}</td><td class={cls}>{r['end']}</td></tr>")
    legend = ('<p class="legend"><span><i class="sw" style="background:#f0b429"></i>time to headers / accept delay</span>'
              '<span><i class="sw" style="background:#1f6feb"></i>server chunk or frame</span>'
              '<span><i class="sw" style="background:#8250df"></i>client frame</span></p>')
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{html.escape(view['file'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(view['file'])}</h1>"
        f"<p>schema {view['schema_version']} · recorded {html.escape(str(view['recorded_at']))} · upstream "
        f"{html.escape(str(view['upstream']))} · {view['count']} interaction(s)</p>"
        "<table id=interactions><tr><th>#</th><th>kind</th><th>method</th><th>path</th><th>status</th>"
        "<th>chunks/frames</th><th>bytes</th><th>ttfb/accept</th><th>duration</th><th>end</th></tr>"
        + "".join(rows) + "</table><h2>Timeline</h2>" + legend + "".join(svg) + "</body></html>\n"
    )
