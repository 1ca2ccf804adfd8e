"""``proxy inspect --html``: one self-contained page (inline CSS and script, nothing
fetched): the list of interactions coloured by outcome, filters by path and status,
a click on a row expands its headers, bodies and events with their offsets, and a
waterfall timeline.

Everything from the cassette is escaped (``_e``), numbers go through ``view.integer`` /
``view.number``, and a Content Security Policy allows only the page's own script, by its
hash: even markup that got through could not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math

from ..model import Direction, Kind
from ..store import Cassette
from .view import detail, fmt_ms, listing, number, show_origin

BODY_LIMIT = 256 * 1024  # bytes of one body shown on the page; --json and --body have all

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:18px}table{border-collapse:collapse;margin:12px 0}
td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;font-variant-numeric:tabular-nums;vertical-align:top}
th{background:#f4f4f4}.num{text-align:right}
tr.it{cursor:pointer}tr.it:hover{background:#f6f8fa}tr.it[aria-expanded=true]{background:#eef3fb}
tr.it td:first-child{border-left:5px solid #ccc}
tr.ok td:first-child{border-left-color:#2a7}tr.err td:first-child{border-left-color:#d33}
tr.cut td:first-child{border-left-color:#e8912d}tr.incomplete td:first-child{border-left-color:#999}
.ok .end{color:#2a7}.err .end,.err .status{color:#d33;font-weight:600}.cut .end{color:#c66a00;font-weight:600}
.incomplete .end{color:#777;font-style:italic}
tr.detail>td{background:#fbfbfb;padding:8px 16px 16px}
.detail h3{font-size:13px;margin:12px 0 4px}.detail table{margin:4px 0}
.detail pre{background:#f4f4f4;padding:6px;max-height:320px;overflow:auto;white-space:pre-wrap;word-break:break-all;margin:0}
.client{color:#8250df}.filters{margin:8px 0}.filters input,.filters select{margin-right:12px;font:inherit}
.legend span{display:inline-block;margin-right:16px}.sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}
svg text{font:12px system-ui,sans-serif}
"""

_SCRIPT = """
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.it"));
  function detailOf(tr) { return document.getElementById("d" + tr.dataset.i); }
  function toggle(tr) {
    var d = detailOf(tr), open = d.hidden;
    d.hidden = !open;
    tr.setAttribute("aria-expanded", open ? "true" : "false");
  }
  rows.forEach(function (tr) {
    tr.addEventListener("click", function () { toggle(tr); });
    tr.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(tr); }
    });
  });
  var path = document.getElementById("filter-path"), status = document.getElementById("filter-status");
  function apply() {
    var q = path.value.toLowerCase(), s = status.value, shown = 0;
    rows.forEach(function (tr) {
      var ok = tr.dataset.path.toLowerCase().indexOf(q) >= 0 &&
               (s === "" || tr.dataset.outcome === s || tr.dataset.sclass === s);
      tr.hidden = !ok;
      if (!ok) { detailOf(tr).hidden = true; tr.setAttribute("aria-expanded", "false"); }
      var bar = document.getElementById("w" + tr.dataset.i);
      if (bar) { bar.style.display = ok ? "" : "none"; }
      if (ok) { shown += 1; }
    });
    document.getElementById("shown").textContent = shown + " of " + rows.length + " shown";
  }
  path.addEventListener("input", apply);
  status.addEventListener("change", apply);
  apply();
})();
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_CSP = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{_SCRIPT_HASH}'"

_STATUS_FILTERS = [("", "any status / outcome"), ("ok", "complete, below 400"), ("err", "4xx / 5xx"),
                   ("cut", "cut or upstream error"), ("incomplete", "incomplete"), ("1xx", "1xx (WebSocket)"),
                   ("2xx", "2xx"), ("3xx", "3xx"), ("4xx", "4xx"), ("5xx", "5xx")]


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``raw``: axis labels at round times."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def outcome(status, end: str) -> str:
    """ok / err / cut / incomplete: the row's colour and the outcome filter."""
    if end == "incomplete":
        return "incomplete"
    if end in ("upstream_cut", "client_gone", "upstream_error"):
        return "cut"
    if isinstance(status, int) and status >= 400:
        return "err"
    return "ok"


def _headers(rows) -> str:
    return "<table>" + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _body(view: dict, label: str) -> str:
    if not view or not view.get("size"):
        return ""
    size = view["size"]
    if "base64" in view:
        return f"<h3>{_e(label)}</h3><p>{size} bytes, binary</p>"
    text = json.dumps(view["json"], indent=2, ensure_ascii=False) if "json" in view else view.get("text", "")
    more = ""
    if len(text) > BODY_LIMIT:
        text, more = text[:BODY_LIMIT], f"<p>… {size} bytes in all: <code>proxy inspect FILE N --body</code></p>"
    return f"<h3>{_e(label)} ({size} bytes)</h3><pre>{_e(text)}</pre>{more}"


def _events(d: dict) -> str:
    rows = []
    for ev in d["timeline"]:
        cls = ' class="client"' if ev["dir"] == "client" else ""
        rows.append(f"<tr{cls}><td class=num>{_e(fmt_ms(ev['offset_ms']))}</td><td>{_e(ev['dir'])}</td>"
                    f"<td>{_e(ev['type'])}</td><td>{_e(ev['name'])}</td><td>{_e(ev['summary'])}</td>"
                    f"<td class=num>{_e(ev['bytes'])}</td></tr>")
    if not rows:
        return ""
    title = "frames" if d["kind"] == "websocket" else "events" if any(r["type"] == "event" for r in d["timeline"]) \
        else "chunks"
    return (f"<h3>{title} ({len(rows)})</h3><table class=events><tr><th>offset</th><th>dir</th><th>type</th>"
            f"<th>event</th><th>summary</th><th>bytes</th></tr>{''.join(rows)}</table>")


def _detail(d: dict) -> str:
    req, resp = d["request"], d["response"]
    timing = "accept delay" if d["kind"] == "websocket" else "time to headers"
    parts = [f"<p>{_e(req['method'])} {_e(req['origin'])}{_e(req['target'])} (scheme {_e(req['scheme'])}, "
             f"host {_e(req['host'] or '-')}, port {_e(req['port'])}"
             f"{', ' + _e(req['http_version']) if req['http_version'] else ''})</p>",
             f"<p>{_e(timing)} {_e(fmt_ms(d['ttfb_ms']) or '-')}, duration {_e(fmt_ms(d['duration_ms']) or '-')}, "
             f"end {_e(d['end'])}{(': ' + _e(d['end_detail'])) if d['end_detail'] else ''}</p>",
             f"<h3>request headers</h3>{_headers(req['headers'])}",
             _body(req["body"], "request body" + (f", sent as {req['body_encoding']}" if req["body_encoding"] else ""))]
    if resp:
        parts.append(f"<h3>response headers ({_e(resp['status'])} {_e(resp['reason'])})</h3>{_headers(resp['headers'])}")
        if "body" in resp:
            enc = f", decoded from {resp['body_encoding']}" if resp.get("body_encoding") else ""
            parts.append(_body(resp["body"], "response body" + enc))
    parts.append(_events(d))
    if d["close"]:
        cl = d["close"]
        parts.append(f"<p>close: code {_e(cl['code'] if cl['code'] is not None else 'none (abnormal end)')} "
                     f"{_e(repr(cl['reason']))} by {_e(cl['by'] or 'unknown')}</p>")
    return "".join(parts)


def _waterfall(its, starts, origins: bool = False) -> str:
    t0 = min(starts, default=0.0)
    spans = [(s - t0, s - t0 + (number(it.duration) or 0.0)) for it, s in zip(its, starts)]
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
        svg.append(f'<g id="w{row}">')
        where = (it.request.origin if origins and it.request.host else "") + it.request.target
        label = f"#{it.seq} {it.kind.value} {it.request.method} {where}"[:40]
        svg.append(f'<text x="4" y="{y + 14}">{_e(label)}</text>')
        svg.append(f'<rect class="bar" x="{x(start):.1f}" y="{y + 3}" width="{max(1.0, x(end) - x(start)):.1f}" '
                   f'height="14" fill="#dde7f5"/>')
        ttfb = number(it.ttfb)
        if ttfb:  # time to first byte / accept delay
            what = "accept delay" if it.kind is Kind.WEBSOCKET else "time to headers"
            svg.append(f'<rect class="wait" x="{x(start):.1f}" y="{y + 3}" width="{max(1.0, x(start + ttfb) - x(start)):.1f}" '
                       f'height="14" fill="#f0b429"><title>{what} {ttfb * 1000:.1f} ms</title></rect>')
        server = [ch.offset for ch in it.chunks] + [f.offset for f in it.frames if f.direction is Direction.SERVER]
        client = [f.offset for f in it.frames if f.direction is Direction.CLIENT]
        for off in server:
            svg.append(f'<line class="tick server" x1="{x(start + off):.1f}" y1="{y + 1}" x2="{x(start + off):.1f}" '
                       f'y2="{y + 19}" stroke="#1f6feb" stroke-width="1.5"/>')
        for off in client:  # drawn last and taller, so they stay visible among server ticks
            svg.append(f'<line class="tick client" x1="{x(start + off):.1f}" y1="{y - 2}" x2="{x(start + off):.1f}" '
                       f'y2="{y + 22}" stroke="#8250df" stroke-width="3"/>')
        svg.append("</g>")
    svg.append("</svg>")
    return "".join(svg)


def html_page(c: Cassette) -> str:
    view = listing(c)
    its = list(c.interactions())
    starts = [number(it.started_at) or 0.0 for it in its]
    origins = show_origin(c)  # forward mode, or several hosts: the host is part of the request
    rows = []
    for i, (r, it) in enumerate(zip(view["interactions"], its)):
        path = (r["origin"] if origins else "") + r["path"]
        status = r["status"]
        cls = outcome(status, r["end"])
        sclass = f"{status // 100}xx" if isinstance(status, int) else ""
        end = r["end"] + (f" ({r['end_detail']})" if r["end"] != "complete" and r["end_detail"] else "")
        rows.append(
            f'<tr class="it {cls}" data-i="{i}" data-path="{_e(path)}" data-outcome="{cls}" data-sclass="{sclass}" '
            f'tabindex="0" aria-expanded="false" aria-controls="d{i}">'
            f"<td class=num>{_e(r['n'])}</td><td>{_e(r['kind'])}</td><td>{_e(r['method'])}</td>"
            f"<td>{_e(path)}</td><td class='num status'>{_e(status if status is not None else '-')}</td>"
            f"<td class=num>{_e(r['events'])}</td><td class=num>{_e(r['bytes'])}</td>"
            f"<td class=num>{_e(fmt_ms(r['ttfb_ms']))}</td><td class=num>{_e(fmt_ms(r['duration_ms']))}</td>"
            f"<td class=end>{_e(end)}</td></tr>"
            f'<tr class="detail" id="d{i}" hidden><td colspan="10">{_detail(detail(it))}</td></tr>')
    options = "".join(f'<option value="{v}">{_e(label)}</option>' for v, label in _STATUS_FILTERS)
    legend = ('<p class="legend"><span><i class="sw" style="background:#f0b429"></i>time to headers / accept delay</span>'
              '<span><i class="sw" style="background:#1f6feb"></i>server chunk or frame</span>'
              '<span><i class="sw" style="background:#8250df"></i>client frame</span></p>')
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(view['file'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(view['file'])}</h1>"
        f"<p>schema {_e(view['schema_version'])} · recorded {_e(view['recorded_at'])} · upstream "
        f"{_e(view['upstream'])} · {view['count']} interaction(s)</p>"
        f'<p class="filters"><input id="filter-path" type="search" placeholder="filter by path" aria-label="filter by path">'
        f'<select id="filter-status" aria-label="filter by status">{options}</select><span id="shown"></span></p>'
        "<table id=interactions><tr><th>#</th><th>kind</th><th>method</th><th>path</th><th>status</th>"
        "<th>chunks/frames</th><th>bytes</th><th>ttfb/accept</th><th>duration</th><th>end</th></tr>"
        + "".join(rows) + "</table><h2>Timeline</h2>" + legend + _waterfall(its, starts, origins)
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )
