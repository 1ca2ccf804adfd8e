"""What the `proxy` CLI says about how it was called: one clear line, exit code 2, and
options that never silently do nothing."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT, run_cli

EXAMPLE = str(ROOT / "cassettes" / "example.db")


def test_inspect_number_with_text_shows_that_interaction_and_with_html_is_an_error(tmp_path):
    one = run_cli("inspect", EXAMPLE, "3", "--text")
    assert one.returncode == 0, one.stderr
    everything = run_cli("inspect", EXAMPLE, "--text").stdout
    assert one.stdout.count("\n== #") == 1 and "\n== #3 http GET /v1/models -> 200" in one.stdout
    assert one.stdout.splitlines()[0] == everything.splitlines()[0]  # the same header line
    section = one.stdout.split("\n== #3 ", 1)[1]
    assert "\n== #3 " + section.rstrip("\n") in everything

    page = tmp_path / "y.html"
    html = run_cli("inspect", EXAMPLE, "1", "--html", str(page))
    assert html.returncode == 2 and not page.exists()
    assert html.stderr.count("\n") == 1 and "--html" in html.stderr and "NUMBER" in html.stderr

    missing = run_cli("inspect", EXAMPLE, "9", "--text")
    assert missing.returncode == 2 and "no interaction 9" in missing.stderr


def test_a_bad_listen_address_names_the_option():
    for command in ("replay", "serve", "record"):
        p = run_cli(command, "--cassette", EXAMPLE, "--listen", "8080")
        assert p.returncode == 2
        assert "Invalid value for '--listen': expected HOST:PORT, got '8080'" in p.stderr, (command, p.stderr)


def test_no_redact_help_says_what_it_does_on_replay():
    replay_help = " ".join(run_cli("replay", "--help").stdout.split())
    assert "Store secrets" not in replay_help  # replay stores nothing
    assert "--no-redact Match incoming requests unredacted." in replay_help
    assert "redacted as the recorder redacted the cassette" in replay_help
    assert "Store secrets as they are" in " ".join(run_cli("record", "--help").stdout.split())


def _cli_without(module: str, *args: str):
    # `import MODULE` raises ImportError in this process, as when it is not installed
    # (MODULE may name several, comma-separated).
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in module.split(","))
    code = f"import sys; {blocked}\nfrom proxy.cli import main; sys.argv = sys.argv[1:]; main()"
    return subprocess.run([sys.executable, "-c", code, "proxy", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_only_a_missing_mitmproxy_is_reported_as_needing_mitmproxy(tmp_path, upstream):
    # uvicorn imports its h11 protocol when the replay server starts (httptools missing
    # too: with it the server would use httptools and need no h11)
    broken = _cli_without("httptools,h11", "replay", "--cassette", EXAMPLE, "--listen", "127.0.0.1:0")
    assert broken.returncode != 0
    assert "mitmproxy" not in broken.stderr and "h11" in broken.stderr
    # serve in a record mode does need it, and says so
    needs = _cli_without("mitmproxy", "serve", "--cassette", str(tmp_path / "new.db"), "--record-mode", "once",
                         "--upstream", upstream.url, "--listen", "127.0.0.1:0")
    assert needs.returncode == 2 and "recording needs mitmproxy: pip install -e '.[record]'" in needs.stderr


def test_only_a_replay_only_process_freezes_indexes(tmp_path, monkeypatch):
    """gc.freeze() pins the cyclic garbage of the moment with the indexes: a process that
    also records (mitmproxy's flows hold cycles) must not freeze; `proxy replay` does."""
    import socket

    import click
    import pytest

    from proxy import cli
    from proxy.replay import engine as replay_engine
    from proxy.serve import RecordMode, ServeConfig
    from proxy.store import Cassette

    cassette = tmp_path / "c.db"
    Cassette.create(cassette).close()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    monkeypatch.setattr(replay_engine, "FREEZE_INDEXES", False)
    try:
        for mode, freezes in (("new_episodes", False), ("none", True)):
            config = ServeConfig(cassette=cassette, mode=RecordMode.parse(mode), upstream="http://127.0.0.1:9", port=port)
            with pytest.raises(click.ClickException):  # the port is taken: the flag is set by then
                cli._run_session(config, lambda s: "")
            assert replay_engine.FREEZE_INDEXES is freezes, mode
    finally:
        taken.close()
