"""Open, validate, append to and read cassettes. The only module that touches SQLite.

Durability: the file is in WAL mode with synchronous=NORMAL, so whatever was
committed survives a killed process (the WAL is checkpointed on the next open).
An interaction is written when it starts (end = incomplete), each chunk or frame
as it arrives, and packed when it ends; one killed in flight is read back as
incomplete with every chunk that was committed. The recorder writes through
``writer.CassetteWriter`` (batched, off the event loop).
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import zstandard

from ..model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from . import schema


class CassetteError(Exception):
    """A cassette cannot be used. ``str()`` is one line naming the file and the problem.

    CassetteError
      CassetteMissing   no file at that path
      NotACassette      not SQLite, or SQLite without our application id / meta table
      CassetteCorrupt   SQLite reports damage, or a compressed blob does not decode
      NewerSchema       written by a newer proxy
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        # one line, whatever SQLite said (quick_check reports span several lines)
        problem = " ".join(problem.split())
        self.problem = problem if len(problem) <= 300 else problem[:299] + "…"
        super().__init__(f"{self.path}: {problem}")


class CassetteMissing(CassetteError):
    pass


class NotACassette(CassetteError):
    pass


class CassetteCorrupt(CassetteError):
    pass


class NewerSchema(CassetteError):
    pass


# What a damaged file raises while SQLite reads it: page damage, or text columns whose
# bytes are no longer UTF-8.
_DAMAGE = (sqlite3.DatabaseError, UnicodeDecodeError)

# Packing a finished interaction's events pays when zstd shrinks them by a fifth.
_PAYS = 0.8
_MIN_PACK = 64


def _pack(data: bytes) -> tuple[bytes, str]:
    if len(data) >= _MIN_PACK:
        z = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)
        if len(z) < len(data) * _PAYS:
            return z, "zstd"
    return data, "raw"


_DECOMPRESSOR = zstandard.ZstdDecompressor()


def _unpack(data: bytes | None, codec: str | None) -> bytes:
    if data is None:
        return b""
    if codec == "zstd":
        return _DECOMPRESSOR.decompress(data)
    if codec in (None, "raw"):
        return bytes(data)
    raise ValueError(f"unknown codec {codec!r}")


# Packed events: count, then (offset float64, size uint32, kind uint8) per event, then the data.
_EVENT = struct.Struct("<dIB")
_KINDS = {("server", "chunk"): 0, ("client", "text"): 1, ("client", "binary"): 2, ("server", "text"): 3,
          ("server", "binary"): 4}
_KIND_OF = {v: k for k, v in _KINDS.items()}


def _pack_events(rows: list[tuple[float, str, str, bytes]]) -> bytes:
    index = [struct.pack("<I", len(rows))]
    index += [_EVENT.pack(off, len(data), _KINDS[(direction, type_)]) for off, direction, type_, data in rows]
    return b"".join(index) + b"".join(data for *_, data in rows)


def _unpack_events(raw: bytes) -> list[tuple[float, int, bytes]]:
    """(offset, kind, data) per event; kind as in _KINDS."""
    (n,) = struct.unpack_from("<I", raw, 0)
    pos = 4 + n * _EVENT.size
    if pos > len(raw):
        raise ValueError("event index longer than the blob")
    out = []
    for off, size, kind in _EVENT.iter_unpack(raw[4:pos]):
        out.append((off, kind, raw[pos : pos + size]))
        pos += size
    if pos != len(raw) or any(k not in _KIND_OF for _, k, _ in out):
        raise ValueError("event data does not match its index")
    return out


def _events_into(it: Interaction, events: list[tuple[float, int, bytes]]) -> None:
    chunks, frames = it.chunks, it.frames
    for off, kind, data in events:
        if kind == 0:
            chunks.append(Chunk(off, data))
        else:
            direction, type_ = _KIND_OF[kind]
            frames.append(Frame(_DIRECTIONS[direction], type_ == "text", off, data))


_DIRECTIONS = {"client": Direction.CLIENT, "server": Direction.SERVER}


class Cassette:
    """A cassette file. Use :meth:`open` to read an existing one, :meth:`create`
    for a new one, :meth:`open_or_create` to append."""

    def __init__(self, path: Path, conn: sqlite3.Connection, meta: dict[str, str]):
        self.path = path
        self.meta = meta
        self._conn = conn
        row = self._conn.execute("SELECT coalesce(max(seq), 0), coalesce(max(id), 0) FROM interactions").fetchone()
        self._next_seq = row[0] + 1
        self._next_id = row[1] + 1
        self._event_idx: dict[int, int] = {}
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}
        self._pending: dict[int, bytes] = {}  # decoded packed events not yet parsed (load_events)

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, write: bool = False) -> "Cassette":
        """Open and validate. Reading never changes the file: an older schema is read as
        it is; ``write=True`` migrates it first."""
        path = Path(path)
        if not path.exists():
            raise CassetteMissing(path, "no such cassette file")
        if path.is_dir():
            raise NotACassette(path, "is a directory, not a cassette file")
        if path.stat().st_size == 0:
            raise NotACassette(path, "empty file, not a cassette")
        with open(path, "rb") as f:
            head = f.read(16)
        if head != b"SQLite format 3\x00":
            raise NotACassette(path, "not a SQLite file, so not a cassette")
        conn = _connect(path)
        try:
            return cls._validate(path, conn, write)
        except CassetteError:
            conn.close()
            raise
        except _DAMAGE as e:
            conn.close()
            raise CassetteCorrupt(path, f"damaged SQLite file ({e})") from None

    @classmethod
    def _validate(cls, path: Path, conn: sqlite3.Connection, write: bool = False) -> "Cassette":
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise CassetteCorrupt(path, f"damaged SQLite file ({check})")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id != schema.APPLICATION_ID or "meta" not in tables:
            what = ", ".join(sorted(tables)[:5]) or "no tables"
            raise NotACassette(path, f"a SQLite database but not a proxy cassette (tables: {what})")
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise CassetteCorrupt(path, "meta table has no valid schema_version") from None
        if version > schema.SCHEMA_VERSION:
            raise NewerSchema(
                path,
                f"cassette schema version {version} is newer than this proxy supports "
                f"({schema.SCHEMA_VERSION}); upgrade proxy",
            )
        _durable(conn)
        missing = {"interactions", "events"} - tables
        if missing:
            raise CassetteCorrupt(path, f"missing table(s): {', '.join(sorted(missing))}")
        if write and version < schema.SCHEMA_VERSION:
            with conn:
                meta["schema_version"] = str(schema.migrate(conn, version))
            version = schema.SCHEMA_VERSION
        for table, columns in (("interactions", schema.columns(version)), ("events", schema.EVENT_COLUMNS)):
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            lost = set(columns) - have
            if lost:
                raise CassetteCorrupt(path, f"table {table} lacks column(s) {', '.join(sorted(lost))}")
        return cls(path, conn, meta)

    @classmethod
    def create(cls, path: str | os.PathLike, **meta: str) -> "Cassette":
        """Create a new cassette; the file must not exist."""
        path = Path(path)
        if path.exists():
            raise CassetteError(path, "already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
        # Small pages: a cassette is a handful of tables and indexes, and with 4 KB pages
        # their first pages alone outweigh a short recording. Must precede WAL mode.
        conn.execute("PRAGMA page_size = 1024")
        _durable(conn)
        full = {"created_at": _now_iso(), "tool": "proxy 0.1.0", **{k: str(v) for k, v in meta.items()}}
        with conn:
            schema.create(conn, full)
        return cls(path, conn, dict(full, schema_version=str(schema.SCHEMA_VERSION)))

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, **meta: str) -> "Cassette":
        if Path(path).exists():
            return cls.open(path, write=True)
        return cls.create(path, **meta)

    def close(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._conn.close()

    def __enter__(self) -> "Cassette":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self.meta["schema_version"])

    # -- writing ----------------------------------------------------------------
    # The steps below do not commit: run them inside ``with cassette.transaction():``.
    # The recorder runs them through writer.CassetteWriter, which batches many steps
    # into one transaction; append() is one interaction in one transaction.

    def transaction(self):
        """A context manager: commit on success, roll back on an exception."""
        return self._conn

    def allocate(self) -> tuple[int, int]:
        """Reserve (id, seq) for the next interaction."""
        iid, seq = self._next_id, self._next_seq
        self._next_id += 1
        self._next_seq += 1
        return iid, seq

    def append(self, it: Interaction) -> int:
        """Store a whole interaction at once (tests, imports)."""
        it.id, it.seq = self.allocate()
        with self.transaction():
            self.insert(it)
            self.finish(it.id, it.end, it.end_detail, it.duration, it.close)
        return it.id

    def insert(self, it: Interaction) -> None:
        """Store an interaction as it starts (end = incomplete); ``it.id``/``it.seq`` from allocate()."""
        r = it.request
        row = {
            "id": it.id,
            "seq": it.seq,
            "kind": it.kind.value,
            "started_at": it.started_at or time.time(),
            "method": r.method,
            "scheme": r.scheme,
            "host": r.host,
            "port": r.port,
            "path": r.path,
            "query": r.query,
            "request_headers": json.dumps(r.headers),
            "request_content_encoding": r.body_encoding,
            "end": End.INCOMPLETE.value,
            "end_detail": "",
            "event_count": 0,
            "body_bytes": 0,
        }
        row["request_body"], row["request_body_codec"] = _pack(r.body)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._conn.execute(f"INSERT INTO interactions ({cols}) VALUES ({marks})", list(row.values()))
        self._event_idx[it.id] = 0
        if it.response is not None:
            self.set_response(it.id, it.response, it.ttfb, it.kind)
        for c in it.chunks:
            self.add_chunk(it.id, c)
        for f in it.frames:
            self.add_frame(it.id, f)

    def set_response(self, iid: int, response: Response, ttfb: float | None, kind: Kind | None = None) -> None:
        """Store the response head; ``kind`` turns an HTTP exchange into a WebSocket session (101)."""
        self._conn.execute(
            "UPDATE interactions SET status=?, reason=?, response_headers=?, ttfb=?, kind=coalesce(?, kind) WHERE id=?",
            (response.status, response.reason, json.dumps(response.headers), ttfb, kind.value if kind else None, iid),
        )

    def add_chunk(self, iid: int, chunk: Chunk) -> None:
        self._add_event(iid, chunk.offset, Direction.SERVER.value, "chunk", chunk.data)

    def add_frame(self, iid: int, frame: Frame) -> None:
        kind = "text" if frame.is_text else "binary"
        self._add_event(iid, frame.offset, frame.direction.value, kind, frame.payload)

    def _add_event(self, iid: int, offset: float, direction: str, type_: str, data: bytes) -> None:
        idx = self._event_idx.get(iid, 0)
        self._event_idx[iid] = idx + 1
        self._conn.execute(
            "INSERT INTO events (interaction_id, idx, offset, direction, type, size, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (iid, idx, offset, direction, type_, len(data), data),
        )

    def finish(self, iid: int, end: End, detail: str = "", duration: float | None = None,
                close: Close | None = None) -> None:
        """Move the events into the interaction row, packed (see schema.py), and drop their rows."""
        self._event_idx.pop(iid, None)
        rows = self._conn.execute(
            "SELECT offset, direction, type, data FROM events WHERE interaction_id=? ORDER BY idx", (iid,)
        ).fetchall()
        rows = [(off, d, t, bytes(data or b"")) for off, d, t, data in rows]
        body_bytes = sum(len(r[3]) for r in rows if r[1] == Direction.SERVER.value)
        blob, codec = _pack(_pack_events(rows))
        self._conn.execute(
            "UPDATE interactions SET end=?, end_detail=?, duration=?, close_code=?, close_reason=?,"
            " closed_by=?, event_count=?, body_bytes=?, events_blob=?, events_codec=? WHERE id=?",
            (
                end.value,
                detail,
                duration,
                close.code if close else None,
                close.reason if close else None,
                close.by.value if close and close.by else None,
                len(rows),
                body_bytes,
                blob,
                "packed-" + codec,
                iid,
            ),
        )
        self._conn.execute("DELETE FROM events WHERE interaction_id=?", (iid,))

    # -- compaction ---------------------------------------------------------------

    def compact(self, level: int = 9) -> tuple[int, int]:
        """Recompress every finished interaction with one zstd dictionary trained on the
        whole cassette (headers too), when that is smaller, then VACUUM.

        Streams of one API repeat themselves across interactions (ids, field names,
        headers) far more than within one, which per-interaction compression cannot
        use. Returns (bytes before, bytes after) of the file.
        """
        wal = Path(str(self.path) + "-wal")
        before = self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        cur = self._read("SELECT * FROM interactions WHERE end != 'incomplete' ORDER BY seq")
        names = [d[0] for d in cur.description]
        items = []
        for r in cur.fetchall():
            row = dict(zip(names, r))
            it = self._build(row)
            head = json.dumps([it.request.headers, it.response.headers if it.response else None]).encode()
            events = [(c.offset, "server", "chunk", c.data) for c in it.chunks] + [
                (f.offset, f.direction.value, "text" if f.is_text else "binary", f.payload) for f in it.frames]
            events.sort(key=lambda e: e[0])
            items.append((row["id"], head, _pack_events(events)))
        if not items:
            return before, before
        samples = [x for _, head, ev in items for x in (head, ev)]
        total = sum(len(x) for x in samples)
        dictionary = None
        if len(items) >= 8 and total >= 16_384:
            try:
                dictionary = zstandard.train_dictionary(min(65_536, max(4096, total // 20)), samples)
            except zstandard.ZstdError:
                dictionary = None
        plain = zstandard.ZstdCompressor(level=level, write_checksum=True)
        with_dict = zstandard.ZstdCompressor(level=level, dict_data=dictionary, write_checksum=True) if dictionary else None
        size_plain = sum(len(plain.compress(x)) for x in samples)
        size_dict = (sum(len(with_dict.compress(x)) for x in samples) + len(dictionary.as_bytes())) if with_dict else None
        with self._conn:
            self._conn.execute("UPDATE interactions SET dict_id=NULL")
            self._conn.execute("DELETE FROM dictionaries")
            dict_id = None
            if size_dict is not None and size_dict < size_plain:
                dict_id = self._conn.execute("INSERT INTO dictionaries (data) VALUES (?)",
                                             (dictionary.as_bytes(),)).lastrowid
                comp, codec = with_dict, "zstd-dict"
            else:
                comp, codec = plain, "zstd"
            for iid, head, ev in items:
                self._conn.execute(
                    "UPDATE interactions SET head_blob=?, request_headers=NULL, response_headers=NULL,"
                    " events_blob=?, events_codec=?, dict_id=? WHERE id=?",
                    (comp.compress(head), comp.compress(ev), "packed-" + codec, dict_id, iid),
                )
        self._decompressors.clear()
        self._conn.execute("VACUUM")
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # in WAL mode the file shrinks only here
        return before, self.path.stat().st_size

    def _decompressor(self, dict_id: int | None) -> zstandard.ZstdDecompressor:
        if dict_id is None:
            return _DECOMPRESSOR
        d = self._decompressors.get(dict_id)
        if d is None:
            row = self._read("SELECT data FROM dictionaries WHERE id=?", (dict_id,)).fetchone()
            if row is None:
                raise ValueError(f"dictionary {dict_id} is missing")
            d = self._decompressors[dict_id] = zstandard.ZstdDecompressor(
                dict_data=zstandard.ZstdCompressionDict(bytes(row[0])))
        return d

    def _decode(self, data: bytes, codec: str, dict_id: int | None) -> bytes:
        if codec == "zstd-dict":
            return self._decompressor(dict_id).decompress(data)
        return _unpack(data, codec)

    # -- reading --------------------------------------------------------------

    def _read(self, sql: str, args=()) -> sqlite3.Cursor:
        """Every read goes through here: damage found while reading is a CassetteCorrupt."""
        try:
            return self._conn.execute(sql, args)
        except _DAMAGE as e:
            raise CassetteCorrupt(self.path, f"damaged SQLite file ({e})") from None

    def count(self) -> int:
        return self._read("SELECT count(*) FROM interactions").fetchone()[0]

    def summaries(self) -> list[dict]:
        """One dict per interaction without bodies: cheap, for listings."""
        cur = self._read(
            "SELECT id, seq, kind, started_at, method, path, query, status, ttfb, duration, end,"
            " end_detail, event_count, body_bytes, close_code FROM interactions ORDER BY seq"
        )
        names = [d[0] for d in cur.description]
        try:
            return [dict(zip(names, r)) for r in cur]
        except _DAMAGE as e:
            raise CassetteCorrupt(self.path, f"damaged SQLite file ({e})") from None

    def interactions(self, with_events: bool = True) -> Iterator[Interaction]:
        """Every interaction in recorded order, events included (two queries in all).

        ``with_events=False`` leaves chunks and frames out (fill them with :meth:`load_events`)
        but still decodes every blob, so damage is found now, not when it is used."""
        cur = self._read("SELECT * FROM interactions ORDER BY seq")
        cur.row_factory = sqlite3.Row  # C rows with access by name: no dict per row
        try:
            rows = cur.fetchall()
            events = self._read(
                "SELECT interaction_id, offset, direction, type, size, data FROM events ORDER BY interaction_id, idx"
            ).fetchall()
        except _DAMAGE as e:
            raise CassetteCorrupt(self.path, f"damaged SQLite file ({e})") from None
        by_id: dict[int, list] = {}
        for ev in events:
            by_id.setdefault(ev[0], []).append(ev[1:])
        for row in rows:
            yield self._build(row, by_id.get(row["id"], []), with_events=with_events)

    def load_events(self, it: Interaction) -> Interaction:
        """Fill in the chunks and frames of an interaction read with ``with_events=False``."""
        packed = self._pending.pop(it.id, None)
        if packed is not None:  # decoded at read time: only the index is left to parse
            try:
                _events_into(it, _unpack_events(packed))
            except (ValueError, struct.error) as e:
                raise CassetteCorrupt(self.path, f"interaction {it.seq}: corrupt data ({e!r})") from None
            return it
        cur = self._read("SELECT * FROM interactions WHERE id=?", (it.id,))
        names = [d[0] for d in cur.description]
        full = self._build(dict(zip(names, cur.fetchone())))
        it.chunks, it.frames = full.chunks, full.frames
        return it

    def get(self, seq: int) -> Interaction:
        cur = self._read("SELECT * FROM interactions WHERE seq=?", (seq,))
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        if row is None:
            raise KeyError(seq)
        return self._build(dict(zip(names, row)))

    def _build(self, row: dict, events: list | None = None, with_events: bool = True) -> Interaction:
        where = f"interaction {row['seq']}"
        codec = row["events_codec"] or ""
        packed = codec.startswith("packed-")
        try:
            body = _unpack(row["request_body"], row["request_body_codec"])
            blob = None
            if row["events_blob"] is not None:
                blob = self._decode(row["events_blob"], codec.removeprefix("packed-"), _get(row, "dict_id"))
            if _get(row, "head_blob") is not None:
                req_headers, resp_headers = json.loads(self._decode(row["head_blob"], codec.removeprefix("packed-"),
                                                                    _get(row, "dict_id")))
            else:
                req_headers = json.loads(row["request_headers"] or "[]")
                resp_headers = json.loads(row["response_headers"] or "[]")
            req = Request(
                method=row["method"] or "",
                path=row["path"] or "",
                query=row["query"] or "",
                headers=[tuple(h) for h in req_headers],
                body=body,
                body_encoding=row["request_content_encoding"],
                scheme=row["scheme"] or "http",
                host=row["host"] or "",
                port=row["port"] or 0,
            )
            resp = None
            if row["status"] is not None:
                resp = Response(status=row["status"], reason=row["reason"] or "",
                                headers=[tuple(h) for h in resp_headers or []])
            end = End(row["end"])
            kind = Kind(row["kind"])
            if packed and with_events:
                packed_events = _unpack_events(blob)
        except (zstandard.ZstdError, ValueError, TypeError, KeyError, struct.error) as e:
            raise CassetteCorrupt(self.path, f"{where}: corrupt data ({e!r})") from None
        it = Interaction(
            kind=kind,
            request=req,
            response=resp,
            ttfb=row["ttfb"],
            duration=row["duration"],
            end=end,
            end_detail=row["end_detail"] or "",
            started_at=row["started_at"] or 0.0,
            id=row["id"],
            seq=row["seq"],
        )
        if row["close_code"] is not None or row["closed_by"] is not None:
            it.close = Close(
                row["close_code"], row["close_reason"] or "", Direction(row["closed_by"]) if row["closed_by"] else None
            )
        if not with_events:
            if packed and blob is not None:
                self._pending[it.id] = blob  # decoded (and so checked) now; parsed on load_events
            return it
        if packed:
            _events_into(it, packed_events)
            return it
        if events is None:
            try:
                events = self._read(
                    "SELECT offset, direction, type, size, data FROM events WHERE interaction_id=? ORDER BY idx",
                    (row["id"],),
                ).fetchall()
            except _DAMAGE as e:
                raise CassetteCorrupt(self.path, f"{where}: damaged SQLite file ({e})") from None
        self._rows_into(it, events, blob, where)
        return it

    def _rows_into(self, it: Interaction, events, blob: bytes | None, where: str) -> None:
        """Events kept as rows: a version 1 file (data in the blob) or an interaction in flight."""
        pos = 0
        for offset, direction, type_, size, data in events:
            if blob is not None:  # version 1 layout: rows hold the index, the blob the data
                payload = blob[pos : pos + size]
                pos += size
            else:  # still in flight
                payload = bytes(data or b"")
            if not isinstance(size, int) or len(payload) != size:
                raise CassetteCorrupt(self.path, f"{where}: event data shorter than recorded size")
            try:
                if type_ == "chunk":
                    it.chunks.append(Chunk(float(offset), payload))
                else:
                    it.frames.append(Frame(Direction(direction), type_ == "text", float(offset), payload))
            except (TypeError, ValueError) as e:
                raise CassetteCorrupt(self.path, f"{where}: corrupt event ({e})") from None


def _get(row, key: str):
    """row[key], or None where a version 1 file has no such column."""
    try:
        return row[key]
    except (IndexError, KeyError):
        return None


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), check_same_thread=False)


def _durable(conn: sqlite3.Connection) -> None:
    """WAL + synchronous=NORMAL: each commit survives a killed process. Set only on
    files known to be cassettes, never on another program's database."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
