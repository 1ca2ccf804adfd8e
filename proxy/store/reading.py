"""Reading a cassette: open read-only in constant time, read rows when they are asked for.

Opening reads the schema and the meta table and nothing else (plus SQLite's quick_check
on small files). Every later read checks what it reads: SQLite damage and blobs that
fail their check (``packed.py``) raise CassetteCorrupt naming the file and the
interaction, never an empty or partial result.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from types import SimpleNamespace
from collections.abc import Iterator
from pathlib import Path

import orjson

from ..model import Close, Direction, End, Interaction, Kind, Request, Response
from . import opening, schema
from .errors import CassetteCorrupt, CassetteError
from .packed import SMALL_BLOB, SMALL_CONTENT, SMALL_KEPT, Blobs, Damaged, events_into, unpack_events

# One interaction row with its request body, as _build() reads it.
ROW = ('i.seq, i.kind, i.method, i.scheme, i.host, i.port, i.path, i.query, i.started_at, i.request_headers,'
       ' i.request_content_encoding, i.status, i.reason, i.response_headers, i.ttfb, i.duration, i."end",'
       ' i.end_detail, i.close_code, i.close_reason, i.closed_by, b.data, i.event_count, i.request_bytes')
FROM = "interactions i LEFT JOIN request_bodies b ON b.seq = i.seq"
FROM_EVENTS = FROM + " LEFT JOIN events e ON e.seq = i.seq AND e.part = 0"

# The type each column of ROW must have (SQLite stores any type anywhere: a damaged
# record can turn a path into a number). None means NULL is allowed too.
_S, _I, _R, _B = (str,), (int,), (float, int), (bytes,)
_N = (type(None),)
_R_N = _R + _N
ROW_TYPES = (_I, _S, _S, _S, _S, _I, _S, _S, _R, _S, _S + _N, _I + _N, _S + _N, _S + _N, _R + _N, _R + _N, _S, _S,
             _I + _N, _S + _N, _S + _N, _B + _N, _I, _I, _S + _N)
# ROW and, where the file has the column (schema.OPTIONAL), the client's HTTP version.
ROW_FULL = ROW + ", i.http_version"
# A column to follow ROW (``_build(r, events=True)``): the stored events of a recording with
# at most ? events and ? bytes of server data, stored in at most ? bytes (client frames are no
# server data: a session of a few large frames sent is not small), when they are one part (a
# finished recording's are), else NULL. One query then reads a small exchange whole: a second query per
# recording for its events cost as much as its row. FROM_EVENTS is FROM for it (a join:
# half the cost of a subquery per row).
SMALL_EVENTS_OPEN = 16 * 2**10  # ... and whose events, open, are at most this many bytes (_build checks)
SMALL_EVENTS = "CASE WHEN i.event_count <= ? AND i.body_bytes <= ? AND length(e.data) <= ? THEN e.data END"

SUMMARY = ("seq", "kind", "started_at", "method", "path", "query", "status", "ttfb", "duration", "end", "end_detail",
           "event_count", "body_bytes", "close_code", "scheme", "host", "port")
SUMMARY_TYPES = (_I, _S, _R, _S, _S, _S, _I + _N, _R + _N, _R + _N, _S, _S, _I, _I, _I + _N, _S, _S, _I)


class CassetteReader:
    """A cassette file open for reading (``store.Cassette`` is the way in)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, meta: dict[str, str]):
        self.path = path
        self.meta = meta
        self._conn = conn
        self._blobs = Blobs(self._dictionary)
        self._events_seen: dict[bytes, tuple[list, list]] = {}  # see _events_into
        self._last_built: tuple | None = None  # (row, interaction, chunks, frames) of the last _build with events
        have = {r[1] for r in conn.execute("PRAGMA table_info(interactions)")}
        self.has_http_version = "http_version" in have
        self._row = ROW_FULL if self.has_http_version else ROW

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> "CassetteReader":
        """Open and validate an existing cassette, read-only. Reading never changes the file;
        a file of an older schema is refused with the command that upgrades it."""
        path = Path(path)
        conn = opening.open_read(path)
        try:
            opening.check_integrity(conn, path)
            _, meta = schema.validate(conn, path)
        except CassetteError:
            conn.close()
            raise
        except opening.DAMAGE as e:
            conn.close()
            raise CassetteCorrupt(path, f"damaged SQLite file ({e})") from None
        return cls(path, conn, meta)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "CassetteReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self.meta["schema_version"])

    # -- reading --------------------------------------------------------------

    def _read(self, sql: str, args=()) -> sqlite3.Cursor:
        """Every read goes through here: damage found while reading is a CassetteCorrupt."""
        try:
            return self._conn.execute(sql, args)
        except opening.DAMAGE as e:
            raise CassetteCorrupt(self.path, f"damaged SQLite file ({e})") from None

    def _rows(self, cursor: sqlite3.Cursor) -> Iterator[tuple]:
        # not `yield from`: closing this generator must not close (or touch) the cursor
        while True:
            try:
                row = next(cursor)
            except StopIteration:
                return
            except opening.DAMAGE as e:
                raise CassetteCorrupt(self.path, f"damaged SQLite file ({e})") from None
            yield row

    def count(self) -> int:
        return self._read("SELECT count(*) FROM interactions").fetchone()[0]

    def last_seq(self) -> int:
        return self._read("SELECT coalesce(max(seq), 0) FROM interactions").fetchone()[0]

    def origins(self, limit: int = 2) -> list[tuple]:
        """Distinct (scheme, host, port) the interactions were sent to, at most ``limit``."""
        return [tuple(r) for r in self._read("SELECT DISTINCT scheme, host, port FROM interactions LIMIT ?", (limit,))]

    def summaries(self) -> Iterator[dict]:
        """One dict per interaction in recorded order, without headers or bodies; streamed
        from the file, so the first rows come at once whatever the cassette's size."""
        cols = ", ".join(f'"{c}"' for c in SUMMARY)
        for r in self._rows(self._read(f"SELECT {cols} FROM interactions ORDER BY seq")):
            for name, value, types in zip(SUMMARY, r, SUMMARY_TYPES):
                if type(value) not in types:
                    raise CassetteCorrupt(self.path, f"interaction {r[0]}: damaged row ({name} is a "
                                                     f"{type(value).__name__})")
            yield dict(zip(SUMMARY, r))

    def interactions(self, with_events: bool = True) -> Iterator[Interaction]:
        """Every interaction in recorded order, streamed. ``with_events=False`` leaves chunks
        and frames out: :meth:`load_events` reads (and checks) them when they are wanted."""
        rows = self._rows(self._read(f"SELECT {self._row} FROM {FROM} ORDER BY i.seq"))
        if not with_events:
            for r in rows:
                yield self._build(r)
            return
        parts = self._rows(self._read("SELECT seq, data FROM events ORDER BY seq, part"))
        pending = next(parts, None)
        for r in rows:
            it = self._build(r)
            while pending is not None and (type(pending[0]) is not int or pending[0] < it.seq):
                pending = next(parts, None)  # parts of no interaction: ignored, as by load_events
            while pending is not None and pending[0] == it.seq:
                self._events_into(it, pending[1])
                pending = next(parts, None)
            self._check_count(it, r[22])
            yield it

    def verify(self, stop: threading.Event | None = None) -> int:
        """Read and check every row and blob (O(file), unlike opening); returns how many
        interactions there are, or -1 if ``stop`` was set first. Raises CassetteCorrupt at
        the first damage. Replay runs this beside serving, so that a damaged cassette
        stops it with exit code 2 even where no request reads the damaged part."""
        n = 0
        for _ in self.interactions():
            n += 1
            # with a stop event (a check beside serving): a short pause now and then hands
            # the GIL to the thread that serves, so the check costs replay no latency
            if stop is not None and n % 256 == 0 and stop.wait(0.001):
                return -1
        # Last, SQLite's own full check: quick_check (at open, on small files) does not
        # compare indexes with their tables, and a damaged key index serves the wrong
        # recordings without a single undecodable blob. sqlite3 releases the GIL meanwhile.
        try:
            problems = [r[0] for r in self._conn.execute("PRAGMA integrity_check(3)")]
        except sqlite3.DatabaseError as e:
            raise CassetteCorrupt(self.path, f"damaged SQLite file ({e})") from None
        if problems != ["ok"]:
            raise CassetteCorrupt(self.path, f"damaged SQLite file ({'; '.join(problems)})")
        return n

    def get(self, seq: int) -> Interaction:
        row = self._read(f"SELECT {self._row} FROM {FROM} WHERE i.seq = ?", (seq,)).fetchone()
        if row is None:
            raise KeyError(seq)
        return self.load_events(self._build(row))

    def load_events(self, it: Interaction) -> Interaction:
        """Fill in the chunks and frames of an interaction read without them (checked now)."""
        it.chunks, it.frames = [], []
        for (data,) in self._rows(self._read("SELECT data FROM events WHERE seq = ? ORDER BY part", (it.seq,))):
            self._events_into(it, data)
        row = self._read("SELECT event_count FROM interactions WHERE seq = ?", (it.seq,)).fetchone()
        self._check_count(it, row[0] if row is not None else None)
        return it

    def load_events_many(self, its: dict[int, Interaction], first: int, most: int,
                         most_bytes: int = 64 * 2**10) -> set[int]:
        """``load_events`` for several interactions (by seq) in one query: ``first``, and
        the others that have at most ``most`` events and ``most_bytes`` bytes of server
        data; returns the seqs filled. One whose
        events are damaged is left out (``load_events`` on it raises)."""
        if not its:
            return set()
        lo, hi = min(its), max(its)
        parts: dict[int, list] = {}
        counts: dict[int, object] = {}
        sql = ("SELECT i.seq, i.event_count, e.data FROM interactions i LEFT JOIN events e ON e.seq = i.seq "
               "WHERE i.seq BETWEEN ? AND ? AND (i.seq = ? OR (i.event_count <= ? AND i.body_bytes <= ?)) "
               "ORDER BY i.seq, e.part")
        for seq, count, data in self._rows(self._read(sql, (lo, hi, first, most, most_bytes))):
            if seq in its:
                counts[seq] = count
                if data is not None:
                    parts.setdefault(seq, []).append(data)
        filled = set()
        for seq, count in counts.items():
            it = its[seq]
            try:
                it.chunks, it.frames = [], []
                for data in parts.get(seq, ()):
                    self._events_into(it, data)
                self._check_count(it, count)
            except CassetteCorrupt:
                it.chunks, it.frames = [], []
                continue
            filled.add(seq)
        return filled

    def _check_count(self, it: Interaction, count) -> None:
        # the row counts its events (updated with every part written): a lost events row,
        # or a part of one, is damage, never a shorter or empty response
        if count != len(it.chunks) + len(it.frames):
            raise CassetteCorrupt(self.path, f"interaction {it.seq}: damaged events ({len(it.chunks) + len(it.frames)}"
                                             f" stored, the row counts {count})")

    # -- building model objects ---------------------------------------------------

    def _events_into(self, it: Interaction, blob: bytes) -> None:
        try:
            if type(blob) is not bytes:
                raise Damaged(f"a {type(blob).__name__} where a blob belongs")
            if len(blob) > SMALL_BLOB:
                events_into(it, unpack_events(self._blobs.unpack(blob)))
                return
            # A small part's events, made once per distinct stored bytes: recordings of one
            # exchange repeat them. The Chunk and Frame objects are shared (never changed).
            # Kept only when small once open too (SMALL_CONTENT): a 2 KB blob can hold megabytes.
            seen = self._events_seen.get(blob)
            if seen is None:
                content = self._blobs.unpack(blob)
                made = events_into(SimpleNamespace(chunks=[], frames=[]), unpack_events(content))
                seen = (made.chunks, made.frames)
                if len(content) <= SMALL_CONTENT:
                    if len(self._events_seen) >= SMALL_KEPT:
                        self._events_seen.clear()
                    self._events_seen[blob] = seen
            it.chunks += seen[0]
            it.frames += seen[1]
        except Damaged as e:
            raise CassetteCorrupt(self.path, f"interaction {it.seq}: damaged events ({e})") from None

    def _dictionary(self, dict_id: int) -> bytes | None:
        row = self._read("SELECT data FROM dictionaries WHERE id = ?", (dict_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def _build(self, r: tuple, events: bool = False) -> Interaction:
        """The interaction of row ``r`` (ROW, then the HTTP version if the row has it, or with
        ``events``, SMALL_EVENTS instead: its chunks and frames are filled in when that column
        holds them all, undamaged; else left for ``load_events``, which checks them).
        Replay reads a row per request: what repeats (types checked, headers parsed, events
        made) is looked up here, and the functions that make it are called only when new.
        With ``events`` (the replay source's rows), a row that repeats the one before but for
        its seq and times (the Nth recording of one exchange) shares that one's request,
        response and events; a column equal by value but of another type (443.0 for 443) is
        then not told apart here, as it is by ``verify``, which replay runs on every row."""
        seq = r[0]
        last = self._last_built
        if (events and last is not None and r[1:8] == last[0][1:8] and r[9:14] == last[0][9:14]
                and r[16:] == last[0][16:] and type(seq) is int and type(r[8]) in _R
                and type(r[14]) in _R_N and type(r[15]) in _R_N):
            # The same exchange as the row before (the Nth recording of a repeated request): its
            # request, response and events are shared, not made again (replay changes none of them)
            it = last[1]
            return Interaction(it.kind, it.request, it.response, list(last[2]), list(last[3]), r[14], r[15], it.end,
                               it.end_detail, it.close, r[8], seq, seq)
        try:
            if tuple(map(type, r)) not in (_EVENTS_SIGNATURES if events else _ROW_SIGNATURES):
                _check_types(r, events)
            body = self._blobs.unpack(r[21]) if r[21] is not None else b""
            if len(body) != r[23]:  # a lost request_bodies row is damage, not an empty body
                raise Damaged(f"{len(body)} bytes stored, the row counts {r[23]}")
            headers = _headers_seen.get(r[9])
            # positional arguments: half the cost of keywords, and this runs per row read
            req = Request(r[2], r[6], r[7], list(headers) if headers is not None else _headers(r[9]), body, r[10],
                          r[3], r[4], r[5], (r[24] or "") if len(r) > 24 and not events else "")
            if r[11] is None:
                resp = None
            else:
                headers = _headers_seen.get(r[13])
                resp = Response(r[11], r[12] or "", list(headers) if headers is not None else _headers(r[13]))
            seen = self._events_seen.get(r[24]) if events and r[24] is not None else None
            if seen is not None and r[22] == len(seen[0]) + len(seen[1]):  # (_events_into's, kept)
                chunks, frames = list(seen[0]), list(seen[1])
            else:
                chunks, frames = [], []
            it = Interaction(_KINDS.get(r[1]) or Kind(r[1]), req, resp, chunks, frames, r[14], r[15],
                             _ENDS.get(r[16]) or End(r[16]), r[17], None, r[8], seq, seq)
            if r[18] is not None or r[19] is not None or r[20] is not None:
                it.close = Close(r[18], r[19] or "", Direction(r[20]) if r[20] else None)
        except Damaged as e:
            raise CassetteCorrupt(self.path, f"interaction {seq}: damaged request body ({e})") from None
        except (ValueError, TypeError) as e:
            raise CassetteCorrupt(self.path, f"interaction {seq}: damaged row ({e})") from None
        if events and seen is None and r[24] is not None:
            try:
                self._events_into(it, r[24])
                self._check_count(it, r[22])
                # few bytes stored can open to megabytes (a repeated byte compresses 1000:1): a
                # candidate keeps its events only if they are small open too
                if sum(len(c.data) for c in it.chunks) + sum(len(f.payload) for f in it.frames) > SMALL_EVENTS_OPEN:
                    it.chunks, it.frames = [], []
            except CassetteCorrupt:  # damaged, or not all of them: load_events reads (and checks) them
                it.chunks, it.frames = [], []
        if events:
            self._last_built = (r, it, tuple(it.chunks), tuple(it.frames))
        return it


_ROW_SIGNATURES: set[tuple[type, ...]] = set()  # the column types of rows checked already
_EVENTS_SIGNATURES: set[tuple[type, ...]] = set()  # ... of rows with SMALL_EVENTS last


def _check_types(r: tuple, events: bool = False) -> None:
    # A cassette's rows have a handful of type signatures: each is checked once (indexing a
    # path reads every recording of it: 10,000 rows x 24 columns), _build looks it up first.
    # SMALL_EVENTS is not checked here: _events_into checks what it reads.
    signature = tuple(map(type, r))
    checked = _EVENTS_SIGNATURES if events else _ROW_SIGNATURES
    if signature in checked:
        return
    for value, types in zip(r, ROW_TYPES[:-1] if events else ROW_TYPES):
        if type(value) not in types:
            raise TypeError(f"a {type(value).__name__} in a column of {'/'.join(t.__name__ for t in types)}")
    if len(signature) >= len(ROW_TYPES) - 1:  # with or without the optional last column
        checked.add(signature)


_KINDS = {k.value: k for k in Kind}  # a dict lookup: Kind(value) costs a call into enum per row
_ENDS = {e.value: e for e in End}

# Header lists by their stored text: a cassette repeats the same request headers in every
# row, and often the same response headers. Each row gets its own list (callers may change it),
# but for the replay source's repeated rows (see _build), which share their request and response.
_HEADERS_KEPT = 4096
_headers_seen: dict[str, tuple] = {}


def _headers(text: str | None) -> list[tuple[str, str]]:
    if text is None:
        return []
    seen = _headers_seen.get(text)
    if seen is None:
        seen = tuple(_parse_headers(text))
        if len(_headers_seen) >= _HEADERS_KEPT:
            _headers_seen.clear()
        _headers_seen[text] = seen
    return list(seen)


def _parse_headers(text: str) -> list[tuple[str, str]]:
    try:
        pairs = orjson.loads(text)  # 3x json's speed; it refuses some text json reads (lone surrogates)
    except orjson.JSONDecodeError:
        pairs = json.loads(text)
    if type(pairs) is not list:
        raise ValueError("headers are not a JSON list of [name, value] pairs")
    out = []
    for p in pairs:  # a plain loop: twice as fast as all() over a generator, and this runs per recording
        if type(p) is not list or len(p) != 2 or type(p[0]) is not str or type(p[1]) is not str:
            raise ValueError("headers are not a JSON list of [name, value] pairs")
        out.append((p[0], p[1]))
    return out
