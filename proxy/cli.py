"""The `proxy` command: a thin click shell over the library.

User errors (bad cassette, port in use, bad option value) are one line on stderr
and exit code 2; never a traceback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import sys
from pathlib import Path

import click

from .jsonpath import PathError
from .matching import MatchConfig
from .redaction import Redactor
from .store import Cassette, CassetteError


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"proxy: {self.format_message()}", err=True)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _check_exposure(host: str, expose: bool) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return
    if not expose:
        raise UserError(
            f"refusing to listen on {host}: that is reachable from other machines; "
            "pass --expose if you mean it"
        )
    click.echo(f"proxy: warning: listening on {host}, reachable beyond this machine", err=True)


def listen_option(default_port: int):
    def deco(f):
        f = click.option(
            "--expose", is_flag=True, help="Allow listening on an address other than loopback."
        )(f)
        return click.option(
            "--listen",
            "listen",
            default=f"127.0.0.1:{default_port}",
            show_default=True,
            metavar="HOST:PORT",
            help="Address to listen on (port 0 picks a free port).",
        )(f)

    return deco


def redaction_options(f):
    f = click.option("--redact-header", multiple=True, metavar="NAME", help="Also redact this header (repeatable).")(f)
    f = click.option("--redact-pattern", multiple=True, metavar="REGEX", help="Also scrub this pattern from bodies and frames.")(f)
    f = click.option("--redact-json-path", multiple=True, metavar="PATH", help="Also redact this JSON path in request bodies.")(f)
    f = click.option("--no-redact", is_flag=True, help="Store secrets as they are (never for shared cassettes).")(f)
    return f


def _redactor(redact_header, redact_pattern, redact_json_path, no_redact) -> Redactor:
    try:
        return Redactor.build(redact_header, redact_pattern, redact_json_path, enabled=not no_redact)
    except Exception as e:  # re.error, PathError
        raise UserError(f"bad redaction option: {e}") from None


def match_options(f):
    f = click.option("--match-body", is_flag=True, help="Also match request bodies (canonical JSON).")(f)
    f = click.option(
        "--ignore-json-path",
        multiple=True,
        metavar="PATH",
        help="With --match-body: ignore this JSON path, e.g. metadata.id, input[*].id, **.created_at (repeatable).",
    )(f)
    f = click.option("--match-header", multiple=True, metavar="NAME", help="Also match this request header (repeatable).")(f)
    return f


def _match_config(match_body, ignore_json_path, match_header) -> MatchConfig:
    try:
        return MatchConfig(match_body, tuple(ignore_json_path), tuple(match_header))
    except PathError as e:
        raise UserError(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="proxy")
def cli() -> None:
    """Record and replay model-API traffic (HTTP, SSE, WebSocket) with chunk
    boundaries and timing intact.

    \b
      proxy record --upstream https://api.openai.com --cassette cassettes/chat.db
      proxy replay --cassette cassettes/chat.db
      proxy inspect cassettes/chat.db
    """


@cli.command()
@click.option("--upstream", metavar="URL", help="The real API, e.g. https://api.openai.com (reverse mode).")
@click.option("--cassette", required=True, type=click.Path(dir_okay=False), help="Cassette file to write (appended to if it exists).")
@listen_option(8080)
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False), help="Also trust this CA (PEM) for the upstream's certificate.")
@click.option("--insecure", is_flag=True, help="Do not verify the upstream's certificate.")
@click.option("--mode", type=click.Choice(["reverse", "forward"]), default="reverse", show_default=True,
              help="reverse: clients use this as base URL. forward: clients set HTTPS_PROXY.")
@redaction_options
@click.option("-v", "--verbose", is_flag=True, help="Log every recorded interaction.")
def record(upstream, cassette, listen, expose, upstream_ca, insecure, mode, redact_header, redact_pattern,
           redact_json_path, no_redact, verbose) -> None:
    """Forward traffic to UPSTREAM and record it into a cassette.

    Point your client's base URL at the printed address. Streams pass through
    unbuffered; every chunk and frame is stored with its time offset. Stop with
    Ctrl-C; what was recorded so far is safe even if the process is killed.

    \b
      proxy record --upstream https://api.openai.com --cassette cassettes/chat.db
      OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python my_agent.py
    """
    try:
        from .record.runner import RecordConfig, RecordError
        from .record.runner import record as run_record
    except ImportError as e:
        raise UserError(f"recording needs mitmproxy: pip install 'proxy[record]' ({e})") from None
    from .replay.server import configure_logging

    host, port = _listen(listen)
    _check_exposure(host, expose)
    configure_logging(verbose)
    cfg = RecordConfig(
        upstream=upstream,
        cassette=cassette,
        host=host,
        port=port,
        upstream_ca=upstream_ca,
        insecure=insecure,
        mode=mode,
        redactor=_redactor(redact_header, redact_pattern, redact_json_path, no_redact),
    )

    def listening(h: str, p: int) -> None:
        target = upstream if mode == "reverse" else "(forward proxy: set HTTPS_PROXY)"
        click.echo(f"recording to {cassette} via http://{h}:{p} -> {target}")
        sys.stdout.flush()

    try:
        n = asyncio.run(run_record(cfg, listening))
    except (RecordError, CassetteError) as e:
        raise UserError(str(e)) from None
    click.echo(f"recorded {n} interaction(s) to {cassette}")


@cli.command()
@click.option("--cassette", required=True, type=click.Path(dir_okay=False), help="Cassette file to serve.")
@listen_option(8080)
@click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="1 = recorded pace, 2 = twice as fast, 0 = no waiting at all.")
@match_options
@redaction_options
def replay(cassette, listen, expose, speed, match_body, ignore_json_path, match_header, redact_header,
           redact_pattern, redact_json_path, no_redact) -> None:
    """Serve a cassette: the recorded bytes, chunk boundaries and timing, no upstream.

    Requests match by method + path + query in recorded order (the Nth identical
    request gets the Nth recording). A request with no recording left gets a 404
    whose JSON body names the nearest recording and a diff.

    \b
      proxy replay --cassette cassettes/chat.db --listen 127.0.0.1:8080
      proxy replay --cassette cassettes/chat.db --speed 0 --match-body --ignore-json-path metadata
    """
    from .replay import load_engine
    from .replay.server import PortInUse, ReplayApp, ReplayServer, configure_logging

    host, port = _listen(listen)
    _check_exposure(host, expose)
    configure_logging()
    try:
        engine = load_engine(
            cassette,
            _match_config(match_body, ignore_json_path, match_header),
            _redactor(redact_header, redact_pattern, redact_json_path, no_redact),
        )
    except CassetteError as e:
        raise UserError(str(e)) from None

    async def main() -> None:
        server = ReplayServer(ReplayApp(engine, speed), host, port)
        await server.start()
        click.echo(f"replaying {cassette} on {server.url}")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server.server, "should_exit", True))
        await server.wait()

    try:
        asyncio.run(main())
    except PortInUse as e:
        raise UserError(str(e)) from None
    used = len(engine.interactions) - len(engine.unused())
    click.echo(f"served {used} of {len(engine.interactions)} recording(s); {len(engine.misses)} miss(es)")


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.argument("number", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable keys).")
@click.option("--text", "as_text", is_flag=True, help="Plain-text dump of everything, for git diff (textconv).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, writable=True), metavar="OUT.html",
              help="Write a self-contained page with the list and a waterfall timeline.")
def inspect(path, number, as_json, as_text, html_out) -> None:
    """Show what a cassette holds: a table of interactions, or interaction NUMBER in
    detail (headers, request body, the SSE event or WebSocket frame timeline).

    \b
      proxy inspect cassettes/example.db
      proxy inspect cassettes/example.db 1
      proxy inspect cassettes/example.db 5 --json
      proxy inspect cassettes/example.db --html example.html
      proxy inspect --text cassettes/example.db     # git textconv driver
    """
    from . import inspect as insp

    if sum(map(bool, (as_json, as_text, html_out))) > 1:
        raise UserError("choose one of --json, --text, --html")
    try:
        with Cassette.open(path) as c:
            if as_text:
                sys.stdout.write(insp.text_dump(c))
            elif html_out:
                Path(html_out).write_text(insp.html_page(c), encoding="utf-8")
                click.echo(f"wrote {html_out} ({c.count()} interaction(s))")
            elif number is None:
                insp.show_list(c, as_json)
            else:
                if not 1 <= number <= c.count():
                    raise UserError(f"{path}: no interaction {number} (the cassette has {c.count()})")
                insp.show_one(c, number, as_json)
    except CassetteError as e:
        raise UserError(str(e)) from None


def main() -> None:
    cli(prog_name="proxy")


if __name__ == "__main__":
    main()
