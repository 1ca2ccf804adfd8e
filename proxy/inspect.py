"""proxy inspect: render a cassette for a person (rich tables) or a program (--json)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from .store import Cassette


def _ms(v) -> str:
    return "" if v is None else f"{v * 1000:.1f} ms"


def show_list(c: Cassette, as_json: bool) -> None:
    rows = c.summaries()
    if as_json:
        print(json.dumps({"file": str(c.path), "meta": c.meta, "interactions": rows}, indent=1))
        return
    console = Console()
    console.print(f"[bold]{c.path}[/bold]  schema {c.schema_version}  recorded {c.meta.get('created_at', '?')}"
                  f"  upstream {c.meta.get('upstream', '?')}  {len(rows)} interaction(s)")
    t = Table()
    for col in ("#", "kind", "method", "path", "status", "events", "bytes", "ttfb/accept", "duration", "end"):
        t.add_column(col, justify="right" if col in ("#", "events", "bytes", "status") else "left")
    for r in rows:
        t.add_row(str(r["seq"]), r["kind"], r["method"], r["path"] + ("?" + r["query"] if r["query"] else ""),
                  str(r["status"] or "-"), str(r["event_count"]), str(r["body_bytes"]), _ms(r["ttfb"]),
                  _ms(r["duration"]), r["end"])
    console.print(t)


def show_one(c: Cassette, seq: int, as_json: bool) -> None:
    it = c.get(seq)
    console = Console()
    console.print(f"#{it.seq} {it.kind.value} {it.request.method} {it.request.target} -> "
                  f"{it.response.status if it.response else '-'} ({it.end.value})")
