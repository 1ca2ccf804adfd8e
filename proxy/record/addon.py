"""The record addon: mitmproxy hooks -> model objects -> the cassette.

Options (declared in ``load``, checked in ``configure``, as every mitmproxy addon):
``proxy_cassette`` (the file to record into; nothing is recorded while it is unset),
``proxy_redact`` (on by default), ``proxy_redact_header``, ``proxy_redact_pattern``,
``proxy_redact_json_path``. It runs under mitmproxy's own tools as a script:

    mitmdump -s proxy/record/addon.py --mode reverse:https://api.openai.com --set proxy_cassette=c.db
    mitmweb  -s proxy/record/addon.py --mode reverse:https://api.openai.com --set proxy_cassette=c.db

mitmproxy loads a script by its file path, not as part of a package, so the imports
below are absolute and the module ends with ``addons = [Recorder()]``. ``proxy record``
runs the same addon in-process and sets the same options (``record.runner``).

Hooks hand their writes to a CassetteWriter (a thread that batches commits), so the
event loop that moves bytes never waits for SQLite, nor for redaction of HTTP exchanges:
an interaction is queued when its request is complete, each chunk as it passes (the
loop takes its time and queues the bytes, nothing more), each WebSocket message as it
is seen (likewise). The hooks that end an interaction (response, error, websocket_end) await the
writer's flush, so the end of a response reaches the client only once the whole
interaction is committed. A recorder killed mid-stream keeps every finished
interaction and the in-flight ones up to (at most) the last chunks still queued.

A write that fails stops the recording: we really want to crash visibly rather than let
traffic through unrecorded. The flow whose interaction was not stored is killed, so its
client sees a failure (a cut response), never a clean end; later requests are killed
too; mitmproxy is shut down, and the writer's error (``write_error``) is what ``proxy record``
reports, in one line, with exit code 2.

Streaming: mitmproxy buffers a whole response unless ``flow.response.stream`` is
set; we set it to a callable for every response, so SSE events reach the client
as upstream sends them and each call is one recorded chunk with its offset.

Redaction (``proxy.redaction``) happens before anything is written, on the writer
thread, in order with the writes (``CassetteWriter.call``), so neither a request going
upstream nor a chunk or message going on its way waits for it. It covers the path,
query and headers; the request body decoded by its Content-Encoding with the shared
codec (one that does not decode is stored as a marker, with a warning); response
chunks through a streaming redactor that catches a key split across chunks and keeps
every chunk's size and offset (it may store a chunk a little later than it passed: at
most until the bytes after it show no key runs across its end); a compressed response
is decoded, scrubbed and stored as it came, or re-encoded chunk by chunk (with a true
content-length, or one past the stored bytes when the body was cut) when it held a
secret, once it ends; WebSocket messages whole and per
direction as a stream. What the client receives is never changed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Sequence

from mitmproxy import ctx, exceptions, http, version

from proxy.jsonpath import PathError
from proxy.model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.record.front import REPLAYED
from proxy.redaction import Redactor
from proxy.store import Cassette, CassetteError, CassetteWriter

log = logging.getLogger("proxy.record")


def _format_error(status: int, message: str) -> bytes:
    # The page mitmproxy sends the client when it cannot reach the upstream; we
    # store the same bytes so replay answers exactly what the client saw.
    try:
        from mitmproxy.proxy.layers.http._base import format_error

        return format_error(status, message)
    except ImportError:  # pragma: no cover - mitmproxy moved it
        return f"<html><body><h1>{status}</h1><p>{message}</p></body></html>".encode()


BACKLOG = 64 * 1024  # bytes of one interaction queued and not committed beyond which it waits for the writer


class _Live:
    """An interaction in flight. (A plain class: mitmproxy runs this file as a script that
    is not in sys.modules while it loads, which @dataclass needs.)"""

    __slots__ = ("iid", "t0", "kind", "body_bytes", "frames_seen", "response", "ttfb", "body", "frames", "queued",
                 "written", "committed", "waiter")

    def __init__(self, iid: int, t0: float) -> None:
        self.iid, self.t0 = iid, t0
        self.kind = Kind.HTTP
        self.body_bytes = 0
        self.frames_seen = 0
        self.response: Response | None = None  # as stored, for a content-length fixed at the end
        self.ttfb: float | None = None
        self.body = None  # the response body's stream redactor
        self.frames = None  # the session's FrameRedactor
        # bytes of body chunks or messages: handed to the writer (by the loop), redacted and
        # written (by the writer thread), committed (set by the writer thread once on disk)
        self.queued = self.written = self.committed = 0
        self.waiter: tuple[int, threading.Event] | None = None  # the loop waits until committed reaches it


async def _flushed(writer: CassetteWriter) -> None:
    await asyncio.wrap_future(writer.flush())


def _upstream(modes: Sequence[str]) -> tuple[str, str]:
    """(upstream, mode) for the cassette's meta, from mitmproxy's ``mode`` option."""
    for spec in modes:
        if spec.startswith("reverse:"):
            return spec.split(":", 1)[1], "reverse"
    return "(forward proxy)", "forward"


# -- on the writer thread (CassetteWriter.call): redaction and what it decides ---------
# These run in order with the writes they feed, inside the writer's transaction; a live
# interaction's ``response``, ``body`` and ``frames`` are touched only here once the
# response began.

def _encoding(headers: list) -> str | None:
    """The Content-Encoding of these headers, all its lines joined ("gzip" and "br" on two
    lines are "gzip, br", as mitmproxy's ``headers.get`` has it): a layer left out
    would hide a key from the scan."""
    values = [v for k, v in headers if k.lower() == "content-encoding"]
    return ", ".join(values) if values else None


def _stored_request(redactor: Redactor, method: str, target: str, headers: list, raw: bytes, scheme: str,
                    host: str, port: int, started_at: float, http_version: str) -> Interaction:
    encoding = _encoding(headers)
    path, _, query = target.partition("?")
    path = redactor.path(path)
    body, problem = redactor.request_body(raw, encoding)
    if problem:
        log.warning("%s %s: request body stored as a marker, not as sent (%s)", method, path, problem)
    req = Request(method=method, path=path, query=redactor.query(query), headers=redactor.headers(headers),
                  body=body, body_encoding=encoding, scheme=scheme, host=host, port=port, http_version=http_version)
    return Interaction(Kind.HTTP, req, started_at=started_at)


def _store_response(cassette, redactor: Redactor, live: _Live, status: int, reason: str, headers: list,
                    is_ws: bool) -> None:
    live.response = Response(status, reason, redactor.headers(headers))
    cassette.set_response(live.iid, live.response, live.ttfb, Kind.WEBSOCKET if is_ws else None)
    if is_ws:
        live.frames = redactor.frames()
    else:
        live.body = redactor.response_body(_encoding(headers))


def _store_chunk(cassette, writer: CassetteWriter, live: _Live, offset: float, data: bytes) -> None:
    if live.body is not None:  # else already ended (a chunk queued after the stop cut it)
        for t, clean in live.body.feed(data, offset):
            cassette.add_chunk(live.iid, Chunk(t, clean))
    _written(writer, live, len(data))


def _store_message(cassette, writer: CassetteWriter, live: _Live, tag: Frame, payload: bytes) -> None:
    if live.frames is not None:  # else already ended
        for frame, clean in live.frames.feed(tag.direction, payload, tag):
            frame.payload = clean
            cassette.add_frame(live.iid, frame)
    _written(writer, live, len(payload))


def _written(writer: CassetteWriter, live: _Live, n: int) -> None:
    live.written += n
    writer.after_commit(_committed, live, live.written)


def _committed(live: _Live, n: int) -> None:
    live.committed = n
    waiter = live.waiter
    if waiter is not None and n >= waiter[0]:
        waiter[1].set()


def _end_stored_frames(cassette, live: _Live) -> None:
    if live.frames is None:
        return
    frames, live.frames = live.frames, None
    for frame, clean in frames.finish():
        frame.payload = clean
        cassette.add_frame(live.iid, frame)


def _end_stored_body(cassette, redactor: Redactor, live: _Live, label: tuple[str, str] | None,
                     complete: bool) -> None:
    """Store what the body redactor still holds; fix a content-length the re-encoding of a
    compressed body made untrue. A body cut short keeps a content-length past what is
    stored (the recorded one, unless re-encoding outgrew it), so its replay is cut too."""
    if live.body is None:
        return
    body, live.body = live.body, None
    stored = 0  # a re-encoded body (the only kind whose length changes) is released whole here
    for offset, clean in body.finish():
        cassette.add_chunk(live.iid, Chunk(offset, clean))
        stored += len(clean)
    if body.warning:
        what = f"{label[0]} {redactor.path(label[1])}" if label else "a response cut by the stop"
        log.warning("%s: %s", what, body.warning)
    length = live.response.header("content-length") if live.response is not None else None
    if body.length_changed and length is not None:
        declared = stored
        if not complete:  # the client saw fewer bytes than promised: so must its replay
            declared = int(length) if length.isdigit() and int(length) > stored else stored + 1
        headers = [(k, str(declared) if k.lower() == "content-length" else v) for k, v in live.response.headers]
        live.response = Response(live.response.status, live.response.reason, headers)
        cassette.set_response(live.iid, live.response, live.ttfb)


def _bounded(live: _Live, writer: CassetteWriter, n: int) -> None:
    """Count ``n`` more bytes of ``live`` queued (a chunk or a message); past BACKLOG not
    committed, hold the loop until the writer has committed every byte before these. A
    body or a WebSocket session that comes faster than it can be scrubbed (megabytes of
    base64, say) is slowed to that pace as it passes, as the client would see it
    recorded, instead of its end waiting for the backlog; a recorder killed meanwhile
    loses at most BACKLOG bytes of it, or the last chunk or message when that is bigger
    (which goes on at once: one big message does not wait for its own redaction)."""
    live.queued += n
    if live.queued - live.committed <= BACKLOG:
        return
    before = live.queued - n
    done = threading.Event()
    live.waiter = (before, done)
    writer.hurry()
    # (the loop is held, so nothing else of it changes meanwhile: only the writer can fail,
    # and then nothing more is committed)
    while live.committed < before and writer.error is None and writer.running:
        done.wait(0.05)
    live.waiter = None


class Recorder:
    """Records every flow into the cassette named by ``proxy_cassette``."""

    def __init__(self) -> None:
        self.cassette: CassetteWriter | None = None
        self.on_recorded = None  # called with a dict per committed interaction (proxy record's live line)
        self.path: str | None = None
        self.redactor = Redactor()
        self.live: dict[str, _Live] = {}
        self.recorded = 0  # interactions finished in the cassette by this run, cut_by_stop included
        self.cut_by_stop = 0
        self.write_error: CassetteError | None = None  # the write that failed, if one did (not `error`: a hook)
        self.report_errors = True  # proxy record reports them itself
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- options -------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("proxy_cassette", str, "",
                          "Record every flow into this proxy cassette (SQLite; appended to if it exists).")
        loader.add_option("proxy_redact", bool, True,
                          "Redact secret headers and key-shaped strings before anything is stored.")
        loader.add_option("proxy_redact_header", Sequence[str], [], "Also redact this header (repeatable).")
        loader.add_option("proxy_redact_pattern", Sequence[str], [],
                          "Also scrub this regex from bodies and frames (repeatable).")
        loader.add_option("proxy_redact_json_path", Sequence[str], [],
                          "Also redact this JSON path in request bodies (repeatable).")

    def configure(self, updated) -> None:
        o = ctx.options
        if updated & {"proxy_redact", "proxy_redact_header", "proxy_redact_pattern", "proxy_redact_json_path"}:
            try:
                self.redactor = Redactor.build(o.proxy_redact_header, o.proxy_redact_pattern,
                                               o.proxy_redact_json_path, enabled=o.proxy_redact)
            except (re.error, PathError) as e:
                raise exceptions.OptionsError(f"bad redaction option: {e}") from None
        if "proxy_cassette" in updated and o.proxy_cassette != (self.path or ""):
            if self.live:
                raise exceptions.OptionsError("proxy_cassette cannot change while interactions are being recorded")
            self.close()
            if o.proxy_cassette:
                upstream, mode = _upstream(o.mode)
                try:
                    cassette = Cassette.open_or_create(o.proxy_cassette, upstream=upstream, mode=mode)
                except CassetteError as e:
                    # We really want to fail visibly rather than let traffic through unrecorded.
                    raise exceptions.OptionsError(str(e)) from None
                self.cassette, self.path = CassetteWriter(cassette, on_error=self._write_failed), o.proxy_cassette
                try:
                    self._loop = asyncio.get_running_loop()
                except RuntimeError:
                    self._loop = None

    def running(self) -> None:
        if self.cassette is None:
            # Under `mitmdump -s` a forgotten --set would otherwise let every flow through unrecorded, silently.
            log.warning("proxy_cassette is not set: nothing is recorded (--set proxy_cassette=PATH)")

    def done(self) -> None:
        if self.write_error is None:  # after a failed write the live flows were not stored: nothing to finish
            self._cut_live("cut short by the stop")
        try:
            self.close()
        except CassetteError:
            pass  # kept in self.write_error, for whoever runs mitmproxy (proxy record: one line, exit 2)

    def _cut_live(self, detail: str) -> None:
        """Finish the flows still open as mitmproxy stops: their clients are being cut off.
        They stay in the cassette marked incomplete (replayed as cut), with their chunks;
        hooks that fire for them later find nothing live and write nothing."""
        live, self.live = self.live, {}
        if self.cassette is None:
            return
        now = time.time()
        for it in live.values():
            self._end_body(None, it)  # what the redactors still hold belongs to the cut flow too
            self._end_frames(it)
            self.cassette.finish(it.iid, End.INCOMPLETE, detail, now - it.t0)
        self.recorded += len(live)
        self.cut_by_stop += len(live)

    def close(self) -> None:
        """Commit and close the cassette (compacted when this run recorded anything). Idempotent."""
        if self.cassette is None:
            return
        writer, self.cassette = self.cassette, None
        # Anything still live was cut by the shutdown; it stays marked incomplete (and
        # hooks that fire for it from now on find nothing to write to).
        self.live.clear()
        try:
            sizes = writer.close(compact=self.recorded > 0)
        except CassetteError as e:
            self.write_error = self.write_error or e
            raise
        if sizes:
            log.info("compacted %s: %s -> %s bytes", self.path, f"{sizes[0]:,}", f"{sizes[1]:,}")

    # -- HTTP ----------------------------------------------------------------

    def _write_failed(self, error: CassetteError) -> None:
        """From the writer thread, once: stop recording (see the module docstring)."""
        self.write_error = error
        if self.report_errors:  # under mitmdump / mitmweb: their log is where it shows
            log.error("%s; stopping", error)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(ctx.master.shutdown)

    def request(self, flow: http.HTTPFlow) -> None:
        if self.cassette is None or flow.metadata.get(REPLAYED):
            return
        if self.write_error is not None:
            flow.kill()  # it could not be recorded
            return
        r = flow.request
        # Redacted and built on the writer thread: the request goes upstream without waiting for it.
        what = (self.redactor, r.method, r.path, list(r.headers.items(multi=True)), r.raw_content or b"", r.scheme,
                r.host, r.port, r.timestamp_start, r.http_version)
        try:
            seq = self.cassette.begin_with(lambda _: _stored_request(*what))
        except CassetteError:
            flow.kill()  # the writer failed meanwhile
            return
        self.live[flow.id] = _Live(seq, r.timestamp_start)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        live = self.live.get(flow.id)
        if live is None or flow.response is None:
            return
        resp = flow.response
        is_ws = resp.status_code == 101
        live.ttfb = resp.timestamp_start - live.t0
        self.cassette.call(_store_response, self.redactor, live, resp.status_code, resp.reason,
                           list(resp.headers.items(multi=True)), is_ws)
        if is_ws:
            live.kind = Kind.WEBSOCKET
            return
        writer, t0 = self.cassette, live.t0

        def stream(data: bytes) -> bytes:
            # Per chunk, only what must be taken now (its time); the body's redactor runs on
            # the writer thread, which stores the chunks in order once they are scrubbed.
            if data and self.live.get(flow.id) is live:  # b"" marks the end; not live: cut by the stop
                live.body_bytes += len(data)
                writer.call(_store_chunk, writer, live, time.time() - t0, data)
                _bounded(live, writer, len(data))
            return data

        resp.stream = stream

    def _end_body(self, flow: http.HTTPFlow | None, live: _Live, complete: bool = False) -> None:
        """Store the chunks the body redactor still holds (on the writer thread, in order)."""
        if live.kind is Kind.HTTP and live.ttfb is not None:
            label = (flow.request.method, flow.request.path.partition("?")[0]) if flow else None
            self.cassette.call(_end_stored_body, self.redactor, live, label, complete)

    def _end_frames(self, live: _Live) -> None:
        """Store the messages the frame redactor still holds (on the writer thread, in order)."""
        if live.kind is Kind.WEBSOCKET:
            self.cassette.call(_end_stored_frames, live)

    async def response(self, flow: http.HTTPFlow) -> None:
        live = self.live.get(flow.id)
        if live is None or live.kind is Kind.WEBSOCKET:
            return
        del self.live[flow.id]
        self._end_body(flow, live, complete=True)
        end_t = flow.response.timestamp_end or time.time()
        self.cassette.finish(live.iid, End.COMPLETE, duration=end_t - live.t0)
        await self._done(flow, live, End.COMPLETE)

    async def error(self, flow: http.HTTPFlow) -> None:
        live = self.live.pop(flow.id, None)
        if live is None:
            return
        msg = self.redactor.text(flow.error.msg if flow.error else "unknown error")
        duration = time.time() - live.t0
        self._end_body(flow, live)
        self._end_frames(live)
        if live.kind is Kind.WEBSOCKET:
            self.cassette.finish(live.iid, End.UPSTREAM_CUT, msg, duration, Close(None, msg, None))
            end = End.UPSTREAM_CUT
        elif flow.response is None and "client disconnected" not in msg.lower():
            # Upstream unreachable (refused, TLS failure, ...): the client got mitmproxy's 502 page,
            # with these headers (mitmproxy.proxy.layers.http._http1.make_error_response).
            page = http.Response.make(
                502, _format_error(502, msg),
                {"Server": version.MITMPROXY, "Connection": "close", "Content-Type": "text/html"},
            )
            self.cassette.set_response(live.iid, Response(502, "Bad Gateway", list(page.headers.items(multi=True))), duration)
            self.cassette.add_chunk(live.iid, Chunk(duration, page.content or b""))
            end = End.UPSTREAM_ERROR
            self.cassette.finish(live.iid, end, msg, duration)
        elif "client disconnected" in msg.lower():
            end = End.CLIENT_GONE
            self.cassette.finish(live.iid, end, f"client gone after {live.body_bytes} bytes", duration)
        else:
            end = End.UPSTREAM_CUT
            self.cassette.finish(live.iid, end, f"upstream cut after {live.body_bytes} bytes: {msg}", duration)
        await self._done(flow, live, end)

    # -- WebSocket -----------------------------------------------------------

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        live = self.live.get(flow.id)
        if live is None or flow.websocket is None or live.kind is not Kind.WEBSOCKET:
            return
        msg = flow.websocket.messages[-1]
        live.frames_seen += 1
        direction = Direction.CLIENT if msg.from_client else Direction.SERVER
        # the Frame rides along as the tag; its payload is set when the redactor releases it
        tag = Frame(direction, msg.is_text, msg.timestamp - live.t0, b"")
        self.cassette.call(_store_message, self.cassette, live, tag, msg.content)
        _bounded(live, self.cassette, len(msg.content))

    async def websocket_end(self, flow: http.HTTPFlow) -> None:
        live = self.live.pop(flow.id, None)
        if live is None or flow.websocket is None:
            return
        self._end_frames(live)
        ws = flow.websocket
        by = Direction.CLIENT if ws.closed_by_client else Direction.SERVER if ws.closed_by_client is False else None
        code = ws.close_code
        abnormal = code in (None, 1006, 1015)  # no close frame: dropped, or a TLS failure
        close = Close(None if abnormal else code, self.redactor.text(ws.close_reason or ""), by)
        end = End.UPSTREAM_CUT if abnormal and by is Direction.SERVER else End.COMPLETE
        if abnormal and by is Direction.CLIENT:
            end = End.CLIENT_GONE
        self.cassette.finish(live.iid, end, "" if not abnormal else "no close frame", time.time() - live.t0, close)
        await self._done(flow, live, end)

    # -- reporting -----------------------------------------------------------

    async def _done(self, flow: http.HTTPFlow, live: _Live, end: End) -> None:
        """Count the interaction (its end is queued), wait until it is committed, report it.

        Counted before the wait: a stop that lands while the commit is awaited (the client
        already has the whole response) still commits the queued end when the writer
        closes, and the summary and ``serve --record-mode all`` must count it."""
        self.recorded += 1
        try:
            await _flushed(self.cassette)
        except CassetteError:
            # Not stored: the client must not see a clean end (the runner reports the error).
            self.recorded -= 1
            if flow.killable:
                flow.kill()
            return
        if self.on_recorded is not None:
            self.on_recorded({"n": self.recorded, "kind": live.kind.value, "method": flow.request.method,
                              "path": flow.request.path.split("?", 1)[0], "end": end.value,
                              "status": flow.response.status_code if flow.response else None,
                              "bytes": live.body_bytes, "frames": live.frames_seen})
        status = flow.response.status_code if flow.response else "---"
        what = f"{live.frames_seen} frames" if live.kind is Kind.WEBSOCKET else f"{live.body_bytes} bytes"
        log.debug("recorded #%d %s %s %s %s (%s, %s)", self.recorded, live.kind.value, flow.request.method,
                  self._path(flow), status, what, end.value)

    def _path(self, flow: http.HTTPFlow) -> str:
        """The request path for a log line: redacted, without the query (it may hold a key)."""
        return self.redactor.path(flow.request.path.partition("?")[0])


addons = [Recorder()]
