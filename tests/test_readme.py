"""What README.md shows a new user is true: its commands run as written and its samples
match the real output."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys

import httpx
import pytest

from .conftest import ROOT, proxy_proc, run_cli

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```\w*\n(.*?)```", text, re.S)


def test_mitmproxy_tool_examples_listen_on_loopback_only():
    commands = [c for block in code_blocks(README) for c in block.replace("\\\n", " ").splitlines()
                if c.startswith(("mitmweb ", "mitmdump "))]
    assert len(commands) == 2
    assert all("--listen-host 127.0.0.1" in c for c in commands), commands
    assert "refuses any other address without `--expose`" in README


def test_readme_does_not_promise_a_raw_byte_grep_of_the_cassette():
    # A grep of compressed columns checks nothing (STYLE.md); the policy is decoded content.
    assert "grep the cassette file" not in README


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_cassette_dir_example_runs_as_written(tmp_path):
    (block,) = code_blocks(section("Many cassettes on one port (for suites in other languages)"))
    serve, *curls = block.strip().splitlines()
    assert serve.startswith("proxy replay --cassette-dir cassettes ") and len(curls) == 2
    d = tmp_path / "cassettes"
    d.mkdir()
    for db in (ROOT / "cassettes").glob("*.db"):
        shutil.copy(db, d / db.name)
    args = shlex.split(serve)[1:]
    args[args.index("--listen") + 1] = "127.0.0.1:0"
    args[args.index("--cassette-dir") + 1] = str(d)
    with proxy_proc(*args) as p:
        for line in curls:
            cmd = shlex.split(line.replace("http://127.0.0.1:8080", p.url), comments=True)
            r = subprocess.run([*cmd, "-s", "-o", "/dev/null", "-w", "%{http_code}"], capture_output=True, text=True,
                               timeout=30)
            assert r.stdout == "200", (line, r.stdout, r.stderr)
        # each request uses up a recording: the first curl again is a miss, as README says
        again = httpx.get(p.url + "/c/example/v1/models")
        assert again.status_code == 404 and again.json()["error"]["code"] == "all_used"
        # a cassette that does not exist: a 404 listing the available names
        missing = httpx.get(p.url + "/c/nope/v1/models")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "no_such_cassette"
        assert "(available: example)" in missing.json()["error"]["message"]
        assert p.stop() == 0
    # the summary counts the cassette-level 404 with the misses
    assert "served 2 of 5 recording(s); 2 miss(es) (1 naming no usable cassette)" in p.out


def test_inspect_sample_matches_the_real_listing():
    (sample,) = [b for b in code_blocks(section("Inspect")) if b.startswith("cassettes/example.db ")]
    real = run_cli("inspect", "cassettes/example.db").stdout.splitlines()
    head, *rows = sample.strip().splitlines()
    # "…" stands for what changes from one build to the next (the schema number)
    assert re.fullmatch(".*".join(map(re.escape, head.split("…"))), real[0]), (head, real[0])
    for row in rows:
        if row == "...":
            continue
        # number, kind, method, path, status, chunks, bytes; not the timings
        assert row.split()[:7] in [r.split()[:7] for r in real], row


def test_demo_step_5_shows_what_its_heading_names():
    demo = subprocess.run([sys.executable, "-m", "proxy.testing.demo"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    heading, shown = demo.stdout.split("\n5. Look inside: ", 1)[1].split("\n", 1)
    assert re.fullmatch(r"proxy inspect \S+demo\.db 1", heading), heading
    assert shown.startswith("#1 http POST /v1/responses -> 200"), shown[:200]
