"""``proxy migrate``: upgrade a cassette of an older schema to this one, atomically.

The old file is read (read-only) and written anew, in the current layout, to
``PATH.migrating`` beside it; that file is closed (self-contained, no WAL), synced, and
renamed over the old one. A migration interrupted at any point (an error, Ctrl-C,
SIGKILL, a power cut) leaves the old file exactly as it was; the next run starts over.
The writer's lock on PATH keeps a recorder from appending meanwhile.

Only this module reads the old layouts:
  version 1  ``events`` rows hold each event's offset, direction, type and size;
             ``interactions.events_blob`` the payloads (``events_codec`` zstd or raw).
             Rows of interactions in flight hold their data themselves.
  version 2  ``events_blob`` holds packed events (count, then offset f64 / size u32 /
             kind u8 each, then the data; ``events_codec`` packed-raw, packed-zstd or
             packed-zstd-dict with ``dict_id``); compacted rows keep both headers in
             ``head_blob`` (JSON [request headers, response headers]). In-flight rows as in 1.
Both number interactions twice (``id`` and ``seq``); the new file keeps ``seq``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from ..model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from . import opening, schema
from .errors import CassetteCorrupt, CassetteError, CassetteWriteFailed
from .writing import WritableCassette, _remove

Progress = Callable[[int, int], None]


def migrate(path: str | os.PathLike, progress: Progress | None = None) -> tuple[int, int]:
    """Upgrade ``path`` in place; returns (version before, version after). A cassette
    already current is left untouched. ``progress(done, total)`` is called as it goes."""
    path = Path(path)
    conn = opening.open_read(path)
    try:
        try:
            opening.check_integrity(conn, path)
            version, meta = schema.validate(conn, path, upgrade_hint=False)
        except opening.DAMAGE as e:
            raise CassetteCorrupt(path, f"damaged SQLite file ({e})") from None
        if version == schema.SCHEMA_VERSION:
            return version, version
        conn.close()
        lock = opening.WriterLock.acquire(path)
        try:
            conn = opening.open_read(path)  # again, now that no writer can be at it
            _migrate_file(path, conn, version, meta, progress)
        finally:
            lock.release()
        return version, schema.SCHEMA_VERSION
    finally:
        conn.close()


def _migrate_file(path: Path, conn: sqlite3.Connection, version: int, meta: dict[str, str],
                  progress: Progress | None) -> None:
    tmp = path.with_name(path.name + ".migrating")
    _remove(tmp)  # left by an interrupted run
    keep = {k: v for k, v in meta.items() if k not in ("schema_version",)}
    out = WritableCassette.create(tmp, **keep)
    try:
        total = conn.execute("SELECT count(*) FROM interactions").fetchone()[0]
        with out.transaction():
            for n, it in enumerate(_old_interactions(path, conn, version), 1):
                out._next_seq = it.seq  # keep the recorded numbering, gaps included
                out._append(it)
                if progress and (n % 500 == 0 or n == total):
                    progress(n, total)
        out.close(compact=True)
        if Path(str(tmp) + "-wal").exists():
            # close() could not fold the WAL in (a full disk, a reader of the new file): the
            # rename below would leave the migrated rows behind in PATH.migrating-wal
            raise CassetteWriteFailed(path, "migration failed: the new file could not be made self-contained "
                                            "(disk full, or another process reading it?); nothing was changed")
    except BaseException:
        out._conn.close()
        out._lock.release()
        _remove(tmp)
        raise
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):  # WAL files of the old file must not meet the new one
        Path(str(path) + suffix).unlink(missing_ok=True)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- reading versions 1 and 2 ---------------------------------------------------------

_V2_INDEX = struct.Struct("<dIB")
_V2_KINDS = {0: (Direction.SERVER, None), 1: (Direction.CLIENT, True), 2: (Direction.CLIENT, False),
             3: (Direction.SERVER, True), 4: (Direction.SERVER, False)}


def _old_interactions(path: Path, conn: sqlite3.Connection, version: int) -> Iterator[Interaction]:
    conn.row_factory = sqlite3.Row
    dictionaries = {}
    if version >= 2:
        for r in conn.execute("SELECT id, data FROM dictionaries"):
            dictionaries[r["id"]] = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(bytes(r["data"])))
    plain = zstandard.ZstdDecompressor()

    def decode(data, codec: str | None, dict_id=None) -> bytes:
        if data is None:
            return b""
        codec = (codec or "raw").removeprefix("packed-")
        if codec == "raw":
            return bytes(data)
        if codec == "zstd":
            return plain.decompress(data)
        if codec == "zstd-dict":
            return dictionaries[dict_id].decompress(data)
        raise ValueError(f"unknown codec {codec!r}")

    for row in conn.execute("SELECT * FROM interactions ORDER BY seq"):
        where = f"interaction {row['seq']}"
        try:
            yield _old_interaction(conn, row, version, decode)
        except CassetteError:
            raise
        except (zstandard.ZstdError, ValueError, TypeError, KeyError, IndexError, struct.error) as e:
            raise CassetteCorrupt(path, f"{where}: corrupt data ({e!r}); nothing was changed") from None


def _old_interaction(conn, row, version: int, decode) -> Interaction:
    keys = row.keys()
    dict_id = row["dict_id"] if "dict_id" in keys else None
    codec = row["events_codec"]
    if "head_blob" in keys and row["head_blob"] is not None:
        req_headers, resp_headers = json.loads(decode(row["head_blob"], codec, dict_id))
    else:
        req_headers = json.loads(row["request_headers"] or "[]")
        resp_headers = json.loads(row["response_headers"] or "[]")
    req = Request(method=row["method"] or "", path=row["path"] or "", query=row["query"] or "",
                  headers=[tuple(h) for h in req_headers], body=decode(row["request_body"], row["request_body_codec"]),
                  body_encoding=row["request_content_encoding"], scheme=row["scheme"] or "http",
                  host=row["host"] or "", port=row["port"] or 0)
    resp = None
    if row["status"] is not None:
        resp = Response(row["status"], row["reason"] or "", [tuple(h) for h in resp_headers or []])
    it = Interaction(kind=Kind(row["kind"]), request=req, response=resp, ttfb=row["ttfb"], duration=row["duration"],
                     end=End(row["end"]), end_detail=row["end_detail"] or "", started_at=row["started_at"] or 0.0,
                     seq=row["seq"])
    if row["close_code"] is not None or row["closed_by"] is not None:
        it.close = Close(row["close_code"], row["close_reason"] or "",
                         Direction(row["closed_by"]) if row["closed_by"] else None)
    blob = decode(row["events_blob"], codec, dict_id) if row["events_blob"] is not None else None
    if codec and codec.startswith("packed-"):
        _v2_events_into(it, blob)
        return it
    rows = conn.execute("SELECT offset, direction, type, size, data FROM events WHERE interaction_id = ? ORDER BY idx",
                        (row["id"],)).fetchall()
    pos = 0
    for r in rows:  # v1 finished (index rows + data in the blob) or in flight (data in the rows)
        if blob is not None:
            payload = blob[pos : pos + r["size"]]
            pos += r["size"]
        else:
            payload = bytes(r["data"] or b"")
        if len(payload) != r["size"]:
            raise ValueError("event data shorter than its recorded size")
        if r["type"] == "chunk":
            it.chunks.append(Chunk(float(r["offset"]), payload))
        else:
            it.frames.append(Frame(Direction(r["direction"]), r["type"] == "text", float(r["offset"]), payload))
    return it


def _v2_events_into(it: Interaction, raw: bytes | None) -> None:
    if not raw:
        return
    (n,) = struct.unpack_from("<I", raw, 0)
    pos = 4 + n * _V2_INDEX.size
    for off, size, kind in _V2_INDEX.iter_unpack(raw[4 : 4 + n * _V2_INDEX.size]):
        data = raw[pos : pos + size]
        pos += size
        direction, is_text = _V2_KINDS[kind]
        if is_text is None:
            it.chunks.append(Chunk(off, data))
        else:
            it.frames.append(Frame(direction, is_text, off, data))
    if pos != len(raw):
        raise ValueError("event data does not match its index")
