"""proxy inspect: table, detail, --json, --text as a git textconv driver, --html in real Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys

import pytest

from proxy.model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.store import SCHEMA_VERSION, Cassette

from .browser import Browser
from .conftest import run_cli

SSE = [
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"r1","status":"in_progress"}}\n\n',
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","del',
    b'ta":"Hel"}\n\nevent: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"lo"}\n\n',
    b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r1","status":"completed"}}\n\n',
]


def make(path, extra: bool = False):
    with Cassette.create(path, upstream="http://sim.test") as c:
        c.append(Interaction(
            Kind.HTTP,
            Request("POST", "/v1/responses", "", [("authorization", "REDACTED"), ("content-type", "application/json")],
                    b'{"model":"sim-1","input":"hi","stream":true}', "zstd"),
            Response(200, "OK", [("content-type", "text/event-stream")]),
            [Chunk(0.010 + 0.02 * i, d) for i, d in enumerate(SSE)], ttfb=0.008, duration=0.09, end=End.COMPLETE,
            started_at=1000.0))
        c.append(Interaction(
            Kind.WEBSOCKET, Request("GET", "/v1/responses", "", [("upgrade", "websocket")]),
            Response(101, "Switching Protocols", [("x-codex-turn-state", "ts_1")]),
            frames=[Frame(Direction.CLIENT, True, 0.31, b'{"type":"response.create","input":"x"}'),
                    Frame(Direction.SERVER, True, 0.33, b'{"type":"response.output_text.delta","delta":"yo"}'),
                    Frame(Direction.SERVER, False, 0.35, b"\x00\x01\x02")],
            ttfb=0.300, duration=0.4, end=End.COMPLETE, close=Close(1000, "bye", Direction.CLIENT), started_at=1000.2))
        c.append(Interaction(Kind.HTTP, Request("GET", "/v1/models"), Response(200, "OK", []), [Chunk(0.01, b"{}")],
                             ttfb=0.005, duration=0.02, end=End.UPSTREAM_CUT, end_detail="upstream cut after 2 bytes",
                             started_at=1000.7))
        if extra:
            c.append(Interaction(Kind.HTTP, Request("GET", "/v1/extra"), Response(404, "Not Found", []), [],
                                 ttfb=0.001, duration=0.001, end=End.COMPLETE, started_at=1001.0))
    return path


def test_list_table(tmp_path):
    r = run_cli("inspect", str(make(tmp_path / "a.db")))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"schema {SCHEMA_VERSION}" in lines[0] and "http://sim.test" in lines[0] and "3 interaction(s)" in lines[0]
    assert lines[1].split()[:4] == ["#", "kind", "method", "path"]
    row1, row2, row3 = lines[3].split(), lines[4].split(), lines[5].split()
    assert row1[:6] == ["1", "http", "POST", "/v1/responses", "200", "4"] and "8.0" in row1
    assert row2[:6] == ["2", "websocket", "GET", "/v1/responses", "101", "3"] and "300.0" in row2
    assert row3[-1] == "bytes)" and "upstream_cut" in lines[5]


def test_detail_http_sse_timeline(tmp_path):
    r = run_cli("inspect", str(make(tmp_path / "a.db")), "1")
    out = r.stdout
    assert "authorization: REDACTED" in out
    assert '"model": "sim-1"' in out and "sent as zstd" in out  # pretty JSON body, original encoding noted
    timeline = out.split("timeline", 1)[1].splitlines()[3:]
    assert [ln.split()[4] for ln in timeline] == ["response.created", "(partial", "response.output_text.delta",
                                                  "response.output_text.delta", "response.completed"]
    assert "'Hel'" in timeline[2] and timeline[2].split()[0] == "50.0"  # the split event, where it completed


def test_detail_websocket_frames_and_close(tmp_path):
    out = run_cli("inspect", str(make(tmp_path / "a.db")), "2").stdout
    assert "accept delay 300.0 ms" in out
    assert "x-codex-turn-state: ts_1" in out
    frames = [ln.split() for ln in out.splitlines() if ln.strip().endswith(("'yo'", "3 bytes")) or "response.create" in ln]
    assert frames[-3][:4] == ["310.0", "ms", "client", "text"]
    assert frames[-2][:5] == ["330.0", "ms", "server", "text", "response.output_text.delta"]
    assert frames[-1][:4] == ["350.0", "ms", "server", "binary"]
    assert "close: code 1000 'bye' by client" in out


def test_json_is_stable_and_complete(tmp_path):
    path = make(tmp_path / "a.db")
    a = run_cli("inspect", str(path), "--json").stdout
    assert a == run_cli("inspect", str(path), "--json").stdout
    view = json.loads(a)
    assert view["count"] == 3 and view["schema_version"] == SCHEMA_VERSION
    assert [i["kind"] for i in view["interactions"]] == ["http", "websocket", "http"]
    one = json.loads(run_cli("inspect", str(path), "2", "--json").stdout)
    assert one["accept_delay_ms"] == 300.0 and one["close"] == {"code": 1000, "reason": "bye", "by": "client"}
    assert [e["dir"] for e in one["timeline"]] == ["client", "server", "server"]
    assert json.loads(run_cli("inspect", str(path), "1", "--json").stdout)["request"]["body"]["json"]["input"] == "hi"


def textconv_diff(tmp_path, before, after) -> str:
    """`git diff` of a cassette written by ``before(path)`` and then by ``after(path)``, through
    `proxy inspect --text` registered as the textconv driver (as README says)."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp_path), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")

    def g(*args):
        return subprocess.run([git, *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout

    g("init", "-q")
    (repo / ".gitattributes").write_text("*.db diff=proxy-cassette\n")
    g("config", "diff.proxy-cassette.textconv", f"{sys.executable} -m proxy.cli inspect --text")
    before(repo / "c.db")
    g("add", ".")
    g("commit", "-qm", "one")
    (repo / "c.db").unlink()
    after(repo / "c.db")
    return g("diff")


def test_text_dump_works_as_git_textconv(tmp_path):
    diff = textconv_diff(tmp_path, make, lambda p: make(p, extra=True))
    assert "Binary files" not in diff
    added = [ln for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert any("== #4 http GET /v1/extra -> 404" in ln for ln in added), diff
    assert "4 interaction(s)" in diff
    # unchanged interactions do not show up as changed
    assert not any("#1 http POST" in ln for ln in added)


def _small(request_body: bytes, chunk: bytes):
    def write(path):
        with Cassette.create(path, upstream="http://sim.test") as c:
            c.append(Interaction(Kind.HTTP, Request("POST", "/v1/x", "", [("content-type", "application/json")],
                                                    request_body),
                                 Response(200, "OK", [("content-type", "text/plain")]), [Chunk(0.01, chunk)],
                                 ttfb=0.001, duration=0.002, end=End.COMPLETE, started_at=1000.0))
    return write


@pytest.mark.parametrize("before, after", [
    ((b'{"a":1, "b":2}', b"ok\n"), (b'{"a":1 ,"b":2}', b"ok\n")),  # JSON spacing moved, same size
    ((b'{"a": 1.0}', b"ok\n"), (b'{"a":1.00}', b"ok\n")),  # the same number, spelled otherwise
    ((b'{"a":1}', b"ok \n"), (b'{"a":1}', b"ok\t\n")),  # trailing white space, same size
], ids=["json-spacing", "json-number", "trailing-space"])
def test_text_dump_shows_any_changed_byte(tmp_path, before, after):
    """README: with the textconv driver ``git diff`` shows any change. Same-size changes
    that a pretty-printed JSON body or stripped line ends would hide show up as lines."""
    diff = textconv_diff(tmp_path, _small(*before), _small(*after))
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert changed, diff


def test_html_page_in_headless_chromium(tmp_path):
    """The page as a person uses it: a screenshot, a click that expands a row (headers,
    body, events with offsets), a typed path filter, the status filter, outcome colours."""
    from PIL import Image

    page = tmp_path / "c.html"
    r = run_cli("inspect", str(make(tmp_path / "a.db")), "--html", str(page))
    assert r.returncode == 0 and "wrote" in r.stdout
    b = Browser(tmp_path / "profile", 1280, 600)
    try:
        b.open(page.as_uri())
        assert b.eval("document.querySelectorAll('tr.it').length") == 3
        assert b.eval("[...document.querySelectorAll('tr.it')].map(t => t.className)") == ["it ok", "it ok", "it cut"]
        assert b.eval("document.querySelectorAll('.tick.server').length") == 7
        assert b.eval("document.querySelectorAll('.tick.client').length") == 1
        assert b.eval("document.querySelectorAll('rect.wait').length") == 3  # time to headers / accept delay, every row
        shot = tmp_path / "shot.png"
        b.screenshot(shot)
        img = Image.open(shot).convert("RGB")
        assert img.size == (1280, 600)
        colors = img.getcolors(1280 * 600)

        def count(pred):
            return sum(n for n, rgb in colors if pred(*rgb))

        assert count(lambda r_, g_, b_: r_ > 220 and 160 < g_ < 195 and b_ < 70) > 500, "no accept-delay bar"
        assert count(lambda r_, g_, b_: 110 < r_ < 150 and g_ < 110 and b_ > 200) > 40, "no client frame tick"
        assert count(lambda r_, g_, b_: r_ < 60 and 150 < g_ < 190 and 100 < b_ < 140) > 60, "no green (complete) rows"
        assert count(lambda r_, g_, b_: r_ > 220 and 130 < g_ < 160 and b_ < 60) > 60, "no orange (cut) row"

        assert b.eval("document.getElementById('d0').hidden") is True
        b.click("tr.it[data-i='0']")
        assert b.eval("document.getElementById('d0').hidden") is False
        text = b.eval("document.getElementById('d0').innerText")
        assert "authorization" in text and "REDACTED" in text and '"input": "hi"' in text  # headers and body
        assert "50.0 ms" in text and "response.output_text.delta" in text and "'Hel'" in text  # events with offsets
        b.click("tr.it[data-i='1']")  # the WebSocket session: frames, the binary one by size
        ws = b.eval("document.getElementById('d1').innerText")
        assert "accept delay 300.0 ms" in ws and "3 bytes" in ws and "close: code 1000 'bye' by client" in ws
        b.click("tr.it[data-i='0']")
        assert b.eval("document.getElementById('d0').hidden") is True

        b.type("#filter-path", "models")
        assert b.eval("[...document.querySelectorAll('tr.it')].filter(t => !t.hidden).map(t => t.dataset.i)") == ["2"]
        assert b.eval("document.getElementById('shown').textContent") == "1 of 3 shown"
        assert b.eval("document.getElementById('w0').style.display") == "none"  # its waterfall row too
        b.eval("var p = document.getElementById('filter-path'); p.value = ''; p.dispatchEvent(new Event('input'))")
        b.eval("var s = document.getElementById('filter-status'); s.value = 'cut'; s.dispatchEvent(new Event('change'))")
        assert b.eval("[...document.querySelectorAll('tr.it')].filter(t => !t.hidden).map(t => t.dataset.i)") == ["2"]
        b.eval("var s = document.getElementById('filter-status'); s.value = '2xx'; s.dispatchEvent(new Event('change'))")
        assert b.eval("document.getElementById('shown').textContent") == "2 of 3 shown"
    finally:
        b.close()
    html = page.read_text()
    assert "<script src" not in html and "<link" not in html and "http-equiv=\"Content-Security-Policy\"" in html


def test_conflicting_output_flags(tmp_path):
    r = run_cli("inspect", str(make(tmp_path / "a.db")), "--json", "--text")
    assert r.returncode == 2 and "choose one" in r.stderr


# -- hostile content: markup, script, control characters, text in numeric columns --------

XSS = '<script>window.__pwned="script"</script><img src=x onerror="window.__pwned=\'img\'">'


def crafted(path, numbers_as_text: bool = False):
    """Every string a cassette holds carries markup, script or terminal escapes; with
    ``numbers_as_text`` the numeric columns of the first row hold text too, as a hand-made
    file can."""
    with Cassette.create(path, upstream='"><svg onload="window.__pwned=\'meta\'">') as c:
        c.append(Interaction(
            Kind.HTTP,
            Request("POST", "/echo/[/bold][/]x" + XSS, "q=" + XSS,
                    [("x-h" + XSS, XSS + "\x1b]0;title\x07"), ("content-type", "application/json")],
                    json.dumps({"text": XSS, "esc": "\x1b[31mred\x1b[0m"}).encode()),
            Response(500, XSS, [("content-type", "text/html"), ("x-r", "\x1b[2J")]),
            [Chunk(0.01, XSS.encode() + b"\x1b[31m\x07 plain"), Chunk(0.02, b"\xff\xfe" + XSS.encode())],
            ttfb=0.005, duration=0.03, end=End.UPSTREAM_CUT, end_detail=XSS, started_at=1000.0))
        c.append(Interaction(
            Kind.WEBSOCKET, Request("GET", "/ws/[red]" + XSS), Response(101, "Switching Protocols", []),
            frames=[Frame(Direction.CLIENT, True, 0.01, json.dumps({"type": XSS, "delta": XSS}).encode()),
                    Frame(Direction.SERVER, True, 0.02, XSS.encode() + b"\x1b[5m"),
                    Frame(Direction.SERVER, False, 0.03, XSS.encode())],
            ttfb=0.001, duration=0.04, end=End.COMPLETE, close=Close(1000, XSS, Direction.SERVER), started_at=1000.1))
    if numbers_as_text:
        import sqlite3

        conn = sqlite3.connect(path)
        with conn:
            conn.execute("UPDATE interactions SET status=?, ttfb=?, duration=?, event_count=?, body_bytes=? WHERE seq=1",
                         (XSS, "<b>slow</b>", XSS, "<i>many</i>", XSS))
        conn.close()
    return path


def test_crafted_cassette_runs_no_script_in_the_page(tmp_path):
    path = crafted(tmp_path / "evil.db")
    page = tmp_path / "evil.html"
    r = run_cli("inspect", str(path), "--html", str(page))
    assert r.returncode == 0, r.stderr
    b = Browser(tmp_path / "profile")
    try:
        b.open(page.as_uri())
        b.click("tr.it[data-i='0']")
        b.click("tr.it[data-i='1']")
        b.type("#filter-path", "echo")
        assert b.eval("typeof window.__pwned") == "undefined"
        assert b.eval("document.querySelectorAll('script').length") == 1  # the page's own
        assert b.eval("document.querySelectorAll('img, svg [onload], [onerror]').length") == 0
        # The markup is shown as text where it was recorded.
        assert b.eval("document.querySelector('tr.it td:nth-child(4)').textContent").startswith("/echo/[/bold][/]x<script>")
        assert XSS in b.eval("document.getElementById('d0').innerText")
        assert b.eval("document.getElementById('shown').textContent") == "1 of 2 shown"
    finally:
        b.close()
    # Text in numeric columns never reaches a page: the store refuses the file, in one line.
    evil = crafted(tmp_path / "numbers.db", numbers_as_text=True)
    for args in (("--html", str(tmp_path / "numbers.html")), (), ("1",), ("--text",)):
        r = run_cli("inspect", str(evil), *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "damaged row" in r.stderr, (args, r.stderr)
    assert not (tmp_path / "numbers.html").exists()


def test_terminal_output_escapes_control_characters_and_markup(tmp_path):
    path = crafted(tmp_path / "evil.db")
    out = {}
    for args in ((str(path),), (str(path), "1"), (str(path), "2"), ("--text", str(path))):
        r = run_cli("inspect", *args)
        assert r.returncode == 0, (args, r.stderr)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "Traceback" not in r.stderr, args
        out[args[-1] if args[0] != "--text" else "text"] = r.stdout
    assert "/echo/[/bold][/]x<script>" in out["1"]  # rich markup in a path is text, not markup
    assert "\\e]0;title\\x07" in out["1"] and "\\u001b[31mred" in out["1"]  # JSON escapes its own
    assert "/ws/[red]<script>" in out["2"] and "\\e[5m" in out["text"]


def test_the_list_escapes_a_crafted_method(tmp_path):
    """The method is text from the file like the path: a terminal escape in it (set the
    window title, clear the screen) is shown escaped in the table too."""
    path = tmp_path / "method.db"
    with Cassette.create(path, upstream="http://sim.test") as c:
        c.append(Interaction(Kind.HTTP, Request("GE\x1b]0;pwned\x07T\x1b[2J", "/v1/x"), Response(200, "OK", []),
                             [Chunk(0.01, b"{}")], ttfb=0.0, duration=0.0, end=End.COMPLETE, started_at=1000.0))
    for args in ((str(path),), (str(path), "1"), ("--text", str(path))):
        r = run_cli("inspect", *args)
        assert r.returncode == 0, (args, r.stderr)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout, args
        assert "GE\\e]0;pwned\\x07T\\e[2J" in r.stdout, args


def test_body_that_does_not_decode_says_so(tmp_path):
    """A body whose Content-Encoding does not hold (a truncated gzip, a header that lies)
    is written as stored, and stderr says it is not decoded: never passed off as decoded."""
    import gzip

    path = tmp_path / "bad.db"
    stored = gzip.compress(b'{"answer": 42}' * 50)[:40]  # cut short
    with Cassette.create(path, upstream="http://sim.test") as c:
        c.append(Interaction(Kind.HTTP, Request("GET", "/v1/x"),
                             Response(200, "OK", [("content-type", "application/json"), ("content-encoding", "gzip")]),
                             [Chunk(0.01, stored)], ttfb=0.01, duration=0.02, end=End.UPSTREAM_CUT, started_at=1000.0))
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "inspect", str(path), "1", "--body"], capture_output=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout == stored
    assert b"not decoded" in r.stderr and b"gzip" in r.stderr, r.stderr


def test_body_prints_decoded_bytes_and_escapes_them_on_a_terminal(tmp_path):
    import gzip
    import pty

    path = tmp_path / "b.db"
    body = b'{"answer": "\x1b[31mred\x1b[0m and more"}'
    packed = gzip.compress(body)
    with Cassette.create(path, upstream="http://sim.test") as c:
        c.append(Interaction(Kind.HTTP, Request("GET", "/v1/x"),
                             Response(200, "OK", [("content-type", "application/json"), ("content-encoding", "gzip")]),
                             [Chunk(0.01, packed[:10]), Chunk(0.02, packed[10:])], ttfb=0.01, duration=0.02,
                             end=End.COMPLETE, started_at=1000.0))
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "inspect", str(path), "1", "--body"], capture_output=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout == body  # a pipe gets the bytes, decoded from gzip
    main, child = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "proxy.cli", "inspect", str(path), "1", "--body"], stdout=child,
                         stderr=subprocess.PIPE)
    os.close(child)
    out = b""
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    p.wait(30)
    os.close(main)
    assert b"\x1b" not in out and b"\\e[31mred\\e[0m and more" in out
    view = json.loads(run_cli("inspect", str(path), "1", "--json").stdout)
    assert view["response"]["body"] == {"size": len(body), "text": body.decode()}  # raw ESC: not JSON, so text
    assert view["response"]["body_encoding"] == "gzip" and [ch["bytes"] for ch in view["response"]["chunks"]] == [10, len(packed) - 10]
    assert "".join(ch["data"]["text"] for ch in view["response"]["chunks"]) == body.decode()
    r = run_cli("inspect", str(make(tmp_path / "a.db")), "2", "--body")
    assert r.returncode == 2 and "WebSocket session" in r.stderr


def test_json_and_text_carry_every_byte_so_git_diff_shows_any_change(tmp_path):
    """A change after the 70th character of a chunk, or deep inside a frame, is a changed
    line in `git diff` through the textconv driver; JSON holds the same data in full."""
    long_delta = "x" * 300

    def cassette(path, marker: str):
        with Cassette.create(path, upstream="http://sim.test") as c:
            sse = (f'event: response.output_text.delta\ndata: {{"type":"response.output_text.delta",'
                   f'"delta":"{long_delta}{marker}"}}\n\n').encode()
            c.append(Interaction(Kind.HTTP, Request("POST", "/v1/responses", "", [], b'{"input":"hi"}'),
                                 Response(200, "OK", [("content-type", "text/event-stream")]), [Chunk(0.01, sse)],
                                 ttfb=0.005, duration=0.02, end=End.COMPLETE, started_at=1000.0))
            c.append(Interaction(Kind.WEBSOCKET, Request("GET", "/v1/realtime"), Response(101, "Switching Protocols", []),
                                 frames=[Frame(Direction.SERVER, True, 0.01, (long_delta + marker).encode()),
                                         Frame(Direction.SERVER, False, 0.02, bytes(range(40)) + marker.encode())],
                                 ttfb=0.001, duration=0.03, end=End.COMPLETE, started_at=1000.1))
        return path

    one = json.loads(run_cli("inspect", str(cassette(tmp_path / "j.db", "A")), "1", "--json").stdout)
    assert one["response"]["chunks"][0]["data"]["text"].endswith(long_delta + 'A"}\n\n')
    two = json.loads(run_cli("inspect", str(tmp_path / "j.db"), "2", "--json").stdout)
    assert two["frames"][0]["data"] == {"size": 301, "text": long_delta + "A"}
    assert two["frames"][1]["data"] == {"size": 41, "base64": base64.b64encode(bytes(range(40)) + b"A").decode()}

    diff = textconv_diff(tmp_path, lambda p: cassette(p, "A"), lambda p: cassette(p, "B"))
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert any(ln.startswith("-") and 'xA"}' in ln for ln in changed), changed  # the chunk, past character 300
    assert any(ln.startswith("+") and 'xB"}' in ln for ln in changed), changed
    assert any(ln.startswith("+") and ln.endswith("xB") for ln in changed)  # the text frame
    assert any(ln.startswith("+") and ln.endswith("&'B|") for ln in changed), changed  # the binary frame, hex dump
    assert len(changed) == 6, changed


def _sse(*events: tuple[str | None, dict], sep: str = "\n") -> bytes:
    out = ""
    for name, doc in events:
        out += (f"event: {name}{sep}" if name else "") + f"data: {json.dumps(doc)}{sep}{sep}"
    return out.encode()


def test_summaries_understand_anthropic_gemini_bedrock_and_audio(tmp_path):
    from proxy import eventstream

    audio = base64.b64encode(bytes(3200)).decode()
    anthropic = _sse(
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x"}}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "name": "get_weather"}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"city\""}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    gemini = _sse((None, {"candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}}]}),
                  (None, {"candidates": [{"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP"}]}), sep="\r\n")
    inner = base64.b64encode(json.dumps({"type": "content_block_delta", "delta": {"type": "text_delta",
                                                                                   "text": "wrapped"}}).encode()).decode()
    bedrock = (eventstream.encode({":event-type": "contentBlockDelta", ":message-type": "event"},
                                  json.dumps({"delta": {"text": "Bed"}, "contentBlockIndex": 0}).encode())
               + eventstream.encode({":event-type": "chunk", ":message-type": "event"},
                                    json.dumps({"bytes": inner}).encode())
               + eventstream.encode({":event-type": "messageStop", ":message-type": "event"},
                                    json.dumps({"stopReason": "end_turn"}).encode()))
    with Cassette.create(tmp_path / "s.db", upstream="http://sim.test") as c:
        for body, ctype in ((anthropic, "text/event-stream"), (gemini, "text/event-stream"),
                            (bedrock, "application/vnd.amazon.eventstream")):
            cut = len(body) // 3  # every stream split mid-event
            c.append(Interaction(Kind.HTTP, Request("POST", "/v1/x"), Response(200, "OK", [("content-type", ctype)]),
                                 [Chunk(0.01, body[:cut]), Chunk(0.02, body[cut:])], ttfb=0.005, duration=0.03,
                                 end=End.COMPLETE, started_at=1000.0))
        c.append(Interaction(Kind.WEBSOCKET, Request("GET", "/ws/google.ai.generativelanguage.v1beta.GenerativeService"
                                                     ".BidiGenerateContent"), Response(101, "Switching Protocols", []),
                             frames=[Frame(Direction.CLIENT, True, 0.01, json.dumps({"setup": {"model": "gemini-live"}}).encode()),
                                     Frame(Direction.SERVER, True, 0.02, b'{"setupComplete": {}}'),
                                     Frame(Direction.CLIENT, True, 0.03, json.dumps({"realtimeInput": {"audio": {
                                         "mimeType": "audio/pcm;rate=16000", "data": audio}}}).encode()),
                                     Frame(Direction.SERVER, True, 0.04, json.dumps({"serverContent": {"modelTurn": {
                                         "parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio}}]}}}).encode()),
                                     Frame(Direction.SERVER, True, 0.05, b'{"serverContent": {"turnComplete": true}}'),
                                     Frame(Direction.SERVER, True, 0.06, json.dumps({"type": "response.output_audio.delta",
                                                                                     "delta": audio}).encode()),
                                     Frame(Direction.SERVER, False, 0.07, bytes(640))],
                             ttfb=0.001, duration=0.08, end=End.COMPLETE, started_at=1000.1))

    def summaries(n):
        view = json.loads(run_cli("inspect", str(tmp_path / "s.db"), str(n), "--json").stdout)
        return [(e["name"], e["summary"]) for e in view["timeline"] if e["type"] != "chunk"]

    assert summaries(1) == [("message_start", "message msg_1 claude-x"), ("content_block_start", "block 1 tool_use get_weather"),
                            ("ping", ""), ("content_block_delta", "'Hi'"), ("content_block_delta", "'{\"city\"'"),
                            ("message_delta", "stop_reason=end_turn"), ("error", "overloaded_error: Overloaded")]
    assert summaries(2) == [("candidates", "'Hello'"), ("candidates", "'!' finishReason=STOP")]
    assert summaries(3) == [("contentBlockDelta", "'Bed'"), ("content_block_delta", "'wrapped'"),
                            ("messageStop", "stopReason=end_turn")]
    assert summaries(4) == [("setup", "gemini-live"), ("setupComplete", "{}"),
                            ("realtimeInput", "audio/pcm;rate=16000 3200 bytes"),
                            ("serverContent", "audio/pcm;rate=24000 3200 bytes"), ("serverContent", "turnComplete"),
                            ("response.output_audio.delta", "audio 3200 bytes"), ("binary", "640 bytes")]


def make_forward(path):
    """A forward-mode cassette: the same request to two hosts, with no Host header (HTTP/2)."""
    with Cassette.create(path, upstream="(forward proxy)", mode="forward") as c:
        for host in ("api.test.local", "tools.test.local"):
            c.append(Interaction(Kind.HTTP, Request("GET", "/v1/models", "", [("accept", "*/*")], scheme="https",
                                                    host=host, port=443),
                                 Response(200, "OK", []), [Chunk(0.01, b"{}")], ttfb=0.005, duration=0.02,
                                 end=End.COMPLETE, started_at=1000.0))
    return path


def test_the_origin_shows_in_every_view(tmp_path):
    """Forward replay matches on scheme, host and port: every view shows them, the table
    and the page within the path (a forward-mode cassette)."""
    path = make_forward(tmp_path / "f.db")
    table = run_cli("inspect", str(path)).stdout.splitlines()
    assert table[3].split()[:4] == ["1", "http", "GET", "https://api.test.local/v1/models"]
    assert table[4].split()[3] == "https://tools.test.local/v1/models"
    assert "GET https://tools.test.local/v1/models -> 200" in run_cli("inspect", str(path), "2").stdout
    rows = json.loads(run_cli("inspect", str(path), "--json").stdout)["interactions"]
    assert [r["origin"] for r in rows] == ["https://api.test.local", "https://tools.test.local"]
    one = json.loads(run_cli("inspect", str(path), "2", "--json").stdout)["request"]
    assert (one["origin"], one["scheme"], one["host"], one["port"]) == (
        "https://tools.test.local", "https", "tools.test.local", 443)
    assert "  origin https://tools.test.local, port 443" in run_cli("inspect", "--text", str(path)).stdout.splitlines()
    page = tmp_path / "f.html"
    run_cli("inspect", str(path), "--html", str(page))
    assert "<td>https://tools.test.local/v1/models</td>" in page.read_text()
    # A base-URL cassette with one host keeps its table as it was: the path alone.
    assert run_cli("inspect", str(make(tmp_path / "a.db"))).stdout.splitlines()[3].split()[3] == "/v1/responses"


@pytest.mark.parametrize("column, value", [("host", "evil.test.local"), ("scheme", "http"), ("port", 8443)])
def test_text_dump_shows_a_changed_origin(tmp_path, column, value):
    """README's promise, for the one thing a forward-mode HTTP/2 request holds nowhere else."""
    import sqlite3

    a = make_forward(tmp_path / "a.db")
    b = tmp_path / "b.db"
    shutil.copy(a, b)
    with sqlite3.connect(b) as conn:
        conn.execute(f"UPDATE interactions SET {column} = ? WHERE seq = 1", (value,))
    conn.close()
    before, after = (run_cli("inspect", "--text", str(p)).stdout.splitlines() for p in (a, b))
    assert [ln for ln in after if ln not in before]
    assert run_cli("inspect", str(a), "1", "--json").stdout != run_cli("inspect", str(b), "1", "--json").stdout
