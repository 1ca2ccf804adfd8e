"""A cassette as the matcher's ``CandidateSource``: candidates come from the index
``interactions_by_key``, events are read when a recording is matched.

Opening costs the same for ten recordings or a million; memory grows only with what
requests touch. The source sees the cassette as it was when it was made (recordings
up to ``last_seq``): a recorder appending to the same file meanwhile (``new_episodes``)
does not change what replay can match. One Interaction object per recording: every
lookup that returns seq N returns the same object, so the matcher's bookkeeping of what
was used holds across ``candidates`` and ``nearby``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from ..matching import Key
from ..model import Interaction
from .errors import CassetteCorrupt
from .reading import FROM, FROM_EVENTS, ROW, SMALL_EVENTS, CassetteReader

PAGE = 256  # candidates read per query
FIRST_PAGE = 16  # ... but the first pages of a key are smaller (16, 32, ...): its first match reads little
PAGE_BYTES = 256 * 2**10  # ... and a page ends once its request bodies add up to this (large bodies: fewer rows)
ROW_BYTES = 512  # what a row counts for beyond its body, for PAGE_BYTES
AHEAD = 32  # recordings whose events are read with the one asked for (see load_events)
AHEAD_EVENTS = 64  # ... if they have at most this many events (small exchanges, where a query costs most)
AHEAD_BYTES = 64 * 2**10  # ... and this many bytes of server data (few events can be megabytes)
# A recording read as a candidate comes with its events if it has at most this many, and
# this many bytes of server data (a small JSON answer): no query of its own when it is
# matched. Bounded, as an indexed key keeps every candidate it read.
ROW_EVENTS = 16
ROW_EVENTS_BYTES = 4096
# ... and if they are stored in at most this many bytes: body_bytes counts no client data, and
# a WebSocket session's few frames sent (audio, files) can be megabytes.
ROW_EVENTS_STORED = 2 * ROW_EVENTS_BYTES

_KEY = "i.match_class = ? AND i.path = ? AND upper(i.method) = ? AND i.match_query = ?"


def _key_args(key: Key) -> tuple:
    cls, method, path, query = key
    return (cls, path, method, query)


class SqliteSource:
    def __init__(self, cassette: CassetteReader):
        self.cassette = cassette
        self.last_seq = cassette.last_seq()
        self._loaded: dict[int, Interaction] = {}
        self._ahead: set[int] = set()  # seqs whose events were read ahead and not asked for yet
        self._filled: set[int] = set()  # seqs whose events were read (their lists may be playing: never replaced)
        self._by_key: dict[Key, _Candidates] = {}
        self._count: int | None = None
        self.rows_read = 0  # interaction rows read (with their request bodies) so far
        self._lock = threading.RLock()  # the rows cursor and the caches: one reader at a time

    # -- CandidateSource --------------------------------------------------------

    def candidates(self, key: Key) -> Sequence[Interaction]:
        with self._lock:
            found = self._by_key.get(key)
            if found is None:
                found = self._by_key[key] = _Candidates(self, key)
            return found

    def nearby(self, key: Key, limit: int) -> Sequence[Interaction]:
        cls, method, path, _ = key
        tiers = (
            ("i.match_class = ? AND i.path = ?", (cls, path)),
            ("i.match_class = ? AND i.path != ? AND upper(i.method) = ?", (cls, path, method)),
            ("i.match_class = ? AND i.path != ? AND upper(i.method) != ?", (cls, path, method)),
        )
        out: list[Interaction] = []
        for where, args in tiers:
            if len(out) >= limit:
                break
            out += self.rows(where, args, limit - len(out))
        return out

    def load_events(self, it: Interaction) -> Interaction:
        """Its events (a small candidate's came with its row: see ``rows``), and in the same
        query those of the next ``AHEAD`` recordings already read as candidates that are
        small (``AHEAD_EVENTS``, ``AHEAD_BYTES``): a recording asked for is mostly followed
        by the next ones (the Nth identical request gets the Nth recording), and one query
        for many costs little more than one for one. A recording whose events are damaged
        raises when it is asked for, not when it is read ahead."""
        with self._lock:
            if it.seq in self._ahead and self._loaded.get(it.seq) is it:
                self._ahead.discard(it.seq)
                return it
            if it.seq is None or self._loaded.get(it.seq) is not it:
                return self.cassette.load_events(it)
            batch = {s: self._loaded[s] for s in range(it.seq + 1, it.seq + AHEAD + 1)
                     if s in self._loaded and s not in self._filled}
            batch[it.seq] = it
            try:
                filled = self.cassette.load_events_many(batch, it.seq, AHEAD_EVENTS, AHEAD_BYTES)
            except CassetteCorrupt:  # a damaged page, maybe another recording's: this one alone
                filled = set()
            if it.seq not in filled:
                self.cassette.load_events(it)  # raises what is damaged
                filled.add(it.seq)
            self._ahead |= filled - {it.seq}
            self._filled |= filled
            return it

    def __len__(self) -> int:
        if self._count is None:
            with self._lock:
                self._count = self.cassette._read("SELECT count(*) FROM interactions WHERE seq <= ?",
                                                  (self.last_seq,)).fetchone()[0]
        return self._count

    # -- beyond the protocol ------------------------------------------------------

    def __iter__(self) -> Iterator[Interaction]:
        """Every recording in order, without events (for reports of what was never used)."""
        after = 0
        while True:
            page = self.rows("i.seq > ?", (after,), PAGE)
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].seq

    def close(self) -> None:
        self.cassette.close()

    def rows(self, where: str, args: tuple, limit: int, max_bytes: int | None = None,
             events: bool = False) -> list[Interaction]:
        """Up to ``limit`` recordings in recorded order; with ``max_bytes``, no more once
        their request bodies add up to that (at least one): the rest of the query's
        rows are never read. With ``events``, the small ones (ROW_EVENTS, ROW_EVENTS_BYTES)
        come with their events (what a match reads next)."""
        with self._lock:
            if not events:
                return self._page(f"SELECT {ROW} FROM {FROM}", (), where, args, limit, max_bytes)
            try:
                return self._page(f"SELECT {ROW}, {SMALL_EVENTS} FROM {FROM_EVENTS}",
                                  (ROW_EVENTS, ROW_EVENTS_BYTES, ROW_EVENTS_STORED), where, args, limit, max_bytes)
            except CassetteCorrupt:  # maybe a damaged events page: load_events says so, for its recording only
                return self._page(f"SELECT {ROW} FROM {FROM}", (), where, args, limit, max_bytes)

    def _page(self, select: str, select_args: tuple, where: str, args: tuple, limit: int,
              max_bytes: int | None) -> list[Interaction]:
        cassette, loaded = self.cassette, self._loaded
        events = bool(select_args)
        out = []
        size = 0
        sql = f"{select} WHERE {where} AND i.seq <= ? ORDER BY i.seq LIMIT ?"
        for r in cassette._rows(cassette._read(sql, (*select_args, *args, self.last_seq, limit))):
            it = loaded.get(r[0])
            if it is None:
                it = loaded[r[0]] = cassette._build(r, events)
                if it.chunks or it.frames:  # its events came with it (SMALL_EVENTS)
                    self._ahead.add(it.seq)
                    self._filled.add(it.seq)
            out.append(it)
            size += len(it.request.body) + ROW_BYTES
            if max_bytes is not None and size >= max_bytes:
                break
        self.rows_read += len(out)
        return out


class _Candidates(Sequence):
    """The recordings of one key in recorded order, read a page at a time as the matcher
    walks them (a key with a million recordings costs one page until more are needed)."""

    def __init__(self, source: SqliteSource, key: Key):
        self._source = source
        self._key = key
        self._items: list[Interaction] = []
        self._done = False
        self._len: int | None = None

    def _more(self) -> bool:
        # Under the source's lock: the matcher scans on while a worker thread indexes the key.
        with self._source._lock:
            if self._done:
                return False
            after = self._items[-1].seq if self._items else 0
            size = min(PAGE, FIRST_PAGE << (len(self._items) // FIRST_PAGE).bit_length())
            page = self._source.rows(f"{_KEY} AND i.seq > ?", (*_key_args(self._key), after), size, PAGE_BYTES,
                                     events=True)
            self._items += page
            if len(page) < size and sum(len(it.request.body) + ROW_BYTES for it in page) < PAGE_BYTES:
                self._done = True
                self._len = len(self._items)
            return bool(page)

    def __len__(self) -> int:
        if self._len is None:
            s = self._source
            with s._lock:
                self._len = s.cassette._read(f"SELECT count(*) FROM interactions i WHERE {_KEY} AND i.seq <= ?",
                                             (*_key_args(self._key), s.last_seq)).fetchone()[0]
        return self._len

    def __getitem__(self, i):
        try:  # a candidate read already: what the matcher asks for most
            if i >= 0:
                return self._items[i]
        except (IndexError, TypeError):  # not read yet, or a slice
            pass
        if isinstance(i, slice) or i < 0:
            while self._more():
                pass
            return self._items[i]
        while i >= len(self._items) and self._more():
            pass
        return self._items[i]

    def __iter__(self) -> Iterator[Interaction]:
        i = 0
        while True:
            while i < len(self._items):
                yield self._items[i]
                i += 1
            if not self._more():
                return

    def __bool__(self) -> bool:
        return bool(self._items) or self._more()
