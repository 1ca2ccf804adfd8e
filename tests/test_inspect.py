"""proxy inspect: table, detail, --json, --text as a git textconv driver, --html in real Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from proxy.model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.store import SCHEMA_VERSION, Cassette

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


def test_text_dump_works_as_git_textconv(tmp_path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp_path), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")

    def g(*args):
        return subprocess.run([git, *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout

    import sys

    g("init", "-q")
    (repo / ".gitattributes").write_text("*.db diff=proxy-cassette\n")
    g("config", "diff.proxy-cassette.textconv", f"{sys.executable} -m proxy.cli inspect --text")
    make(repo / "c.db")
    g("add", ".")
    g("commit", "-qm", "one")
    (repo / "c.db").unlink()
    make(repo / "c.db", extra=True)
    diff = g("diff")
    assert "Binary files" not in diff
    added = [ln for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert any("== #4 http GET /v1/extra -> 404" in ln for ln in added), diff
    assert "4 interaction(s)" in diff
    # unchanged interactions do not show up as changed
    assert not any("#1 http POST" in ln for ln in added)


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_page_in_headless_chromium(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must have chromium (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium chromium-driver)")
    from PIL import Image

    page = tmp_path / "c.html"
    r = run_cli("inspect", str(make(tmp_path / "a.db")), "--html", str(page))
    assert r.returncode == 0 and "wrote" in r.stdout
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60).stdout
    assert dom.count("<tr>") == 4  # header + 3 interactions, as the browser parsed them
    assert dom.count('class="tick server"') == 7 and dom.count('class="tick client"') == 1
    assert dom.count('class="wait"') == 3  # time to headers / accept delay on every row
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, "--window-size=1280,600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=60)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 600)
    colors = img.getcolors(1280 * 600)
    amber = sum(n for n, (r_, g_, b_) in colors if r_ > 220 and 160 < g_ < 195 and b_ < 70)
    purple = sum(n for n, (r_, g_, b_) in colors if 110 < r_ < 150 and g_ < 110 and b_ > 200)
    assert amber > 500, "the accept-delay bar is not drawn"
    assert purple > 40, "the client frame tick is not drawn"


def test_conflicting_output_flags(tmp_path):
    r = run_cli("inspect", str(make(tmp_path / "a.db")), "--json", "--text")
    assert r.returncode == 2 and "choose one" in r.stderr
