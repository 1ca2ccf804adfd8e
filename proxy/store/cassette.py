"""``Cassette``: the one way in. ``Cassette.open(path)`` reads (read-only, constant time);
``Cassette.create``, ``Cassette.open_or_create`` and ``Cassette.open(path, write=True)``
give a :class:`~.writing.WritableCassette` (one writer per file); ``cassette.source()``
is the matcher's view of it."""

from __future__ import annotations

import os

from .reading import CassetteReader
from .source import SqliteSource
from .writing import WritableCassette


class Cassette(CassetteReader):
    @classmethod
    def open(cls, path: str | os.PathLike, write: bool = False) -> CassetteReader:
        if write:
            return WritableCassette.open_for_writing(path)
        return super().open(path)

    @classmethod
    def create(cls, path: str | os.PathLike, **meta: str) -> WritableCassette:
        """A new cassette; the file must not exist."""
        return WritableCassette.create(path, **meta)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, **meta: str) -> WritableCassette:
        return WritableCassette.open_or_create(path, **meta)

    def source(self) -> SqliteSource:
        """This cassette as a ``matching.CandidateSource``: candidates from the index,
        events when matched."""
        return SqliteSource(self)
