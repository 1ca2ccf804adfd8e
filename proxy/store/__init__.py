"""Cassette storage: the only package that touches SQLite.

  cassette.py    Cassette: the way in (open to read, create / open to write, source)
  errors.py      what goes wrong, one exception type per problem
  schema.py      the layout (tables, columns, index) and validation
  packed.py      the bytes inside blobs: checked zstd frames, packed events
  opening.py     read-only connections, constant-time checks, the writer's lock
  reading.py     CassetteReader: open read-only, stream rows, load events on demand
  source.py      SqliteSource: a cassette as the matcher's CandidateSource
  writing.py     WritableCassette: append, one writer at a time, failures raised
  writer.py      CassetteWriter: the recorder's batching writer thread
  compaction.py  the dictionary, trained once
  migration.py   migrate(): older schemas to this one, atomically
"""

from .errors import (
    CassetteCorrupt,
    CassetteError,
    CassetteLocked,
    CassetteMissing,
    CassetteNotWritable,
    CassetteWriteFailed,
    NewerSchema,
    NotACassette,
    OldSchema,
)
from .cassette import Cassette
from .migration import migrate
from .opening import WriterLock
from .schema import SCHEMA_VERSION
from .source import SqliteSource
from .writer import CassetteWriter
from .writing import WritableCassette

__all__ = [
    "Cassette",
    "CassetteCorrupt",
    "CassetteError",
    "CassetteLocked",
    "CassetteMissing",
    "CassetteNotWritable",
    "CassetteWriteFailed",
    "CassetteWriter",
    "NewerSchema",
    "NotACassette",
    "OldSchema",
    "SCHEMA_VERSION",
    "SqliteSource",
    "WritableCassette",
    "WriterLock",
    "migrate",
]
