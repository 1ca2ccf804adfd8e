"""The cassette's zstd dictionary: trained once, then never changed.

Streams of one API repeat themselves across interactions (ids, field names, event
names, tool schemas in request bodies) far more than within one, which compressing each
blob alone cannot use; a dictionary trained on the cassette can.

When: as a writer closes cleanly (``WritableCassette.close(compact=True)``) and at the
end of a migration, if the cassette has no dictionary yet and holds at least
MIN_INTERACTIONS interactions and MIN_SAMPLE_BYTES of content. If training fails or
the dictionary does not pay for its own size, ``meta.dictionary_tried_at`` notes how many
interactions there were, and training waits until the cassette has twice as many.

What: train on a sample of the blobs' content spread over the whole cassette, store
the dictionary, recompress every blob with it (one transaction), VACUUM. This is the
one time stored bytes are rewritten. Afterwards every new blob is compressed with the
same dictionary and nothing already stored changes, so a cassette in git changes only
by the pages of what is appended. Compaction never touches what blobs hold: events keep
their recorded order, bytes stay as they were (it decompresses and recompresses).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import zstandard

from .errors import CassetteCorrupt, CassetteWriteFailed
from .packed import LEVEL, Damaged

MIN_INTERACTIONS = 8
MIN_SAMPLE_BYTES = 16_384
SAMPLE_BYTES = 8 << 20  # what training reads at most
MAX_SAMPLES = 4000
MAX_SAMPLE = 128 << 10  # bytes of one sample
PAYS = 0.9  # the dictionary, its size included, must save a tenth on the samples

BLOB_TABLES = ("request_bodies", "events")


def compact(cassette, progress: Callable[[int, int], None] | None = None) -> tuple[int, int] | None:
    """Train the dictionary if it is time; returns (bytes before, bytes after), or None
    when nothing was done. ``cassette`` is a WritableCassette."""
    conn: sqlite3.Connection = cassette._conn
    if conn.execute("SELECT count(*) FROM dictionaries").fetchone()[0]:
        return None  # trained once: stable from then on
    count = cassette.count()
    tried = int(cassette.meta.get("dictionary_tried_at", "0") or 0)
    if count < MIN_INTERACTIONS or (tried and count < 2 * tried):
        return None
    samples = _samples(cassette)
    total = sum(len(s) for s in samples)
    if total < MIN_SAMPLE_BYTES:
        return None
    before = _size(cassette.path)
    dictionary = _train(samples, total)
    if dictionary is None:
        _note_tried(cassette, count)
        return None
    with cassette.transaction():
        dict_id = dictionary.dict_id()
        conn.execute("INSERT INTO dictionaries (id, data) VALUES (?, ?)", (dict_id, dictionary.as_bytes()))
        cassette._blobs.use_dictionary(dictionary.as_bytes())
        conn.execute("DELETE FROM meta WHERE key = 'dictionary_tried_at'")
        cassette.meta.pop("dictionary_tried_at", None)
        done, todo = 0, sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in BLOB_TABLES)
        for table in BLOB_TABLES:
            after = 0
            while rows := conn.execute(f"SELECT rowid, data FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 1000",
                                       (after,)).fetchall():
                for rowid, blob in rows:
                    conn.execute(f"UPDATE {table} SET data = ? WHERE rowid = ?",
                                 (cassette._blobs.pack(_content(cassette, table, blob)), rowid))
                after = rows[-1][0]
                done += len(rows)
                if progress:
                    progress(done, todo)
    try:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # in WAL mode the file shrinks only here
    except sqlite3.Error as e:
        raise CassetteWriteFailed(cassette.path, f"compacting failed: {e}") from None
    return before, _size(cassette.path)


def _content(cassette, table: str, blob: bytes) -> bytes:
    try:
        return cassette._blobs.unpack(blob)
    except Damaged as e:
        raise CassetteCorrupt(cassette.path, f"damaged blob in {table} ({e})") from None


def _samples(cassette) -> list[bytes]:
    conn = cassette._conn
    n = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in BLOB_TABLES)
    step = max(1, n // MAX_SAMPLES)
    out, total = [], 0
    for table in BLOB_TABLES:
        for (blob,) in conn.execute(f"SELECT data FROM {table} WHERE rowid % ? = 0", (step,)):
            data = _content(cassette, table, blob)[:MAX_SAMPLE]
            out.append(data)
            total += len(data)
            if total >= SAMPLE_BYTES:
                return out
    return out


def _train(samples: list[bytes], total: int) -> zstandard.ZstdCompressionDict | None:
    size = min(65_536, max(4096, total // 20))
    try:
        dictionary = zstandard.train_dictionary(size, samples)
    except zstandard.ZstdError:
        return None
    plain = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True)
    with_dict = zstandard.ZstdCompressor(level=LEVEL, dict_data=dictionary, write_checksum=True)
    size_plain = sum(len(plain.compress(s)) for s in samples)
    size_dict = sum(len(with_dict.compress(s)) for s in samples) + len(dictionary.as_bytes())
    return dictionary if size_dict < size_plain * PAYS else None


def _note_tried(cassette, count: int) -> None:
    with cassette.transaction():
        cassette._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('dictionary_tried_at', ?)",
                               (str(count),))
    cassette.meta["dictionary_tried_at"] = str(count)


def _size(path) -> int:
    from pathlib import Path

    wal = Path(str(path) + "-wal")
    return Path(path).stat().st_size + (wal.stat().st_size if wal.exists() else 0)
