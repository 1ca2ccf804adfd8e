"""Writing a cassette: one writer at a time, every byte written once (or close to it),
failures raised, never hidden.

Lifecycle. Opening for writing takes the writer's lock (``opening.WriterLock``), switches
the file to WAL mode with synchronous=NORMAL (each commit survives a killed process) and
makes one small write, so a read-only file or directory or a full disk is found before
any traffic is accepted. :meth:`WritableCassette.close` checkpoints the WAL and returns
the file to rollback-journal mode: after a clean close the cassette is one
self-contained file, with no ``-wal`` or ``-shm`` beside it, that readers can open on
a read-only mount.

Steps. ``insert`` writes an interaction's row as it starts (end = incomplete);
``set_response`` its response head; ``add_chunk`` / ``add_frame`` queue events, which go
to the file as one part per interaction per transaction; ``finish`` writes the end and
folds the parts into one (``packed.py``). The steps do not commit: run them inside
``with cassette.transaction():``; the recorder does so through ``writer.CassetteWriter``,
which batches many steps into one transaction. A transaction that fails is rolled back
and raised; the caller must treat the cassette as broken from then on.

Compaction (``compaction.py``) is the only step that rewrites stored blobs, and it runs
once in a cassette's life: when a dictionary is first trained.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from ..matching import request_key
from ..model import Chunk, Close, End, Frame, Interaction, Kind, Response
from . import opening, schema
from .compaction import compact as run_compaction
from .errors import CassetteCorrupt, CassetteError, CassetteWriteFailed
from .packed import Event, chunk_event, frame_event, is_server_data, pack_events, unpack_events
from .reading import CassetteReader

TOOL = "proxy 0.1.0"


class WritableCassette(CassetteReader):
    """A cassette open for appending. One per file at a time, across processes."""

    def __init__(self, path: Path, conn: sqlite3.Connection, meta: dict[str, str], lock: opening.WriterLock):
        super().__init__(path, conn, meta)
        self._lock = lock
        self._next_seq = self.last_seq() + 1
        self._pending: dict[int, list[Event]] = {}  # events not yet written, by seq
        self._parts: dict[int, int] = {}  # next part number, by seq of interactions in flight
        self._counts: dict[int, list[int]] = {}  # [event_count, body_bytes], by seq in flight
        self._in_transaction = False
        self._closed = False
        row = self._read("SELECT data FROM dictionaries LIMIT 1").fetchone()  # there is at most one
        if row is not None:
            self._blobs.use_dictionary(bytes(row[0]))

    # -- opening -------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, **meta: str) -> "WritableCassette":
        """Create a new cassette; the file must not exist."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise opening.not_writable(path, e) from None
        lock = opening.WriterLock.acquire(path)
        try:
            if path.exists():
                raise CassetteError(path, "already exists")
            full = {"created_at": _now_iso(), "tool": TOOL, **{k: str(v) for k, v in meta.items()}}
            conn = cls._connect(path, create=True)
            try:
                conn.execute(f"PRAGMA page_size = {schema.PAGE_SIZE}")  # must precede WAL mode
                _durable(conn)
                conn.execute("BEGIN IMMEDIATE")
                schema.create(conn, full)
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                conn.close()
                _remove(path)
                raise opening.not_writable(path, e) from None
        except BaseException:
            lock.release()
            raise
        return cls(path, conn, dict(full, schema_version=str(schema.SCHEMA_VERSION)), lock)

    @classmethod
    def open_for_writing(cls, path: str | os.PathLike) -> "WritableCassette":
        """Open an existing cassette to append to it: validated, locked, and shown to be writable."""
        path = Path(path)
        opening.check_path(path)
        lock = opening.WriterLock.acquire(path)  # first: a file being created is not damaged
        try:
            conn = cls._connect(path, create=False)
            try:
                opening.check_integrity(conn, path)
                _, meta = schema.validate(conn, path)
                _durable(conn)
                conn.execute("BEGIN IMMEDIATE")  # a write lock, and a page written: the probe
                conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
                conn.execute("COMMIT")
            except CassetteError:
                conn.close()
                raise
            except sqlite3.OperationalError as e:
                conn.close()
                raise opening.not_writable(path, e) from None
            except opening.DAMAGE as e:
                conn.close()
                raise CassetteCorrupt(path, f"damaged SQLite file ({e})") from None
            return cls(path, conn, meta, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, **meta: str) -> "WritableCassette":
        if Path(path).exists():
            return cls.open_for_writing(path)
        return cls.create(path, **meta)

    @staticmethod
    def _connect(path: Path, create: bool) -> sqlite3.Connection:
        try:
            if create:
                return opening.connect(path, read_only=None)
            conn = opening.connect(path, read_only=False)
        except sqlite3.OperationalError as e:
            raise opening.not_writable(path, e) from None
        try:
            opening.first_read(conn, path)
        except sqlite3.OperationalError as e:
            conn.close()
            raise opening.not_writable(path, e) from None
        return conn

    def close(self, compact: bool = False) -> tuple[int, int] | None:
        """Close; with ``compact``, first train the dictionary if it is time (see
        ``compaction.py``). Returns (bytes before, bytes after) of a compaction that ran."""
        if self._closed:
            return None
        self._closed = True
        sizes = None
        try:
            if compact:
                sizes = run_compaction(self)
            # one self-contained file: the WAL folded in and removed
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error:
            pass  # another connection still reads it (it keeps WAL mode), or the disk failed: data is committed
        finally:
            self._conn.close()
            self._lock.release()
        return sizes

    def compact(self) -> tuple[int, int]:
        """Train the dictionary now if it is time; (bytes before, bytes after)."""
        return run_compaction(self) or (self.path.stat().st_size,) * 2

    # -- transactions ------------------------------------------------------------

    @contextmanager
    def transaction(self):
        """Commit on success; on an exception roll back and raise. Failures of SQLite
        (a full disk, a file gone read-only) come out as CassetteWriteFailed."""
        if self._in_transaction:  # nested: part of the enclosing one
            yield
            return
        self._in_transaction = True
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._write_parts()
                self._conn.execute("COMMIT")
            except BaseException:
                self._pending.clear()
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolled back already (it does on a full disk)
                raise
        except sqlite3.Error as e:
            raise CassetteWriteFailed(self.path, f"writing failed: {_sqlite_problem(self.path, e)}") from None
        finally:
            self._in_transaction = False

    # -- steps (inside a transaction) ------------------------------------------------

    def allocate(self) -> int:
        """Reserve the seq of the next interaction (the writer's lock makes this safe)."""
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def append(self, it: Interaction) -> int:
        """Store a whole interaction at once (tests, imports); returns its seq."""
        with self.transaction():
            return self._append(it)

    def append_many(self, its: Iterable[Interaction]) -> int:
        """Store many interactions in one transaction (imports, benchmarks); returns how many."""
        n = 0
        with self.transaction():
            for it in its:
                self._append(it)
                n += 1
        return n

    def _append(self, it: Interaction) -> int:
        it.id = it.seq = self.allocate()
        self.insert(it)
        self.finish(it.seq, it.end, it.end_detail, it.duration, it.close)
        return it.seq

    def insert(self, it: Interaction) -> None:
        """Store an interaction as it starts (end = incomplete); ``it.seq`` from allocate().
        A response, chunks and frames already on ``it`` are stored too."""
        r = it.request
        cls, _, _, query_key = request_key(r, it.kind)
        # A file older than the http_version column (schema.OPTIONAL) goes without it.
        version = (", http_version", ", ?", (r.http_version or None,)) if self.has_http_version else ("", "", ())
        self._conn.execute(
            'INSERT INTO interactions (seq, kind, method, scheme, host, port, path, query, match_class, match_query,'
            ' started_at, request_headers, request_content_encoding, request_bytes, "end", end_detail, event_count,'
            f' body_bytes{version[0]}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0{version[1]})',
            (it.seq, it.kind.value, r.method, r.scheme or "http", r.host or "", r.port or 0, r.path, r.query or "", cls,
             query_key, it.started_at or time.time(), _json(r.headers), r.body_encoding, len(r.body),
             End.INCOMPLETE.value, "", *version[2]),
        )
        if r.body:
            self._conn.execute("INSERT INTO request_bodies (seq, data) VALUES (?, ?)", (it.seq, self._blobs.pack(r.body)))
        self._parts[it.seq] = 0
        self._counts[it.seq] = [0, 0]
        if it.response is not None:
            self.set_response(it.seq, it.response, it.ttfb, it.kind)
        events = [chunk_event(c) for c in it.chunks] + [frame_event(f) for f in it.frames]
        if events:
            self._queue(it.seq, events)

    def set_response(self, seq: int, response: Response, ttfb: float | None, kind: Kind | None = None) -> None:
        """Store the response head; ``kind`` turns an HTTP exchange into a WebSocket session (101)."""
        sets = "status = ?, reason = ?, response_headers = ?, ttfb = ?"
        args = [response.status, response.reason, _json(response.headers), ttfb]
        if kind is not None:
            sets += ", kind = ?"
            args.append(kind.value)
            if kind is Kind.WEBSOCKET:
                sets += ", match_class = 'ws'"  # as request_key() classes a session
        self._conn.execute(f"UPDATE interactions SET {sets} WHERE seq = ?", (*args, seq))

    def add_chunk(self, seq: int, chunk: Chunk) -> None:
        self._queue(seq, [chunk_event(chunk)])

    def add_frame(self, seq: int, frame: Frame) -> None:
        self._queue(seq, [frame_event(frame)])

    def finish(self, seq: int, end: End, detail: str = "", duration: float | None = None,
               close: Close | None = None) -> None:
        """Store how the interaction ended and fold its parts into one."""
        events = self._pending.pop(seq, [])
        parts = self._parts.pop(seq, 0)
        self._counts.pop(seq, None)
        if parts:  # parts written by earlier transactions: fold them with these
            stored = []
            for (blob,) in self._conn.execute("SELECT data FROM events WHERE seq = ? ORDER BY part", (seq,)):
                stored += unpack_events(self._blobs.unpack(blob))
            events = stored + events
            self._conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
        if events:
            self._conn.execute("INSERT INTO events (seq, part, data) VALUES (?, 0, ?)",
                               (seq, self._blobs.pack(pack_events(events))))
        n = len(events)
        body = sum(len(d) for _, k, d in events if is_server_data(k))
        self._conn.execute(
            'UPDATE interactions SET "end" = ?, end_detail = ?, duration = ?, close_code = ?, close_reason = ?,'
            " closed_by = ?, event_count = ?, body_bytes = ? WHERE seq = ?",
            (end.value, detail or "", duration, close.code if close else None, close.reason if close else None,
             close.by.value if close and close.by else None, n, body, seq),
        )

    def _queue(self, seq: int, events: list[Event]) -> None:
        self._pending.setdefault(seq, []).extend(events)

    def _write_parts(self) -> None:
        """One part per interaction still in flight that has new events (at commit)."""
        for seq, events in self._pending.items():
            part = self._parts.get(seq, 0)
            self._parts[seq] = part + 1
            counts = self._counts.setdefault(seq, [0, 0])
            _count(counts, events)
            self._conn.execute("INSERT INTO events (seq, part, data) VALUES (?, ?, ?)",
                               (seq, part, self._blobs.pack(pack_events(events))))
            self._conn.execute("UPDATE interactions SET event_count = ?, body_bytes = ? WHERE seq = ?",
                               (counts[0], counts[1], seq))
        self._pending.clear()


def _count(counts: list[int], events: list[Event]) -> None:
    counts[0] += len(events)
    counts[1] += sum(len(d) for _, k, d in events if is_server_data(k))


def _json(headers) -> str:
    return json.dumps([[k, v] for k, v in headers], ensure_ascii=False, separators=(",", ":"))


def _durable(conn: sqlite3.Connection) -> None:
    """WAL + synchronous=NORMAL while writing: each commit survives a killed process.
    Set only on files known to be cassettes, never on another program's database."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")


def _sqlite_problem(path: Path, e: sqlite3.Error) -> str:
    return opening.not_writable(path, e).problem if isinstance(e, sqlite3.OperationalError) else str(e)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
