"""What the `proxy` CLI says about how it was called: one clear line, exit code 2, and
options that never silently do nothing."""

from __future__ import annotations

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
