"""Every command and every option of the CLI is documented: named in README.md, or used
in an example of its own --help (the indented lines that run `proxy ...`)."""

from __future__ import annotations

import re

import click

from proxy.cli import cli

from .conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _examples(command: click.Command) -> str:
    return "\n".join(ln for ln in (command.help or "").splitlines() if ln.strip().startswith("proxy "))


def _undocumented() -> list[str]:
    missing = []
    for name, command in sorted(cli.commands.items()):
        if not re.search(rf"\bproxy {re.escape(name)}\b", README):
            missing.append(f"proxy {name}")
        examples = _examples(command)
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            longs = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
            # (?![\w-]): `--cassette` is not documented by `--cassette-dir`.
            if not any(re.search(rf"{re.escape(o)}(?![\w-])", README) or re.search(rf"{re.escape(o)}(?![\w-])", examples)
                       for o in longs):
                missing.append(f"proxy {name} {'/'.join(longs)}")
    return missing


def test_every_command_and_option_is_documented():
    assert _undocumented() == []


def test_the_check_sees_an_undocumented_option():
    @click.command("frobnicate")
    @click.option("--zzz-unheard-of", is_flag=True)
    @click.option("--match")  # README names --match-body, not --match
    def frob(zzz_unheard_of, match):
        """Not a command of proxy."""

    cli.add_command(frob)
    try:
        found = [m for m in _undocumented() if "frobnicate" in m]
        assert found == ["proxy frobnicate", "proxy frobnicate --zzz-unheard-of", "proxy frobnicate --match"]
    finally:
        del cli.commands["frobnicate"]
