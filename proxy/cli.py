"""The `proxy` command: a thin click shell over the library.

User errors (bad cassette, port in use, bad option value) are one line on stderr
and exit code 2; never a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import convert
from . import inspect as insp
from .audit import Auditor
from .jsonpath import PathError
from .matching import MatchConfig
from .model import RecordMode
from .presets import PRESETS
from .net import PortInUse
from .record import RecordConfig, RecordError, RedactionOptions
from .replay.faults import DEFAULT_CHAOS_KINDS, FaultConfig, FaultError
from .replay import engine as replay_engine

# The server (proxy.serve: uvicorn, asyncio) is imported by the commands that serve:
# `proxy inspect`, `import`, `export`, `audit`, `ca` start without it (inspect's first page
# of a million rows: 522 -> 483 ms, bench/store_bench.py).
if TYPE_CHECKING:
    from .serve import ServeConfig, Session
from .store import Cassette, CassetteError
from .store import migrate as run_migrate

# Not `pip install 'proxy[record]'`: `proxy` on PyPI is another project.
_INSTALL_RECORD = "pip install -e '.[record]' in a checkout of this project"
_NEEDS_MITMPROXY = f"recording needs mitmproxy: {_INSTALL_RECORD}"
_FORWARD_NEEDS_MITMPROXY = f"forward mode needs mitmproxy (it is the HTTPS proxy): {_INSTALL_RECORD}"


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"proxy: {self.format_message()}", err=True)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="'--listen'")
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


def redaction_options(f, no_redact_help: str = "Store secrets as they are (never for shared cassettes)."):
    f = click.option("--redact-header", multiple=True, metavar="NAME", help="Also redact this header (repeatable).")(f)
    f = click.option("--redact-pattern", multiple=True, metavar="REGEX", help="Also scrub this pattern from bodies and frames.")(f)
    f = click.option("--redact-json-path", multiple=True, metavar="PATH", help="Also redact this JSON path in request bodies.")(f)
    f = click.option("--no-redact", is_flag=True, help=no_redact_help)(f)
    return f


def replay_redaction_options(f):
    # Replay stores nothing: redaction there normalizes each incoming request the way the
    # recorder redacted the cassette, so that the two compare.
    return redaction_options(f, "Match incoming requests unredacted. By default they are redacted as the recorder "
                                "redacted the cassette (secret headers, key-shaped strings, the --redact-* "
                                "options) before matching; use this for a cassette recorded with --no-redact.")


def _redaction(redact_header, redact_pattern, redact_json_path, no_redact) -> RedactionOptions:
    options = RedactionOptions(tuple(redact_header), tuple(redact_pattern), tuple(redact_json_path), not no_redact)
    try:
        options.redactor()
    except Exception as e:  # re.error, PathError
        raise UserError(f"bad redaction option: {e}") from None
    return options


def proxy_mode_option(what: str):
    def deco(f):
        f = click.option("--confdir", type=click.Path(file_okay=False), default=None,
                         help="mitmproxy's directory for its CA (forward mode); default ~/.mitmproxy.")(f)
        return click.option("--mode", "proxy_mode", type=click.Choice(["reverse", "forward"]), default="reverse",
                            show_default=True, help=f"reverse: clients use this as base URL. forward: an HTTPS proxy "
                                                    f"{what} for clients that set HTTPS_PROXY (trusting `proxy ca`).")(f)
    return deco


def connect_to_option(f):
    return click.option("--connect-to", multiple=True, metavar="HOST:PORT:HOST2:PORT2",
                        help="When recording, connect to HOST2:PORT2 for requests to HOST:PORT, keeping the name "
                             "for TLS and the cassette (as curl's --connect-to; repeatable).")(f)


def _forward_banner(session: Session) -> str:
    return f"(forward proxy: HTTPS_PROXY={session.url}, CA {session.ca})"


def match_options(f):
    f = click.option("--match-body", is_flag=True,
                     help="Serve exact body matches only (canonical JSON after ignores and presets).")(f)
    f = click.option(
        "--ignore-json-path",
        multiple=True,
        metavar="PATH",
        help="Leave this JSON path out of body comparisons, e.g. metadata.id, input[*].id, **.created_at; "
             "PATH~REGEX leaves out only what the regex matches in that string (repeatable).",
    )(f)
    f = click.option("--match-header", multiple=True, metavar="NAME", help="Also match this request header (repeatable).")(f)
    f = click.option("--strict-match", is_flag=True,
                     help="A weak match (the body differs in more than ids, dates and times) is a miss.")(f)
    f = click.option("--preset", "presets", multiple=True, type=click.Choice(list(PRESETS)), metavar="NAME",
                     help=f"Ignore the volatile fields of a client: {', '.join(PRESETS)} (repeatable).")(f)
    f = click.option("--json", "summary_json", is_flag=True,
                     help="On stop, print the summary as JSON (misses, out-of-order and weak matches, faults).")(f)
    return f


def fault_options(f):
    f = click.option("--chaos-kinds", metavar="KIND,...", default=",".join(DEFAULT_CHAOS_KINDS), show_default=True,
                     help="With --chaos: the fault kinds it picks from.")(f)
    f = click.option("--chaos-rate", type=click.FloatRange(0, 1), default=0.2, show_default=True, metavar="RATE",
                     help="With --chaos: the share of recordings that get a fault.")(f)
    f = click.option("--chaos", "chaos_seed", type=int, metavar="SEED",
                     help="Inject faults picked at random from SEED (the same seed, the same faults), "
                          "each logged as it is injected.")(f)
    f = click.option("--fault", "faults", multiple=True, metavar="SPEC",
                     help="Inject a fault into the replayed traffic, e.g. status:429@#1, cut:event=3,how=reset, "
                          "stall:2s,event=4, ws-close:1011,frame=3 (repeatable; README: Testing failure paths).")(f)
    return f


def _fault_config(faults, chaos_seed, chaos_rate, chaos_kinds) -> FaultConfig:
    if chaos_seed is None:  # a rate or kinds alone would be ignored: the run would test no failure
        ctx = click.get_current_context()
        given = [f"--{n.replace('_', '-')}" for n in ("chaos_rate", "chaos_kinds")
                 if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)]
        if given:
            raise UserError(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --chaos SEED")
    try:
        return FaultConfig.build(faults, chaos_seed, chaos_rate, chaos_kinds)
    except FaultError as e:
        raise UserError(str(e)) from None


def _match_config(match_body, ignore_json_path, match_header, strict_match=False, presets=()) -> MatchConfig:
    try:
        return MatchConfig(match_body, tuple(ignore_json_path), tuple(match_header), strict_match, tuple(presets))
    except (PathError, ValueError) as e:
        raise UserError(str(e)) from None


def _configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    lg = logging.getLogger("proxy")
    lg.addHandler(handler)
    lg.setLevel(logging.DEBUG if verbose else logging.INFO)
    lg.propagate = False


def _say(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


class LiveLine:
    """One line on a terminal, rewritten as each interaction is recorded: how many, how
    many bytes, the last one. Silent when stdout is not a terminal (CI logs, pipes)."""

    def __init__(self, what: str = "recorded", stream=None):
        self.stream = stream or sys.stdout
        self.enabled = self.stream.isatty()
        self.what = what
        self.count = 0
        self.bytes = 0
        self.shown = False

    def __call__(self, ev: dict) -> None:
        self.count += 1
        self.bytes += ev["bytes"]
        if not self.enabled:
            return
        size = ev["bytes"] if ev["kind"] == "http" else f"{ev['frames']} frames"
        last = insp.printable(f"{ev['method']} {ev['path']} {ev['status'] or '---'}"
                              f"{'' if ev['end'] == 'complete' else ' ' + ev['end']}")
        total = f"{self.bytes / 1024:.1f} KB" if self.bytes >= 1024 else f"{self.bytes} B"
        line = f"{self.what} {self.count} · {total} · last {last} ({size}{' B' if ev['kind'] == 'http' else ''})"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\x1b[K" + line[:width])
        self.stream.flush()
        self.shown = True

    def end(self) -> None:
        """Leave the line in place, so the summary prints below it."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _run_session(config: ServeConfig, banner, summary_json: bool = False) -> None:
    """What `proxy replay` and `proxy serve` run: a Session until SIGINT/SIGTERM, then its summary."""
    import asyncio

    from .serve import ServeError, Session
    from .uvicorn_server import loop_factory

    _configure_logging()
    live = LiveLine("recorded")

    async def main():
        session = Session(config, live)
        await session.start()
        return session, await session.run_until_signal(lambda: _say(banner(session)))

    # uvloop only where nothing but the replay server runs on the loop (mitmproxy, which
    # records and fronts forward mode, runs on asyncio's own loop)
    replay_only = config.mode is RecordMode.NONE and config.proxy_mode == "reverse"
    # gc.freeze() pins what is garbage at that moment too: only where nothing but the
    # replay server runs (mitmproxy's flows, which hold cycles, would be pinned with it)
    replay_engine.FREEZE_INDEXES = replay_only
    try:
        with asyncio.Runner(loop_factory=loop_factory() if replay_only else None) as runner:
            session, summary = runner.run(main())
    except ImportError as e:
        if (e.name or "").partition(".")[0] != "mitmproxy":
            raise  # a broken install, not a missing extra: show where
        needs = _FORWARD_NEEDS_MITMPROXY if config.proxy_mode == "forward" else _NEEDS_MITMPROXY
        raise UserError(f"{needs} ({e})") from None
    except (PortInUse, ServeError, CassetteError, RecordError) as e:
        raise UserError(str(e)) from None
    finally:
        live.end()
    if session.failure is not None:  # a damaged cassette, or a write that failed
        raise UserError(str(session.failure))
    if summary_json:
        click.echo(json.dumps(summary.to_json(), indent=1))
    else:
        click.echo("\n".join(summary.lines()))


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
@click.option("--confdir", type=click.Path(file_okay=False), default=None,
              help="mitmproxy's directory for its CA (forward mode); default ~/.mitmproxy.")
@connect_to_option
@redaction_options
@click.option("-v", "--verbose", is_flag=True, help="Log every recorded interaction.")
def record(upstream, cassette, listen, expose, upstream_ca, insecure, mode, confdir, connect_to, redact_header,
           redact_pattern, redact_json_path, no_redact, verbose) -> None:
    """Forward traffic to UPSTREAM and record it into a cassette.

    Point your client's base URL at the printed address. Streams pass through
    unbuffered; every chunk and frame is stored with its time offset. Stop with
    Ctrl-C; what was recorded so far is safe even if the process is killed.

    \b
      proxy record --upstream https://api.openai.com --cassette cassettes/chat.db
      OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python my_agent.py

    \b
    Forward mode, for clients that cannot change their base URL:
      proxy record --mode forward --cassette cassettes/agent.db
      HTTPS_PROXY=http://127.0.0.1:8080 SSL_CERT_FILE=$(proxy ca) my-agent
    """
    try:
        from .record.runner import record as run_record
    except ImportError as e:
        raise UserError(f"{_NEEDS_MITMPROXY} ({e})") from None
    import asyncio

    host, port = _listen(listen)
    _check_exposure(host, expose)
    _configure_logging(verbose)
    cfg = RecordConfig(upstream, cassette, host, port, upstream_ca, insecure, mode, confdir, tuple(connect_to),
                       _redaction(redact_header, redact_pattern, redact_json_path, no_redact))
    target = upstream if mode == "reverse" else "(forward proxy: set HTTPS_PROXY)"
    live = LiveLine("recorded")
    try:
        n, cut = asyncio.run(run_record(cfg, lambda h, p: _say(f"recording to {cassette} via http://{h}:{p} -> {target}"),
                                        live))
    except (RecordError, CassetteError) as e:
        raise UserError(str(e)) from None
    finally:
        live.end()
    click.echo(f"recorded {n} interaction(s) to {cassette}" + (f" ({cut} cut short by the stop)" if cut else ""))


@cli.command()
@click.option("--cassette", type=click.Path(dir_okay=False), help="Cassette file to serve.")
@click.option("--cassette-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Serve every DIR/NAME.db; a request picks one with the header x-proxy-cassette: NAME "
                   "or the path prefix /c/NAME/.")
@listen_option(8080)
@click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="1 = recorded pace, 2 = twice as fast, 0 = no waiting at all.")
@proxy_mode_option("that answers from the cassette")
@match_options
@replay_redaction_options
@fault_options
def replay(cassette, cassette_dir, listen, expose, speed, proxy_mode, confdir, match_body, ignore_json_path,
           match_header, strict_match, presets, summary_json, redact_header, redact_pattern, redact_json_path,
           no_redact, faults, chaos_seed, chaos_rate, chaos_kinds) -> None:
    """Serve a cassette: the recorded bytes, chunk boundaries and timing, no upstream.

    Method + path + query select the recordings; among the unused ones the closest
    body wins (exact first, then most similar, recorded order breaking ties), so the
    Nth identical request gets the Nth recording and concurrent requests get their
    own. A request with no recording left gets a 404 whose JSON body names the
    nearest recording and what differs. Faults can be layered on the recordings (a
    429 before the recording, a reset mid-stream, a stall, a WebSocket close); a
    recording a fault answered is given to the retry.

    \b
      proxy replay --cassette cassettes/chat.db --listen 127.0.0.1:8080
      proxy replay --cassette cassettes/chat.db --speed 0 --match-body --ignore-json-path metadata
      proxy replay --cassette cassettes/agent.db --speed 0 --preset claude-code --strict-match
      proxy replay --cassette-dir cassettes --speed 0
      curl http://127.0.0.1:8080/c/chat/v1/models      # cassettes/chat.db
      proxy replay --cassette cassettes/chat.db --fault 'status:429@#1' --fault 'stall:2s,event=3@/v1/responses'
      proxy replay --cassette cassettes/chat.db --speed 0 --chaos 7 --chaos-rate 0.5 --chaos-kinds status,cut --json

    \b
    Forward mode, for clients that cannot change their base URL (needs mitmproxy):
      proxy replay --mode forward --cassette cassettes/agent.db
      HTTPS_PROXY=http://127.0.0.1:8080 SSL_CERT_FILE=$(proxy ca) my-agent
    """
    if bool(cassette) == bool(cassette_dir):
        raise UserError("give exactly one of --cassette PATH or --cassette-dir DIR")
    if cassette_dir and not Path(cassette_dir).is_dir():
        raise UserError(f"{cassette_dir}: no such directory")
    from .serve import ServeConfig

    host, port = _listen(listen)
    _check_exposure(host, expose)
    config = ServeConfig(Path(cassette) if cassette else None, RecordMode.NONE, None, host, port, speed,
                         _match_config(match_body, ignore_json_path, match_header, strict_match, presets),
                         _redaction(redact_header, redact_pattern, redact_json_path, no_redact),
                         cassette_dir=Path(cassette_dir) if cassette_dir else None, proxy_mode=proxy_mode,
                         confdir=confdir, faults=_fault_config(faults, chaos_seed, chaos_rate, chaos_kinds))

    def banner(session: Session) -> str:
        what = cassette or f"{len(session.app.cassettes.names())} cassette(s) in {cassette_dir}"
        return f"replaying {what} on {session.url}" + (" " + _forward_banner(session) if session.forward else "")

    _run_session(config, banner, summary_json)


@cli.command()
@click.option("--cassette", required=True, type=click.Path(dir_okay=False), help="The cassette.")
@click.option("--upstream", metavar="URL", envvar="PROXY_UPSTREAM", help="The real API (env PROXY_UPSTREAM).")
@click.option("--record-mode", type=click.Choice([m.value for m in RecordMode]), default="none",
              envvar="PROXY_RECORD_MODE", show_default=True, show_envvar=True,
              help="none: replay only. once: record if the cassette is missing, else replay. "
                   "new_episodes: replay what matches, record the rest. all: re-record into a fresh cassette.")
@listen_option(8080)
@click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Replay pace.")
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False), help="Also trust this CA for the upstream.")
@click.option("--insecure", is_flag=True, help="Do not verify the upstream's certificate.")
@proxy_mode_option("that replays and records")
@connect_to_option
@match_options
@redaction_options
@fault_options
def serve(cassette, upstream, record_mode, listen, expose, speed, upstream_ca, insecure, proxy_mode, confdir,
          connect_to, match_body, ignore_json_path, match_header, strict_match, presets, summary_json, redact_header,
          redact_pattern, redact_json_path, no_redact, faults, chaos_seed, chaos_rate, chaos_kinds) -> None:
    """Serve one cassette in a VCR record mode: replay, record, or both.

    `proxy replay` is record mode none; `proxy record` is like all but appends.
    With all, the old cassette is replaced only when the run ends cleanly (Ctrl-C
    or SIGTERM); a crash leaves it untouched next to PATH.recording.

    \b
      proxy serve --cassette cassettes/chat.db                      # none: CI
      proxy serve --cassette cassettes/chat.db --record-mode once --upstream https://api.openai.com
      PROXY_RECORD_MODE=new_episodes PROXY_UPSTREAM=https://api.openai.com proxy serve --cassette c.db
      proxy serve --mode forward --cassette c.db --record-mode once    # HTTPS proxy; no --upstream
      proxy serve --cassette cassettes/chat.db --fault 'status:529@/v1/messages' --json
    """
    from .serve import ServeConfig

    host, port = _listen(listen)
    _check_exposure(host, expose)
    config = ServeConfig(Path(cassette), RecordMode.parse(record_mode), upstream, host, port, speed,
                         _match_config(match_body, ignore_json_path, match_header, strict_match, presets),
                         _redaction(redact_header, redact_pattern, redact_json_path, no_redact), upstream_ca, insecure,
                         proxy_mode=proxy_mode, confdir=confdir, connect_to=tuple(connect_to),
                         faults=_fault_config(faults, chaos_seed, chaos_rate, chaos_kinds))
    _run_session(config, lambda session: f"serving {cassette} on {session.url} "
                                         f"(record mode {record_mode}: {session.action.value})"
                                         + (" " + _forward_banner(session) if session.forward else ""), summary_json)


@cli.command()
@click.option("--confdir", type=click.Path(file_okay=False), default="~/.mitmproxy", show_default=True,
              help="Where mitmproxy keeps its CA.")
def ca(confdir) -> None:
    """Print the path of the CA certificate of forward mode (created if needed). Clients
    must trust it to go through `proxy record --mode forward` or `proxy replay --mode forward`.

    \b
      export SSL_CERT_FILE=$(proxy ca)      # or REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS
      proxy record --mode forward --cassette c.db &
      HTTPS_PROXY=http://127.0.0.1:8080 python my_agent.py
    """
    directory = os.path.expanduser(confdir)
    cert = os.path.join(directory, "mitmproxy-ca-cert.pem")
    if os.path.isfile(cert) and os.path.isfile(os.path.join(directory, "mitmproxy-ca.pem")):
        click.echo(cert)  # made already: no need to import mitmproxy (about 1 s) to say where it is
        return
    try:
        from .record.runner import ca_path
    except ImportError as e:
        raise UserError(f"the CA belongs to mitmproxy: {_INSTALL_RECORD} ({e})") from None
    try:
        click.echo(ca_path(confdir))
    except RecordError as e:
        raise UserError(str(e)) from None


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.argument("number", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable keys).")
@click.option("--text", "as_text", is_flag=True,
              help="Plain-text dump of everything (with NUMBER: of that interaction), for git diff (textconv).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, writable=True), metavar="OUT.html",
              help="Write a self-contained page with the list and a waterfall timeline (whole cassette; no NUMBER).")
@click.option("--body", "body", is_flag=True,
              help="Print the response body of interaction NUMBER, decoded from its content encoding.")
def inspect(path, number, as_json, as_text, html_out, body) -> None:
    """Show what a cassette holds: a table of interactions, or interaction NUMBER in
    detail (headers, request body, the SSE event or WebSocket frame timeline).
    --json (with NUMBER) and --text hold every body, chunk and frame in full.

    \b
      proxy inspect cassettes/example.db
      proxy inspect cassettes/example.db 1
      proxy inspect cassettes/example.db 5 --json
      proxy inspect cassettes/example.db 3 --body > models.json
      proxy inspect cassettes/example.db --html example.html
      proxy inspect --text cassettes/example.db     # git textconv driver
      proxy inspect --text cassettes/example.db 1   # the same, one interaction
    """
    if sum(map(bool, (as_json, as_text, html_out, body))) > 1:
        raise UserError("choose one of --json, --text, --html, --body")
    if html_out and number is not None:
        raise UserError("--html writes the whole cassette: drop NUMBER, or use --text / --json for one interaction")
    if body and number is None:
        raise UserError("--body needs an interaction NUMBER")
    try:
        with Cassette.open(path) as c:
            if number is not None and not 1 <= number <= c.count():
                raise UserError(f"{path}: no interaction {number} (the cassette has {c.count()})")
            if as_text:
                sys.stdout.write(insp.text_dump(c, number))
            elif html_out:
                Path(html_out).write_text(insp.html_page(c), encoding="utf-8")
                click.echo(f"wrote {html_out} ({c.count()} interaction(s))")
            elif number is None:
                insp.show_list(c, as_json)
            elif body:
                problem = insp.show_body(c, number)
                if problem:
                    raise UserError(f"{path}: {problem}")
            else:
                insp.show_one(c, number, as_json)
    except CassetteError as e:
        raise UserError(str(e)) from None


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
def migrate(paths) -> None:
    """Upgrade cassettes written by an older proxy to this version's layout.

    Each file is rewritten beside itself and renamed over the old one when complete,
    so an interrupted migration leaves the old file as it was. A current cassette is
    left untouched. Reading an old cassette says to run this.

    \b
      proxy migrate cassettes/chat.db
      proxy migrate tests/cassettes/*.db
    """
    failed = []
    for path in paths:
        try:
            before, after = run_migrate(path)
        except CassetteError as e:
            click.echo(f"proxy: {e}", err=True)
            failed.append(path)
            continue
        click.echo(f"{path}: schema {before} -> {after}" if before != after else f"{path}: schema {after}, up to date")
    if failed:
        raise click.exceptions.Exit(2)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="PATH...")
@click.option("--pattern", "patterns", multiple=True, metavar="REGEX",
              help="Also report matches of this regex (repeatable), as --redact-pattern scrubs them.")
def audit(paths, patterns) -> None:
    """Check cassettes for secrets, fully decoded: headers, paths, queries, request and
    response bodies in every content encoding, frames, base64 inside JSON, the -wal
    beside the file. Looks for known key formats and the values of this process's
    secret-named environment variables. One line per finding, the value masked:
    FILE #INTERACTION LOCATION KIND VALUE. Exit 0 when clean, 1 on a finding, 2 when
    a file is no readable cassette.

    \b
      proxy audit cassettes/*.db
      proxy audit --pattern 'cust_[0-9]{6}' tests/cassettes/chat.db
    """
    try:
        auditor = Auditor(RedactionOptions(patterns=tuple(patterns)).redactor())
    except (re.error, PathError) as e:
        raise UserError(f"bad --pattern: {e}") from None
    findings, bad = 0, 0
    for path in paths:
        try:
            found = auditor.file(path)
        except CassetteError as e:
            click.echo(f"proxy: {e}", err=True)
            bad += 1
            continue
        for f in found:
            click.echo(str(f))
        findings += len(found)
    if findings or bad:
        click.echo(f"proxy audit: {findings} finding(s) in {len(paths)} cassette(s)"
                   + (f", {bad} unreadable" if bad else ""), err=True)
    if bad or findings:
        raise click.exceptions.Exit(2 if bad else 1)


@cli.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="FILE...")
@click.option("--cassette", required=True, type=click.Path(dir_okay=False), help="The cassette to write (a new file).")
@click.option("--format", "fmt", type=click.Choice(convert.FORMATS), default=None,
              help="vcr (VCR.py YAML or JSON) or har; default: from the file's name and content.")
@redaction_options
def import_(sources, cassette, fmt, redact_header, redact_pattern, redact_json_path, no_redact) -> None:
    """Make a cassette from VCR.py cassettes (the requests, httpx and aiohttp stubs) or
    HAR 1.2 files (browsers, mitmproxy's HAR export, WebSocket messages included),
    keeping whatever timing the source has (VCR.py has none). Redacted like a recording.

    \b
      proxy import tests/cassettes/test_chat/test_stream.yaml --cassette cassettes/chat.db
      proxy import session.har --cassette cassettes/session.db
    """
    options = _redaction(redact_header, redact_pattern, redact_json_path, no_redact)
    try:
        done = convert.import_into(list(sources), cassette, fmt, options)
    except (convert.ConvertError, CassetteError, OSError) as e:
        raise UserError(str(e)) from None
    for imp in done:
        for why in imp.skipped:
            click.echo(f"proxy: skipped {why}", err=True)
    n = sum(len(imp.interactions) for imp in done)
    names = ", ".join(f"{src} ({imp.format})" for src, imp in zip(sources, done))
    click.echo(f"imported {n} interaction(s) into {cassette} from {names}")


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--har", "har_out", required=True, type=click.Path(dir_okay=False, allow_dash=True), metavar="OUT.har",
              help="Write HAR 1.2 (for Chrome DevTools and other HAR viewers); - for stdout.")
def export(path, har_out) -> None:
    """Write a cassette as HAR 1.2: bodies decoded, WebSocket frames as Chrome's
    _webSocketMessages, and what HAR has no field for (chunk boundaries, exact timing,
    how it ended) in a _proxy extension, so `proxy import` gives the cassette back.

    \b
      proxy export cassettes/example.db --har example.har
    """
    try:
        with Cassette.open(path) as c:
            doc = convert.export_har(c)
    except CassetteError as e:
        raise UserError(str(e)) from None
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if har_out == "-":
        sys.stdout.write(text)
        return
    Path(har_out).write_text(text, encoding="utf-8")
    click.echo(f"wrote {har_out} ({len(doc['log']['entries'])} entries)")


def main() -> None:
    cli(prog_name="proxy")


if __name__ == "__main__":
    main()
