"""``proxy inspect`` on a terminal (rich), or as JSON: the list and one interaction."""

from __future__ import annotations

import json
import sys

from ..model import Kind
from ..store import Cassette
from .view import (body_text, data_view, detail, fmt_ms, listing, listing_head, listing_rows, printable,
                   response_body, show_origin)


def _console():
    from rich.console import Console

    # Not a terminal (a pipe, a file): wide enough that nothing is cut.
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False, markup=False, emoji=False)


def aligned(columns: list[tuple[str, bool]], rows: list[list[str]], styles=None, widths: list[int] | None = None,
            header: bool = True):
    """A table as one rich Text: header, rule, aligned rows; ``styles(row)`` may colour a row.

    rich's Table lays out every cell through its renderer (~0.8 ms a row: 8 s for
    10,000 interactions); here widths are computed once and the whole table is one
    Text, which prints 10,000 rows in well under a second. A table printed in blocks
    passes the same ``widths`` list to each block (it only grows) and a header once.
    """
    from rich.text import Text

    if widths is None:
        widths = [len(name) for name, _ in columns]
    for r in rows:
        for i, cell in enumerate(r):
            if len(cell) > widths[i]:
                widths[i] = len(cell)

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if right else c.ljust(w)
                         for c, w, (_, right) in zip(cells, widths, columns)).rstrip()

    text = Text()
    if header:
        text.append(line([name for name, _ in columns]) + "\n", style="bold")
        text.append("  ".join("-" * w for w in widths) + "\n", style="dim")
    for r in rows:
        text.append(line(r) + "\n", style=styles(r) if styles else "")
    return text


LIST_COLUMNS = [("#", True), ("kind", False), ("method", False), ("path", False), ("status", True),
                ("chunks/frames", True), ("bytes", True), ("ttfb/accept", True), ("duration", True), ("end", False)]


def _out(console, text: str = "", style: str = "") -> None:
    """Print recorded text: control characters escaped, nothing read as markup or emoji."""
    from rich.text import Text

    console.print(Text(printable(text, keep_newlines=True), style=style), soft_wrap=True)


FIRST_BLOCK, BLOCK = 100, 5000  # rows printed at once: the first page comes at once


def show_list(c: Cassette, as_json: bool) -> None:
    if as_json:
        print(json.dumps(listing(c), indent=1))
        return
    console = _console()
    head = listing_head(c, c.count())
    _out(console, f"{head['file']}  schema {head['schema_version']}  recorded {head['recorded_at']}  "
                  f"upstream {head['upstream']}  {head['count']} interaction(s)", "bold")
    widths = [len(name) for name, _ in LIST_COLUMNS]
    block: list[list[str]] = []
    first = True
    style = lambda r: "" if r[-1] == "complete" else "red"  # noqa: E731
    origins = show_origin(c)  # forward mode, or several hosts: the host is part of the request
    for r in listing_rows(c):
        path = (r["origin"] if origins else "") + r["path"]
        block.append([str(r["n"]), printable(r["kind"]), printable(r["method"]), printable(path), str(r["status"] or "-"),
                      str(r["events"]), str(r["bytes"]), fmt_ms(r["ttfb_ms"]), fmt_ms(r["duration_ms"]),
                      printable(r["end"] + (f" ({r['end_detail']})" if r["end"] != "complete" and r["end_detail"] else ""))])
        if len(block) >= (FIRST_BLOCK if first else BLOCK):
            console.print(aligned(LIST_COLUMNS, block, style, widths, header=first), soft_wrap=True, end="")
            block, first = [], False
    if block or first:
        console.print(aligned(LIST_COLUMNS, block, style, widths, header=first), soft_wrap=True, end="")


def show_one(c: Cassette, seq: int, as_json: bool) -> None:
    view = detail(c.get(seq))
    if as_json:
        print(json.dumps(view, indent=1))
        return
    console = _console()
    req, resp = view["request"], view["response"]
    status = f"{resp['status']} {resp['reason']}" if resp else "no response"
    end = view["end"] + (": " + view["end_detail"] if view["end_detail"] else "")
    where = (req["origin"] if show_origin(c) else "") + req["target"]  # as the table shows it
    _out(console, f"#{view['n']} {view['kind']} {req['method']} {where} -> {status}  ({end})", "bold")
    timing = "accept delay" if view["kind"] == "websocket" else "time to headers"
    _out(console, f"{timing} {fmt_ms(view['ttfb_ms'])}, duration {fmt_ms(view['duration_ms'])}")
    _out(console, "\nrequest headers", "bold")
    for k, v in req["headers"]:
        _out(console, printable(f"  {k}: {v}"))
    if req["body"]["size"]:
        enc = f" (sent as {req['body_encoding']})" if req["body_encoding"] else ""
        _out(console, f"\nrequest body{enc}", "bold")
        _out(console, body_text(req["body"]))
    if resp:
        _out(console, "\nresponse headers", "bold")
        for k, v in resp["headers"]:
            _out(console, printable(f"  {k}: {v}"))
    _out(console, "\ntimeline", "bold")
    cols = [("offset", True), ("dir", False), ("type", False), ("event", False), ("summary", False)]
    rows = [[fmt_ms(e["offset_ms"]), e["dir"], e["type"], printable(e["name"]), printable(e["summary"])]
            for e in view["timeline"]]
    console.print(aligned(cols, rows, lambda r: "magenta" if r[1] == "client" else ""), soft_wrap=True, end="")
    if view["close"]:
        cl = view["close"]
        code = cl["code"] if cl["code"] is not None else "none (abnormal end)"
        _out(console, f"close: code {code} {cl['reason']!r} by {cl['by'] or 'unknown'}")


def show_body(c: Cassette, seq: int) -> str | None:
    """Write interaction ``seq``'s response body, decoded from its content encoding: the
    bytes themselves into a pipe or file, text with control characters escaped (binary as
    a hex dump) on a terminal. Returns why there is no body to show, if there is none."""
    it = c.get(seq)
    if it.kind is Kind.WEBSOCKET:
        return f"interaction {seq} is a WebSocket session; its frames are in --json and --text"
    if it.response is None:
        return f"interaction {seq} has no response"
    body, enc, problem = response_body(it)
    if problem:  # written as stored: say so where it does not mix with the bytes
        print(printable(f"proxy: interaction {seq}'s body is not decoded from {enc}, written as stored ({problem})"),
              file=sys.stderr)
    if not sys.stdout.isatty():
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return None
    view = data_view(body)
    text = body_text(view)
    sys.stdout.write(printable(text, keep_newlines=True) + ("" if text.endswith("\n") else "\n"))
    return None
