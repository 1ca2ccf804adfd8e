"""Cassette storage: the only package that touches SQLite."""

from .cassette import (
    Cassette,
    CassetteCorrupt,
    CassetteError,
    CassetteMissing,
    NewerSchema,
    NotACassette,
)
from .schema import SCHEMA_VERSION

__all__ = [
    "Cassette",
    "CassetteCorrupt",
    "CassetteError",
    "CassetteMissing",
    "NewerSchema",
    "NotACassette",
    "SCHEMA_VERSION",
]
