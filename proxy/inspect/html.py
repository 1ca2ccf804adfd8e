"""``proxy inspect --html``: a self-contained page with the list and a waterfall timeline."""

from __future__ import annotations

import html
import math

from ..model import Direction, Kind
from ..store import Cassette
from .view import fmt_ms, listing


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
            f"<td class=num>{r['bytes']}</td><td class=num>{fmt_ms(r['ttfb_ms'])}</td>"
            f"<td class=num>{fmt_ms(r['duration_ms'])}</td><td class={cls}>{r['end']}</td></tr>")
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
