"""Ctrl-C (SIGINT) while traffic is open: `proxy replay` and `proxy record` cut what is
open, say so in their one summary line, exit 0 and print no traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .conftest import ROOT


SIGNAL_AFTER_BANNER = textwrap.dedent("""
    import os, signal, sys
    import proxy.cli as cli

    say = cli._say

    def say_then_interrupt(line):
        # A client (or a test) may send SIGINT as soon as it reads the address.
        say(line)
        os.kill(os.getpid(), signal.SIGINT)

    cli._say = say_then_interrupt
    sys.argv = ["proxy", *sys.argv[1:]]
    cli.main()
""")


@pytest.mark.parametrize("command", ["replay", "record"])
def test_sigint_right_after_the_address_is_printed_still_stops_cleanly(command, upstream, tmp_path):
    if command == "replay":
        args = ["replay", "--cassette", str(ROOT / "cassettes" / "example.db")]
        summary = "served 0 of 5 recording(s); 0 miss(es)"
    else:
        args = ["record", "--upstream", upstream.url, "--cassette", str(tmp_path / "r.db")]
        summary = "recorded 0 interaction(s)"
    p = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_BANNER, *args, "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert summary in p.stdout
    assert "Traceback" not in p.stderr and "Aborted" not in p.stderr
