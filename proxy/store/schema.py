"""Cassette schema and migrations.

A cassette is a SQLite file with ``PRAGMA application_id = APPLICATION_ID`` and a
``meta`` table whose ``schema_version`` row says which layout it has. Migrations
take a file from version N to N+1; a file newer than this code is refused.

Tables
  meta(key, value)                      schema_version, created_at, upstream, tool
  interactions(id, seq, kind, ...)      one row per HTTP exchange / WebSocket session
  events(interaction_id, idx, ...)      response chunks and WebSocket frames, in order:
                                        offset (s), direction, type (chunk|text|binary),
                                        size, data. When an interaction finishes its
                                        event data is packed into interactions.events_blob
                                        (zstd where that pays) and events.data is NULL;
                                        rows of an interaction still in flight keep data inline.
"""

from __future__ import annotations

import sqlite_utils

SCHEMA_VERSION = 1
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


def create(db: sqlite_utils.Database, meta: dict[str, str]) -> None:
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["interactions"].create(INTERACTION_COLUMNS, pk="id", not_null={"seq", "kind"})
    db["events"].create(EVENT_COLUMNS, pk=("interaction_id", "idx"))
    db["interactions"].create_index(["seq"], unique=True)
    db["meta"].insert_all(
        [{"key": k, "value": v} for k, v in {**meta, "schema_version": str(SCHEMA_VERSION)}.items()]
    )


# version -> function taking the db from that version to the next one
MIGRATIONS: dict[int, callable] = {}


def migrate(db: sqlite_utils.Database, version: int) -> int:
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](db)
        version += 1
        db["meta"].upsert({"key": "schema_version", "value": str(version)}, pk="key")
    return version
