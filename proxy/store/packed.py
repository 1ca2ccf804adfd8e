"""The bytes inside a cassette's blobs: one rule for every blob, one format for events.

Blob rules
----------
1. A blob column (``request_bodies.data``, ``events.data``) holds exactly one zstd frame,
   written with a content checksum and the content size. There is no second variant
   ("raw", "packed-zstd", ...) and no column saying how to read a blob: the frame says it.
2. A frame compressed with a dictionary names it in its header (zstd's dictionary id);
   that id is the ``dictionaries.id`` of the row holding the dictionary. Id 0: none.
3. Reading a blob checks it, every time: the frame must carry a checksum and a content
   size, decode completely, and decode to exactly that size; zstd verifies the checksum
   (XXH64 of the content). A blob that fails is damage (:class:`Damaged`), never bytes served.
4. Empty content is not stored at all (no row), so no blob is empty.

Packed events: the content of an ``events`` blob
------------------------------------------------
::

    u32  count                                 little-endian, like everything here
    count x (f64 offset, u32 size, u8 kind)    13 bytes each
    the payloads, concatenated in the same order

``offset`` is seconds since the request (or handshake request) arrived. ``kind``:
0 server chunk (an HTTP response body chunk), 1 client text frame, 2 client binary
frame, 3 server text frame, 4 server binary frame. Events are kept in the order they
were recorded and never sorted: offsets come from a wall clock, which can step back.

An interaction's events are the concatenation of its parts (``events.part`` ascending).
The recorder writes one part per commit while an interaction is in flight and folds
them into one part when it finishes, so a finished interaction has exactly one part; one
cut short by a killed recorder keeps the parts that were committed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

import zstandard

from ..model import Chunk, Direction, Frame, Interaction

LEVEL = 3  # zstd level for every blob: fast enough for the recorder's writer thread

Event = tuple[float, int, bytes]  # (offset, kind, payload)

CHUNK, CLIENT_TEXT, CLIENT_BINARY, SERVER_TEXT, SERVER_BINARY = range(5)
_FRAME_KIND = {
    (Direction.CLIENT, True): CLIENT_TEXT,
    (Direction.CLIENT, False): CLIENT_BINARY,
    (Direction.SERVER, True): SERVER_TEXT,
    (Direction.SERVER, False): SERVER_BINARY,
}
_KIND_FRAME = {v: k for k, v in _FRAME_KIND.items()}

_COUNT = struct.Struct("<I")
_INDEX = struct.Struct("<dIB")


class Damaged(ValueError):
    """A blob or its packed content fails a check; the message says which."""


# -- events <-> packed bytes ----------------------------------------------------


def chunk_event(chunk: Chunk) -> Event:
    return (chunk.offset, CHUNK, chunk.data)


def frame_event(frame: Frame) -> Event:
    return (frame.offset, _FRAME_KIND[(frame.direction, frame.is_text)], frame.payload)


def interaction_events(it: Interaction) -> list[Event]:
    """An interaction's chunks then frames (an HTTP exchange has only chunks, a
    WebSocket session only frames), each list in its recorded order."""
    return [chunk_event(c) for c in it.chunks] + [frame_event(f) for f in it.frames]


def is_server_data(kind: int) -> bool:
    return kind in (CHUNK, SERVER_TEXT, SERVER_BINARY)


def pack_events(events: Iterable[Event]) -> bytes:
    events = list(events)
    index = [_COUNT.pack(len(events))]
    index += [_INDEX.pack(off, len(data), kind) for off, kind, data in events]
    return b"".join(index) + b"".join(data for _, _, data in events)


def unpack_events(raw: bytes) -> list[Event]:
    """The events of one part, in order. Raises Damaged if the bytes break the format."""
    if len(raw) < _COUNT.size:
        raise Damaged("events shorter than their count")
    (n,) = _COUNT.unpack_from(raw, 0)
    pos = _COUNT.size + n * _INDEX.size
    if pos > len(raw):
        raise Damaged("event index longer than the blob")
    out = []
    for off, size, kind in _INDEX.iter_unpack(raw[_COUNT.size : pos]):
        if kind > SERVER_BINARY:
            raise Damaged(f"unknown event kind {kind}")
        out.append((off, kind, raw[pos : pos + size]))
        pos += size
    if pos != len(raw):
        raise Damaged("event data does not match its index")
    return out


def events_into(it: Interaction, events: Iterable[Event]) -> Interaction:
    chunks, frames = it.chunks, it.frames
    for off, kind, data in events:
        if kind == CHUNK:
            chunks.append(Chunk(off, data))
        else:
            direction, is_text = _KIND_FRAME[kind]
            frames.append(Frame(direction, is_text, off, data))
    return it


# -- content <-> checked zstd frames ------------------------------------------------


# Small blobs opened (checked and decompressed) already, kept by their exact stored bytes:
# recordings of one exchange repeat the same small bodies and events (a poll, a load
# test), and opening a blob costs more than the rest of reading its row. Same bytes, same
# frame, same content: a kept one is the one opening it again would give. Small once open
# too (SMALL_CONTENT): a small blob can hold megabytes (a repeated byte packs ~10^4x).
SMALL_BLOB = 2048
SMALL_CONTENT = 8 * 2**10
SMALL_KEPT = 4096


class Blobs:
    """Compresses new blobs (with the cassette's dictionary, if it has one) and opens
    stored ones (with whichever dictionary their frame names), checking each (rule 3).

    ``load_dictionary(id)`` returns a dictionary's bytes, or None if there is no such row.
    """

    def __init__(self, load_dictionary: Callable[[int], bytes | None], dictionary: bytes | None = None):
        self._load = load_dictionary
        self._seen: dict[bytes, bytes] = {}  # small blobs opened already (by their exact bytes; see SMALL_BLOB)
        self._readers: dict[int, zstandard.ZstdDecompressor] = {0: zstandard.ZstdDecompressor()}
        self.dictionary_id = 0
        self._writer = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True, write_content_size=True)
        if dictionary is not None:
            self.use_dictionary(dictionary)

    def use_dictionary(self, data: bytes) -> int:
        """Compress new blobs with this dictionary. Raises Damaged if it does not load."""
        try:
            d = zstandard.ZstdCompressionDict(data)
            d.precompute_compress(level=LEVEL)
        except zstandard.ZstdError as e:
            raise Damaged(f"the dictionary is damaged ({e})") from None
        self.dictionary_id = d.dict_id()
        self._writer = zstandard.ZstdCompressor(level=LEVEL, dict_data=d, write_checksum=True, write_content_size=True)
        self._readers[self.dictionary_id] = zstandard.ZstdDecompressor(dict_data=d)
        return self.dictionary_id

    def pack(self, content: bytes) -> bytes:
        return self._writer.compress(content)

    def unpack(self, blob: bytes) -> bytes:
        blob = bytes(blob)
        if len(blob) <= SMALL_BLOB:
            content = self._seen.get(blob)
            if content is None:
                content = self._unpack(blob)
                if len(content) <= SMALL_CONTENT:
                    if len(self._seen) >= SMALL_KEPT:
                        self._seen.clear()
                    self._seen[blob] = content
            return content
        return self._unpack(blob)

    def _unpack(self, blob: bytes) -> bytes:
        try:
            params = zstandard.get_frame_parameters(blob)
        except zstandard.ZstdError as e:
            raise Damaged(f"not a zstd frame ({e})") from None
        if not params.has_checksum or params.content_size in (0, zstandard.CONTENTSIZE_UNKNOWN):
            raise Damaged("frame header lacks its checksum or size")
        reader = self._readers.get(params.dict_id)
        if reader is None:
            data = self._load(params.dict_id)
            if data is None:
                raise Damaged(f"compressed with dictionary {params.dict_id}, which the cassette lacks")
            try:
                reader = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data))
            except zstandard.ZstdError as e:
                raise Damaged(f"dictionary {params.dict_id} is damaged ({e})") from None
            self._readers[params.dict_id] = reader
        stream = reader.decompressobj()
        try:
            content = stream.decompress(blob)
        except zstandard.ZstdError as e:
            raise Damaged(f"does not decompress ({e})") from None
        if not stream.eof or stream.unused_data:
            raise Damaged("frame cut short" if not stream.eof else "bytes after the frame")
        if len(content) != params.content_size:
            raise Damaged("decompressed size differs from the frame's")
        return content
