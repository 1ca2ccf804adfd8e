"""Cassette schema and migrations.

A cassette is a SQLite file with ``PRAGMA application_id = APPLICATION_ID`` and a
``meta`` table whose ``schema_version`` row says which layout it has. Migrations
take a file from version N to N+1; a file newer than this code is refused.

Tables
  meta(key, value)                      schema_version, created_at, upstream, tool
  interactions(id, seq, kind, ...)      one row per HTTP exchange / WebSocket session
  events(interaction_id, idx, ...)      response chunks and WebSocket frames of interactions
                                        still in flight: offset (s), direction, type
                                        (chunk|text|binary), size, data
  dictionaries(id, data)                zstd dictionaries made by compaction

When an interaction finishes, its events move into interactions.events_blob: an
index (offset, size, direction/type per event) followed by the data, compressed
where that pays (events_codec "packed-zstd" or "packed-raw"). Compaction (on a clean
stop of the recorder) trains a zstd dictionary over the whole cassette and
recompresses events and headers with it ("packed-zstd-dict"; headers move into
head_blob). Version 1 files keep events rows with data NULL and codec "zstd"/"raw";
they stay readable.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 2
APPLICATION_ID = 0x50525859  # "PRXY"

INTERACTION_COLUMNS = {
    "id": int,
    "seq": int,
    "kind": str,
    "started_at": float,
    "method": str,
    "scheme": str,
    "host": str,
    "port": int,
    "path": str,
    "query": str,
    "request_headers": str,  # JSON list of [name, value]
    "request_body": bytes,
    "request_body_codec": str,  # raw | zstd (storage)
    "request_content_encoding": str,  # the body's original Content-Encoding on the wire
    "status": int,
    "reason": str,
    "response_headers": str,
    "ttfb": float,  # time to response headers; for WebSocket the accept delay
    "duration": float,
    "end": str,
    "end_detail": str,
    "close_code": int,
    "close_reason": str,
    "closed_by": str,
    "event_count": int,
    "body_bytes": int,
    "events_blob": bytes,
    "events_codec": str,
    "head_blob": bytes,  # compacted request + response headers (JSON), when the JSON columns are NULL
    "dict_id": int,  # the zstd dictionary of events_blob / head_blob, if any
}

EVENT_COLUMNS = {
    "interaction_id": int,
    "idx": int,
    "offset": float,
    "direction": str,
    "type": str,
    "size": int,
    "data": bytes,
}


def columns(version: int) -> dict:
    """The interactions columns a file of ``version`` has."""
    if version < 2:
        return {k: v for k, v in INTERACTION_COLUMNS.items() if k not in ("head_blob", "dict_id")}
    return INTERACTION_COLUMNS


def create(conn: sqlite3.Connection, meta: dict[str, str]) -> None:
    import sqlite_utils  # only here and in migrations: replay never pays for its import

    db = sqlite_utils.Database(conn)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["interactions"].create(INTERACTION_COLUMNS, pk="id", not_null={"seq", "kind"})
    db["events"].create(EVENT_COLUMNS, pk=("interaction_id", "idx"))
    db["dictionaries"].create({"id": int, "data": bytes}, pk="id")
    db["interactions"].create_index(["seq"], unique=True)
    db["meta"].insert_all(
        [{"key": k, "value": v} for k, v in {**meta, "schema_version": str(SCHEMA_VERSION)}.items()]
    )


def _v1_to_v2(db) -> None:
    db["interactions"].add_column("head_blob", bytes)
    db["interactions"].add_column("dict_id", int)
    db["dictionaries"].create({"id": int, "data": bytes}, pk="id")


# version -> function taking the db from that version to the next one
MIGRATIONS: dict[int, callable] = {1: _v1_to_v2}


def migrate(conn: sqlite3.Connection, version: int) -> int:
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](db)
        version += 1
        db["meta"].upsert({"key": "schema_version", "value": str(version)}, pk="key")
    return version
