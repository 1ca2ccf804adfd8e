"""The cassette layout (schema version 3), made to be browsed with sqlite3 or datasette.

A cassette is one SQLite file with ``PRAGMA application_id = APPLICATION_ID``. Tables:

``meta(key, value)``
    ``schema_version``, ``created_at``, ``upstream``, ``tool``, ``mode``.
``interactions``
    One row per HTTP exchange or WebSocket session. ``seq`` (the row id) is the recorded
    order and the interaction's only number. Plain columns: kind, method, scheme, host,
    port, path, query, started_at, status, reason, ttfb (time to response headers, or the
    WebSocket accept delay), duration, end, end_detail, close_code / close_reason /
    closed_by, event_count, body_bytes, request_bytes; headers as JSON text
    (``[[name, value], ...]``, wire order). ``request_content_encoding`` is the body's
    Content-Encoding on the wire (the stored body is decoded). ``http_version`` is the
    client's (``HTTP/1.1``, ``HTTP/2.0``; NULL when not known); files made before it was
    added lack the column (``OPTIONAL``), and are read and appended to without it. ``match_class`` and
    ``match_query`` complete ``matching.request_key()`` with method and path; the index
    ``interactions_by_key`` is how replay finds candidates without reading the file.
``request_bodies(seq, data)``
    The decoded request body, one blob, only where there is one.
``events(seq, part, data)``
    Response chunks and WebSocket frames: packed, one blob per part (``packed.py``).
``dictionaries(id, data)``
    The zstd dictionary the blobs are compressed with: trained once, when the cassette
    first has enough traffic, and never retrained, so appending changes only new pages.

Blobs are in separate tables so that the rows people and listings read stay small, and
an interaction's row can be updated (its end, its counters) without rewriting its body.
Files of versions 1 and 2 are upgraded by ``migration.migrate`` into a new file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import CassetteCorrupt, NewerSchema, NotACassette, OldSchema

SCHEMA_VERSION = 3
APPLICATION_ID = 0x50525859  # "PRXY"
PAGE_SIZE = 1024  # a cassette is mostly small rows; small pages keep a git diff of an append small

TABLES = {
    "meta": "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "interactions": """CREATE TABLE interactions (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    scheme TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    match_class TEXT NOT NULL,
    match_query TEXT NOT NULL,
    started_at REAL NOT NULL,
    request_headers TEXT NOT NULL,
    request_content_encoding TEXT,
    request_bytes INTEGER NOT NULL,
    status INTEGER,
    reason TEXT,
    response_headers TEXT,
    ttfb REAL,
    duration REAL,
    "end" TEXT NOT NULL,
    end_detail TEXT NOT NULL,
    close_code INTEGER,
    close_reason TEXT,
    closed_by TEXT,
    event_count INTEGER NOT NULL,
    body_bytes INTEGER NOT NULL,
    http_version TEXT
)""",
    "request_bodies": "CREATE TABLE request_bodies (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    "events": """CREATE TABLE events (
    seq INTEGER NOT NULL,
    part INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (seq, part)
)""",
    "dictionaries": "CREATE TABLE dictionaries (id INTEGER PRIMARY KEY, data BLOB NOT NULL)",
}
INDEXES = [
    # what a request's key selects: matching.request_key() = (class, METHOD, path, query)
    "CREATE INDEX interactions_by_key ON interactions (match_class, path, upper(method), match_query)",
]

# Columns of a later version 3 that older files lack: used where they exist.
OPTIONAL = {"interactions": ("http_version",)}

# The columns readers rely on, by table (checked at open: a file missing one is damaged).
COLUMNS = {
    "interactions": ("seq", "kind", "method", "scheme", "host", "port", "path", "query", "match_class", "match_query",
                     "started_at", "request_headers", "request_content_encoding", "request_bytes", "status", "reason",
                     "response_headers", "ttfb", "duration", "end", "end_detail", "close_code", "close_reason",
                     "closed_by", "event_count", "body_bytes"),
    "request_bodies": ("seq", "data"),
    "events": ("seq", "part", "data"),
    "dictionaries": ("id", "data"),
    "meta": ("key", "value"),
}


def create(conn: sqlite3.Connection, meta: dict[str, str]) -> None:
    """Lay out an empty file; the caller holds the transaction."""
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    for ddl in [*TABLES.values(), *INDEXES]:
        conn.execute(ddl)
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                     sorted({**meta, "schema_version": str(SCHEMA_VERSION)}.items()))


def validate(conn: sqlite3.Connection, path: Path, upgrade_hint: bool = True) -> tuple[int, dict[str, str]]:
    """Check that an open file is a cassette this code reads; return (version, meta).

    Reads only the schema and the meta table: constant time whatever the file holds.
    A file of an older version raises OldSchema (unless ``upgrade_hint`` is False, for the
    migration itself, which then gets the version back).
    """
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if app_id != APPLICATION_ID or "meta" not in tables:
        what = ", ".join(sorted(map(str, tables))[:5]) or "no tables"  # str: a damaged name can be a blob
        raise NotACassette(path, f"a SQLite database but not a proxy cassette (tables: {what})")
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    try:
        version = int(meta.get("schema_version", ""))
    except (ValueError, TypeError):  # TypeError: a damaged value can be NULL
        raise CassetteCorrupt(path, "meta table has no valid schema_version") from None
    if version > SCHEMA_VERSION:
        raise NewerSchema(path, f"cassette schema version {version} is newer than this proxy supports "
                                f"({SCHEMA_VERSION}); upgrade proxy")
    if version < SCHEMA_VERSION:
        if upgrade_hint:
            raise OldSchema(path, f"cassette schema version {version} is older than this proxy's "
                                  f"({SCHEMA_VERSION}); run `proxy migrate {path}` (the file was not changed)")
        return version, meta
    for table, columns in COLUMNS.items():
        if table not in tables:
            raise CassetteCorrupt(path, f"missing table {table}")
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        lost = [c for c in columns if c not in have]
        if lost:
            raise CassetteCorrupt(path, f"table {table} lacks column(s) {', '.join(lost)}")
    return version, meta
