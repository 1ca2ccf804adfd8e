"""Replay engine: no I/O. Turns a request into what to send and when.

The ASGI players (``http.py``, ``websocket.py``) own clocks and the server adapter sockets; this module only
decides: which recording answers a request (via ``matching``), and the script of
(offset, action) steps that reproduces it. Offsets are seconds from the
request's arrival at recorded speed; the adapter divides by ``--speed``.

What may take long is split out so that the players can run it in a worker thread and
keep other streams on time: ``prepare`` (index all the recordings of a path) and
``diagnose`` (a miss's nearest recording and diff). ``http`` and ``handshake`` answer in
about a millisecond when asked with ``lazy=True``: they fingerprint a path's recordings
only as far as an exact match needs (``INLINE_SCAN``), and answer ``NotIndexedYet`` when
the request needs more (a weak or nearest match, a miss, an exact match far ahead): the
player then runs ``prepare`` in its worker thread and asks again without ``lazy``.

Injected faults (``faults.py``) change scripts, never the players' rules: a script may
carry real-time delays (not divided by ``--speed``), a byte rate, and a reset
(``Ending.RESET``) instead of a plain cut. The engine calls its fault plan, if any, on every match, and undoes the
match when a fault answered in the recording's place (the retry gets the recording).
"""

from __future__ import annotations

import enum
import gc
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..encoding import BodyTooLarge, DecodeError, decode_body
from ..headers import WS_HANDSHAKE, sendable
from ..matching import (CandidateSource, FrameCheck, ListSource, Match, MatchConfig, Matcher, Miss, NotIndexed,
                        compare_frame, fingerprint, request_key)
from ..model import Direction, End, Frame, Interaction, Request
from ..redaction import Redactor
from ..store.errors import CassetteError


class Ending(str, enum.Enum):
    """How a replayed HTTP response ends, after its last chunk."""

    COMPLETE = "complete"  # the body ends as its framing says
    CUT = "cut"  # the connection drops after the last chunk: the upstream cut it there
    HOLD = "hold"  # the connection stays as it is until the client leaves (at most until ``until``), then drops
    RESET = "reset"  # the connection is reset (TCP RST) after the last chunk: an injected fault


# The recorder notes a client leaving a little after it left; a replayed client that leaves
# when the recorded one did must still find the connection open. Recorded seconds.
HOLD_GRACE = 1.0


@dataclass(slots=True)
class HttpScript:
    status: int | None  # None: the recording has no response head, so nothing is sent
    headers: list[tuple[bytes, bytes]]
    ttfb: float
    chunks: list[tuple[float, bytes]]
    ending: Ending = Ending.COMPLETE
    until: float = 0.0  # HOLD: offset after which the connection is dropped
    seq: int | None = None
    # -- set by injected faults (faults.py) --
    # step -> real seconds added before it and every later step (-1: the headers, i: chunk i)
    delays: dict[int, float] = field(default_factory=dict)
    drip: float | None = None  # at most this many body bytes per second (real time, from the headers)
    release_if_gone: bool = False  # a client leaving before the end gives the recording back (for its retry)
    faults: tuple[str, ...] = ()  # the faults applied, for logs


@dataclass
class MissReply:
    miss: Miss
    status: int = 404

    def body(self) -> bytes:
        return json.dumps(self.miss.to_json(), indent=1).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", b"application/json"), (b"x-proxy-miss", self.miss.reason.encode())]


_SENDABLE_KEPT = 1024
_sendable_seen: dict[tuple, tuple] = {}


def _sendable(headers) -> list[tuple[bytes, bytes]]:
    # recordings of one exchange share their response headers more often than not
    key = tuple(headers)
    seen = _sendable_seen.get(key)
    if seen is None:
        if len(_sendable_seen) >= _SENDABLE_KEPT:
            _sendable_seen.clear()
        seen = _sendable_seen[key] = tuple(sendable(headers))
    return list(seen)


def http_script(it: Interaction) -> HttpScript:
    """What the client saw, to be seen again. An interaction with no response (the client
    gave up before the headers, or the recorder died) is held with nothing sent, as a
    stream the client cancelled is held after its chunks: until the client leaves, or the
    recorded duration (and a grace, when it was the client that left) passes."""
    resp = it.response
    chunks = [(c.offset, c.data) for c in it.chunks]
    if resp is not None and it.end in (End.COMPLETE, End.UPSTREAM_ERROR):
        ending, until = Ending.COMPLETE, 0.0
    elif resp is not None and it.end is End.UPSTREAM_CUT:
        ending, until = Ending.CUT, 0.0
    else:
        ending, until = Ending.HOLD, held_until(it)
    return HttpScript(resp.status if resp is not None else None, _sendable(resp.headers) if resp is not None else [],
                      it.ttfb or 0.0, chunks if resp is not None else [], ending, until, it.seq)


@dataclass
class NotIndexedYet:
    """What ``http`` and ``handshake`` answer with ``lazy`` when the request needs its path
    indexed first: ``prepare``, then pass this back as ``again``. It carries the request
    as normalized (decoded, redacted, fingerprinted: linear in the body's size, and not
    to be done twice on the event loop)."""

    normalized: tuple


# Recorded request bytes (plus matching.SCAN_COST per recording) a match may fingerprint on
# the event loop (100 KB took 2.4 ms here) before it hands the rest to ``prepare``: requests
# replayed in their recorded order scan one recording each (up to 63 KB), a swapped pair of
# small ones two. (At 128 KB, four 100 KB requests arriving at once fingerprinted one
# recording each on the event loop, and a stream played meanwhile once came 86 ms late.)
INLINE_SCAN = 64 * 2**10
FREEZE_FIRST = 4096

MATCH_LIMIT = 64 * 2**20  # decoded request bytes compared at most (a 9.6 KB zstd body can expand to 300 MB)
LARGE_BODY = 256 * 2**10  # a body this large (or encoded: it may expand) is matched in a worker thread
MEDIUM_BODY = 64 * 2**10  # ... and one this large while its path is not fully indexed (serve_http)


def large(req: Request) -> bool:
    """Whether ``Engine.http`` would take long for ``req``: decoding, redacting and
    fingerprinting a 50 MB body take seconds, which the event loop must not wait."""
    enc = (req.body_encoding or "").strip().lower()
    return len(req.body) > LARGE_BODY or enc not in ("", "identity")


# Normalized requests (redacted path, query, decoded and redacted body, fingerprint) kept
# by the request as received: a client sends the same request again and again (a poll,
# a retry, a load test), and normalizing it costs more than the rest of a small exchange.
# Normalizing is a pure function of the request, so a kept one is the one it would make.
NORMALIZED_KEPT = 512
NORMALIZED_BODY = 64 * 2**10  # larger bodies are not kept (their bytes would be)


# An index lives as long as its engine and holds no reference cycles: frozen out of the
# cyclic garbage collector's sight (gc.freeze), full collections no longer walk it (with
# 100k recordings indexed, those walks cost 60 us per request served); refcounting still
# frees it with the engine. gc.freeze() takes in every object of the process, though, so
# only a process that is ours alone (`proxy replay`) turns this on, not a test suite
# replaying in-process.
FREEZE_INDEXES = False


# Worker-thread work (indexing a path, diagnosing a miss) between two hand-overs of the GIL.
DIAGNOSE_EVERY = 0.0002  # a diagnosis compares a few large recordings: shorter stretches
INDEX_EVERY = 0.0005  # indexing: a sleep (50-100 us, far more under load) costs more than a small recording
_handed_over = threading.local()


def _hand_over_gil(every: float) -> None:
    # Called by a worker thread between recordings: a short sleep releases the GIL so the
    # event loop (playing other streams on time) never waits behind a whole index or
    # diagnosis. Once per ``every`` seconds of work, not per recording: one sleep per
    # recording made indexing 100k recordings take a minute, and the first match on a path
    # with 10,000 recordings take seconds.
    now = time.perf_counter()
    if now - getattr(_handed_over, "at", 0.0) >= every:
        time.sleep(0.00005)
        _handed_over.at = time.perf_counter()


def held_until(it: Interaction) -> float:
    """The offset until which a held interaction stays open: its recorded end."""
    last = max([it.ttfb or 0.0, *(c.offset for c in it.chunks), *(f.offset for f in it.frames)])
    end = max(last, it.duration or 0.0)
    return end + HOLD_GRACE if it.end is End.CLIENT_GONE else end


@dataclass
class Engine:
    """The replay state of one cassette: where its recordings come from and what has been
    consumed. ``interactions`` is a CandidateSource (a cassette's ``source()``: matched from
    its index, events read when matched) or the recordings themselves."""

    interactions: CandidateSource | Iterable[Interaction]
    config: MatchConfig = field(default_factory=MatchConfig)
    redactor: Redactor = field(default_factory=Redactor)
    faults: object = None  # a faults.FaultPlan: injected faults (it imports this module, so no type here)

    def __post_init__(self) -> None:
        if hasattr(self.interactions, "candidates"):
            self.source: CandidateSource = self.interactions
        else:
            self.interactions = list(self.interactions)
            self.source = ListSource(self.interactions)
        self.matcher = Matcher(self.source, self.config)
        self.misses: list[Miss] = []
        self.mismatches: list[str] = []  # WebSocket frames that did not match, as close reasons
        self.weak_frames: list[str] = []  # WebSocket frames served although their content differs
        self.failure: CassetteError | None = None  # the cassette turned out damaged
        self.on_failure = None  # called once with that error (the session stops on it)
        self._lent: dict[int | None, Match] = {}  # matches served under an injected delay, by seq
        self._lock = threading.Lock()
        self._normalized: dict[tuple, tuple] = {}  # see NORMALIZED_KEPT
        self._ready: set[tuple] = set()  # (method, path, query, cls) whose key is indexed
        self._freeze_at = FREEZE_FIRST  # recordings fingerprinted by matches when gc.freeze() is next due

    def normalize(self, req: Request) -> Request:
        """Apply the recorder's transformations to what matching compares, with the
        recorder's functions: path, query and body always (decoded by the shared codec
        and scrubbed, or the recorder's marker when it does not decode), headers only
        when the configuration matches on them."""
        return self._normalize(req)[0]

    def _normalize(self, req: Request) -> tuple[Request, str | None]:
        """The normalized request, and why its body cannot be compared (too large decoded)."""
        problem = None
        try:
            body = self.redactor.body(decode_body(req.body, req.body_encoding, MATCH_LIMIT))
        except BodyTooLarge:
            body = req.body
            problem = (f"the {req.body_encoding} request body decodes to more than {MATCH_LIMIT // 2**20} MB; "
                       "it is not compared with any recording")
        except DecodeError:
            body, _ = self.redactor.request_body(req.body, req.body_encoding)  # the recorder's marker
        headers = self.redactor.headers(req.headers) if self.config.match_headers else req.headers
        return Request(
            method=req.method,
            path=self.redactor.path(req.path),
            query=self.redactor.query(req.query),
            headers=headers,
            body=body,
            body_encoding=req.body_encoding,
            scheme=req.scheme,
            host=req.host,
            port=req.port,
        ), problem

    def normalized(self, req: Request) -> tuple:
        """(normalized request, why its body cannot be compared, its fingerprint, its HTTP
        key): what ``http`` matches by, a pure function of the request; kept for small
        requests (``NORMALIZED_KEPT``)."""
        kept = len(req.body) <= NORMALIZED_BODY
        if kept:
            key = (req.method, req.path, req.query, req.body, req.body_encoding, req.scheme, req.host, req.port,
                   tuple(req.headers))
            hit = self._normalized.get(key)
            if hit is not None:
                return hit
        norm, problem = self._normalize(req)
        out = (norm, problem, None if problem else fingerprint(norm.body, self.config.rules, keep_doc=True),
               request_key(norm))
        if kept and len(norm.body) <= NORMALIZED_BODY:  # small decoded too (a 2 KB gzip body can hold 2 MB)
            if len(self._normalized) >= NORMALIZED_KEPT:
                self._normalized.clear()
            self._normalized[key] = out
        return out

    def prepared(self, req: Request, cls: str | None = None) -> bool:
        ready = (req.method, req.path, req.query, cls)
        if ready in self._ready:
            return True  # an index is never dropped
        if self.matcher.prepared(self._keyed(req), cls):
            self._ready.add(ready)
            return True
        return False

    def prepare(self, req: Request, cls: str | None = None) -> None:
        """Index all the recordings of ``req``'s key (slow the first time; run it in a worker
        thread; ``http`` and ``handshake`` go on meanwhile). Damage found on the way is kept
        for ``http`` / ``handshake`` to report."""
        keyed = self._keyed(req)
        try:
            full = self.matcher.index(keyed, cls, pause=lambda: _hand_over_gil(INDEX_EVERY))
            with self._lock:
                self.matcher.install(keyed, cls, full)
        except CassetteError as e:
            with self._lock:
                self.failed(e, req)
        if FREEZE_INDEXES:
            gc.freeze()

    def _freeze_now_and_then(self) -> None:
        # What matches fingerprint as they go is kept out of the cyclic GC's sight too (see
        # prepare), each time it has doubled: the freezes cost nothing per request. Only
        # where FREEZE_INDEXES allows it (a test suite's objects must not be pinned).
        if FREEZE_INDEXES and self.matcher.scanned >= self._freeze_at:
            gc.freeze()
            self._freeze_at = 2 * self.matcher.scanned

    def _keyed(self, req: Request) -> Request:
        return Request(req.method, self.redactor.path(req.path), self.redactor.query(req.query), req.headers)

    def http(self, req: Request | None, lazy: bool = False, again: NotIndexedYet | None = None,
             normalized: tuple | None = None) -> HttpScript | MissReply | NotIndexedYet:
        """The script for a request, or a miss still to be diagnosed (``diagnose``); with
        ``lazy``, ``NotIndexedYet`` instead of indexing the path here: ``prepare``, then
        ask again with it as ``again``. ``normalized``: ``normalized(req)``, which the
        caller has already (then ``req`` may be None).
        Decoding, redacting and fingerprinting the body are linear in its size and done
        before taking the lock: a large body may be handed over in a worker thread
        (``large``) without holding up other requests."""
        if normalized is None:
            normalized = again.normalized if again is not None else self.normalized(req)
        req, problem, fq, key = normalized
        with self._lock:
            try:
                result = self._too_large(req, problem) if problem else self.matcher.match(
                    req, None, False, fq, INLINE_SCAN if lazy else None, key)  # positional: this runs per request
                if FREEZE_INDEXES and self.matcher.scanned >= self._freeze_at:
                    self._freeze_now_and_then()
                if type(result) is Match:
                    script = http_script(self._full(result.interaction))
                    return self._fault_http(req, result, script) if self.faults is not None else script
            except NotIndexed:
                return NotIndexedYet(normalized)
            except CassetteError as e:
                return MissReply(self.failed(e, req), status=500)
            self.misses.append(result)
        return MissReply(result)

    def _fault_http(self, req: Request, match: Match, script: HttpScript) -> HttpScript:
        self.faults.recordings = self.source
        script, release = self.faults.http(req, match.interaction, script)
        if release:
            self.matcher.release(match)
        elif script.release_if_gone:
            self._lent[match.seq] = match
        return script

    @staticmethod
    def _too_large(req: Request, problem: str) -> Miss:
        target = f"{req.method.upper()} {req.path}"
        return Miss(target, "body_too_large", f"{target}: {problem}", diagnosed=True)

    def handshake(self, req: Request, lazy: bool = False,
                  again: NotIndexedYet | None = None) -> Match | Miss | NotIndexedYet:
        """Match a WebSocket handshake: a recorded session (reserved until the first
        client frame binds it, see ``bind``), or a recorded refusal (or one an injected
        fault made up). A session faults will play on is kept for its connection (no bind).
        ``lazy`` and ``again`` as for ``http``."""
        normalized = again.normalized if again is not None else self._normalize(req)
        req, problem = normalized
        with self._lock:
            try:
                result = self._too_large(req, problem) if problem else self.matcher.match(
                    req, "ws", diagnose=False, budget=INLINE_SCAN if lazy else None)
                self._freeze_now_and_then()
                if isinstance(result, Match):
                    self._full(result.interaction)
            except NotIndexed:
                return NotIndexedYet(normalized)
            except CassetteError as e:
                return self.failed(e, req)
            if self.faults is not None:
                self.faults.recordings = self.source
                answer, what = self.faults.handshake(req, result)
                if what == "release":
                    self.matcher.release(result)
                elif what == "keep":
                    self.matcher.settle(result)
                    self._lent[result.seq] = result
                result = answer
            if isinstance(result, Miss):
                self.misses.append(result)
            return result

    def release(self, seq: int | None) -> None:
        """Give recording ``seq`` back: its client left during an injected delay."""
        with self._lock:
            match = self._lent.pop(seq, None)
            if match is not None:
                self.matcher.release(match)

    def bind(self, match: Match, frame: bytes) -> Match:
        """The connection's first client frame decides which of the sessions with this
        handshake it replays (``Matcher.bind``); ``match.interaction`` may change. Damage
        found reading the candidates' frames keeps the reserved session."""
        with self._lock:
            try:
                return self.matcher.bind(match, self.redactor.data(frame))
            except CassetteError as e:
                self.failed(e)
                return match

    def failed(self, error: CassetteError, req: Request | None = None) -> Miss:
        """The cassette is damaged: never serve from it again; say so to the client."""
        first = self.failure is None
        self.failure = self.failure or error
        if first and self.on_failure is not None:
            self.on_failure(error)
        target = f"{req.method.upper()} {req.target}" if req else ""
        return Miss(target, "cassette_damaged", str(self.failure), diagnosed=True)

    def _full(self, it: Interaction) -> Interaction:
        # Events are loaded once, even when an injected fault gives a recording back.
        if self.failure is not None:
            raise self.failure
        return self.matcher.load(it)

    def settle(self, match: Match) -> None:
        with self._lock:
            self.matcher.settle(match)

    def diagnose(self, miss: Miss) -> Miss:
        """Fill in a miss's nearest recording and diff. Only reads; run it in a worker thread."""
        try:
            return self.matcher.diagnose(miss, pause=lambda: _hand_over_gil(DIAGNOSE_EVERY))
        except CassetteError as e:  # the diagnosis read a damaged row: the miss stays as it is
            with self._lock:
                self.failed(e)
            return miss

    def check_frame(self, script: "WsScript", turn: int, payload: bytes, is_text: bool) -> FrameCheck:
        """Compare a client frame with the recording; a weak one served is noted for the summary."""
        check = script.check(turn, payload, is_text)
        # the first frame's differences are the session's match (``bind``): counted there
        if check.ok and check.weak and turn > 0:
            paths = ", ".join(f"`{d.path}`" for d in check.differences if not d.volatile)
            with self._lock:
                self.weak_frames.append(f"#{script.seq} frame {turn + 1} served although {paths or 'it'} differs")
        return check

    def report(self) -> dict:
        """Counts and one-line notes of matches out of recorded order and weak matches."""
        r = self.matcher.report()
        r["weak_frames"] = list(self.weak_frames)
        return r

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    @property
    def served(self) -> int:
        return self.matcher.served

    def unused(self) -> list[Interaction]:
        return self.matcher.unused()

    def ws_script(self, it: Interaction) -> "WsScript":
        script = ws_script(it, self.config)
        if self.faults is not None:
            with self._lock:
                script = self.faults.ws(it, script)
        return script


# -- WebSocket ----------------------------------------------------------------


@dataclass
class Turn:
    """A recorded client frame and the server frames recorded after it.

    ``replies`` offsets are relative to the client frame's recorded offset, so they
    are replayed relative to the replayed frame's arrival.
    """

    expected: Frame
    replies: list[tuple[float, Frame]]
    lags: list[float] = field(default_factory=list)  # per reply: real seconds added (injected stalls); empty: none


@dataclass(frozen=True)
class WsEnding:
    """How a replayed session ends once its last recorded client frame is answered.

    ``close``: a close frame (``code`` None: one without a status, which the peer reads
    as 1005); ``drop``: the connection is dropped without a close frame (the recording
    ended abnormally: 1006, 1015, or no end at all); ``wait``: the client ended it, so
    nothing is sent. ``after`` is in recorded seconds from the last anchor (the
    handshake, or the last client frame); a ``wait`` with an ``after`` drops the
    connection then, if the client is still there (the recorded client dropped it).
    """

    kind: str  # close | drop | wait
    after: float | None = None
    code: int | None = None
    reason: str = ""


# Close codes no endpoint sends: they name a connection that ended without a close frame.
ABNORMAL_CODES = frozenset({1006, 1015})
NO_STATUS = 1005  # the close frame had no status code


@dataclass
class WsScript:
    seq: int | None
    accept_delay: float
    headers: list[tuple[bytes, bytes]]
    subprotocol: str | None
    deflate: bool  # the recorded handshake negotiated permessage-deflate
    preamble: list[tuple[float, Frame]]  # server frames before any client frame, offsets from the handshake
    turns: list[Turn]
    ending: WsEnding
    config: MatchConfig
    # -- set by injected faults (faults.py): real seconds, not divided by --speed --
    accept_lag: float = 0.0  # added to the accept delay
    preamble_lags: list[float] = field(default_factory=list)  # per preamble frame; empty: none
    end_lag: float = 0.0  # added to the end (close or drop)
    release_if_gone: bool = False  # a client gone before the end (during an injected delay) gives the session back
    faults: tuple[str, ...] = ()
    cut_short: bool = False  # an injected close or drop dropped the turns after it: later client frames pass unanswered

    def lag(self, lags: list[float], i: int) -> float:
        return lags[i] if i < len(lags) else 0.0

    def check(self, turn: int, payload: bytes, is_text: bool) -> FrameCheck:
        """A client frame compared with the recorded one: ok or why not, and the JSON
        paths and values that differ (``matching.compare_frame``)."""
        exp = self.turns[turn].expected
        return compare_frame(turn, exp.payload, exp.is_text, payload, is_text, self.config)


def ws_ending(it: Interaction, anchor: float) -> WsEnding:
    end = max([it.duration or 0.0, *(f.offset for f in it.frames), anchor])
    after = max(0.0, end - anchor)
    close = it.close
    abnormal = close is None or close.code is None or close.code in ABNORMAL_CODES
    if close is not None and close.by is Direction.CLIENT:
        # A client's close frame ends it when the client sends one; a client that dropped
        # the connection is waited for, as long as the recording lasted.
        return WsEnding("wait", after + HOLD_GRACE if abnormal else None)
    if abnormal:
        return WsEnding("drop", after)
    if close.code == NO_STATUS:
        return WsEnding("close", after, None, "")
    return WsEnding("close", after, close.code, close.reason)


def ws_script(it: Interaction, config: MatchConfig) -> WsScript:
    resp = it.response
    headers = sendable(resp.headers if resp else [], WS_HANDSHAKE)
    subprotocol = resp.header("sec-websocket-protocol") if resp else None
    extensions = (resp.header("sec-websocket-extensions") or "") if resp else ""
    preamble: list[tuple[float, Frame]] = []
    turns: list[Turn] = []
    for f in it.frames:
        if f.direction is Direction.CLIENT:
            turns.append(Turn(f, []))
        elif turns:
            turns[-1].replies.append((f.offset - turns[-1].expected.offset, f))
        else:
            preamble.append((f.offset, f))
    anchor = turns[-1].expected.offset if turns else 0.0
    return WsScript(
        seq=it.seq,
        accept_delay=it.ttfb or 0.0,
        headers=headers,
        subprotocol=subprotocol,
        deflate="permessage-deflate" in extensions.lower(),
        preamble=preamble,
        turns=turns,
        ending=ws_ending(it, anchor),
        config=config,
    )
