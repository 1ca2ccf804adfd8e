"""Content-Encoding, decoded and encoded the same way everywhere.

The recorder, the replay server and ``proxy audit`` all read bodies through this
module, so a body decodes to the same bytes when it is recorded, when a request is
matched against it, and when a cassette is checked for secrets.

Rules:

* A ``Content-Encoding`` header lists the codings in the order they were applied
  (RFC 9110 8.4): ``gzip, br`` is gzip first, then br; decoding undoes them in
  reverse. ``identity`` and empty items are no-ops; ``x-gzip`` is ``gzip``; names
  are case-insensitive.
* Supported: ``gzip`` (every member of a multi-member file), ``deflate`` (zlib
  format, or raw deflate as some servers send it), ``br``, ``zstd`` (every frame
  of a multi-frame body). Anything else raises :class:`UnsupportedEncoding`.
* ``limit`` caps the decoded size of every stage. Past it, :class:`BodyTooLarge` is
  raised and no more is decoded: a 10 KB bomb that would expand to 300 MB costs at
  most about twice ``limit`` in memory, never the 300 MB.

Exceptions (each is a ``ValueError``)::

    DecodeError            the bytes are not valid in the declared encoding
      UnsupportedEncoding  a coding this module does not know
      BodyTooLarge         decoding would produce more than ``limit`` bytes

:class:`Decoder` and :class:`Encoder` do the same work incrementally, for streamed
bodies: ``Encoder.feed`` flushes, so every chunk it returns ends on a point where
the output so far decodes to the input so far (chunk boundaries can be kept).
"""

from __future__ import annotations

import zlib

import brotli
import zstandard

DEFAULT_LIMIT = 64 * 1024 * 1024

# The largest expansion one input byte can produce: a zstd RLE block is 4 bytes for
# 128 KiB of output. Input is fed in slices no larger than the remaining budget
# divided by this, so one call can overshoot the limit at most by the limit again.
_MAX_RATIO = 32_768
_STEP = 1 << 20  # output produced per call where the library lets us bound it

_ALIASES = {"x-gzip": "gzip", "gzip": "gzip", "deflate": "deflate", "br": "br", "zstd": "zstd"}
SUPPORTED = frozenset(_ALIASES)


class DecodeError(ValueError):
    """A body cannot be decoded as its Content-Encoding says."""


class UnsupportedEncoding(DecodeError):
    """A Content-Encoding this module does not implement."""


class BodyTooLarge(DecodeError):
    """Decoding would produce more than the ``limit`` the caller allowed."""


def codings(header: str | None) -> list[str]:
    """The codings of a Content-Encoding header, in the order they were applied,
    normalised (lower case, ``x-gzip`` -> ``gzip``, ``identity`` dropped).
    Raises UnsupportedEncoding for an unknown coding."""
    out = []
    for item in (header or "").split(","):
        name = item.strip().lower()
        if name in ("", "identity"):
            continue
        if name not in _ALIASES:
            raise UnsupportedEncoding(f"unsupported content-encoding {item.strip()!r}")
        out.append(_ALIASES[name])
    return out


def decode_body(data: bytes, encoding: str | None, limit: int | None = DEFAULT_LIMIT) -> bytes:
    """``data`` with its Content-Encoding removed; ``limit=None`` for no cap."""
    if not data or not codings(encoding):
        return data
    d = Decoder(encoding, limit)
    out = d.feed(data)
    return out + d.finish() if out else d.finish()


def encode_body(data: bytes, encoding: str | None) -> bytes:
    """``data`` with ``encoding`` applied (in the header's order)."""
    for name in codings(encoding):
        data = _ENCODE[name](data)
    return data


# -- decoding -------------------------------------------------------------------


class Decoder:
    """Incremental decoding of a (possibly stacked) Content-Encoding.

    ``feed`` returns what the bytes so far decode to; ``finish`` checks that the body
    was complete (a truncated stream raises DecodeError) and returns the rest.
    ``produced`` counts the decoded bytes so far.
    """

    def __init__(self, encoding: str | None, limit: int | None = DEFAULT_LIMIT):
        self.limit = limit
        self.produced = 0
        # applied gzip then br: undo br first
        self._stages = [_DECODERS[name](limit) for name in reversed(codings(encoding))]

    def feed(self, data: bytes) -> bytes:
        for stage in self._stages:
            if not data:
                return b""
            data = stage.feed(data)
        self.produced += len(data)
        return data

    def finish(self) -> bytes:
        out = b""
        for stage in self._stages:
            out = stage.feed(out) if out else b""
            out += stage.finish()
        self.produced += len(out)
        return out


class _Stage:
    def __init__(self, limit: int | None):
        self.limit = limit
        self.produced = 0
        self.done = False  # the coded stream ended (more input is trailing garbage)

    def _count(self, out: bytes | bytearray) -> None:
        self.produced += len(out)
        if self.limit is not None and self.produced > self.limit:
            raise BodyTooLarge(f"decoded body exceeds the limit of {self.limit} bytes")

    def _slice(self) -> int:
        if self.limit is None:
            return 1 << 62
        return max(64, (self.limit - self.produced) // _MAX_RATIO)

    def feed(self, data: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError


def _inflate(d, data: bytes, stage: "_Stage", out: bytearray) -> bytes:
    """Run zlib decompressobj ``d`` over ``data`` in bounded steps; returns the bytes
    after the end of the stream (``d.unused_data``) once ``d.eof``, else b""."""
    while True:
        step = 0 if stage.limit is None else min(_STEP, stage.limit - stage.produced + 1)
        piece = d.decompress(data, step)
        stage._count(piece)
        out += piece
        data = d.unconsumed_tail
        if d.eof:
            return d.unused_data + data
        if not data and (not step or len(piece) < step):
            return b""


class _Gzip(_Stage):
    """gzip: every member of a multi-member body; zero padding after the last one."""

    def __init__(self, limit):
        super().__init__(limit)
        self._d = None  # the member in progress

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        try:
            while data:
                if self._d is None:
                    if self.done or data[0] != 0x1F:
                        # after the last member only zero padding may follow (as gzip(1) allows)
                        if data.strip(b"\x00"):
                            raise DecodeError("cannot decode gzip body: trailing garbage after the last member"
                                              if self.produced or self.done else "cannot decode gzip body: not gzip")
                        self.done = True
                        break
                    self._d = zlib.decompressobj(31)
                data = _inflate(self._d, data, self, out)
                if self._d.eof:
                    self._d = None  # another member may follow
        except zlib.error as e:
            raise DecodeError(f"cannot decode gzip body: {e}") from None
        return bytes(out)

    def finish(self) -> bytes:
        if self._d is not None:
            raise DecodeError("cannot decode gzip body: truncated")
        return b""


class _Deflate(_Stage):
    """deflate: the zlib format, or raw deflate (no header) as some servers send it;
    the first two bytes tell which, and a wrong guess is retried before any output."""

    def __init__(self, limit):
        super().__init__(limit)
        self._d = None
        self._seen = b""  # input kept until the first output, for the raw retry

    def feed(self, data: bytes) -> bytes:
        if self.done:
            if data:
                raise DecodeError("cannot decode deflate body: data after the end of the stream")
            return b""
        out = bytearray()
        if self._d is None:
            self._seen += data
            if len(self._seen) < 2:
                return b""
            b0, b1 = self._seen[0], self._seen[1]
            zlib_header = (b0 & 0x0F) == 8 and (b0 * 256 + b1) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
            self._raw = not zlib_header
            data = self._seen
        elif not self.produced:
            self._seen += data
        try:
            rest = _inflate(self._d, data, self, out)
        except zlib.error as e:
            if self._raw or self.produced or out:
                raise DecodeError(f"cannot decode deflate body: {e}") from None
            self._raw, self._d = True, zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                rest = _inflate(self._d, self._seen, self, out)
            except zlib.error as e2:
                raise DecodeError(f"cannot decode deflate body: {e2}") from None
        if self.produced:
            self._seen = b""
        if self._d.eof:
            self.done = True
            if rest:
                raise DecodeError("cannot decode deflate body: data after the end of the stream")
        return bytes(out)

    def finish(self) -> bytes:
        if not self.done:
            raise DecodeError("cannot decode deflate body: truncated")
        return b""


class _Brotli(_Stage):
    def __init__(self, limit):
        super().__init__(limit)
        self._d = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        if self.done:
            raise DecodeError("cannot decode br body: data after the end of the stream")
        out = bytearray()
        try:
            piece = self._d.process(data, output_buffer_limit=_STEP)
            self._count(piece)
            out += piece
            while not self._d.can_accept_more_data():
                piece = self._d.process(b"", output_buffer_limit=_STEP)
                self._count(piece)
                out += piece
        except brotli.error as e:
            raise DecodeError(f"cannot decode br body: {e}") from None
        self.done = self._d.is_finished()
        return bytes(out)

    def finish(self) -> bytes:
        if not self._d.is_finished():
            raise DecodeError("cannot decode br body: truncated")
        return b""


class _Zstd(_Stage):
    def __init__(self, limit):
        super().__init__(limit)
        self._d = None  # the frame in progress
        self._pending = b""  # bytes of a frame not yet started (magic not complete)

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        data = self._pending + data if self._pending else data
        self._pending = b""
        view, pos = memoryview(data), 0  # slices of a view: no copy of the rest per step
        try:
            while pos < len(data):
                if self._d is None:
                    if len(data) - pos < 4:
                        self._pending = bytes(view[pos:])
                        break
                    self._d = zstandard.ZstdDecompressor().decompressobj(write_size=65_536)
                n = self._slice()
                piece = self._d.decompress(view[pos : pos + n])
                pos = min(len(data), pos + n)
                self._count(piece)
                out += piece
                if self._d.eof:
                    # unused_data is the tail of the slice just fed: the next frame starts there
                    pos -= len(self._d.unused_data)
                    self._d = None
        except zstandard.ZstdError as e:
            raise DecodeError(f"cannot decode zstd body: {e}") from None
        return bytes(out)

    def finish(self) -> bytes:
        if self._d is not None or self._pending:
            raise DecodeError("cannot decode zstd body: truncated")
        return b""


_DECODERS = {
    "gzip": _Gzip,
    "deflate": _Deflate,
    "br": _Brotli,
    "zstd": _Zstd,
}


# -- encoding -------------------------------------------------------------------


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


_ENCODE = {
    "gzip": _gzip,
    "deflate": lambda data: zlib.compress(data, 6),
    "br": lambda data: brotli.compress(data, quality=5),
    "zstd": lambda data: zstandard.ZstdCompressor(level=3).compress(data),
}


class Encoder:
    """Incremental encoding that keeps chunk boundaries: each ``feed`` returns bytes
    that, joined with everything returned before, decode to all the input so far
    (a sync flush per call). ``finish`` ends the stream."""

    def __init__(self, encoding: str | None):
        self._stages = [_ENCODERS[name]() for name in codings(encoding)]

    def feed(self, data: bytes) -> bytes:
        for stage in self._stages:
            data = stage.feed(data)
        return data

    def finish(self) -> bytes:
        out = b""
        for stage in self._stages:
            out = (stage.feed(out) if out else b"") + stage.finish()
        return out


class _ZlibEnc:
    def __init__(self, wbits: int):
        self._c = zlib.compressobj(6, zlib.DEFLATED, wbits)

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


class _BrotliEnc:
    def __init__(self):
        self._c = brotli.Compressor(quality=5)

    def feed(self, data: bytes) -> bytes:
        return self._c.process(data) + self._c.flush()

    def finish(self) -> bytes:
        return self._c.finish()


class _ZstdEnc:
    def __init__(self):
        self._c = zstandard.ZstdCompressor(level=3).compressobj()

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self._c.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


_ENCODERS = {
    "gzip": lambda: _ZlibEnc(31),
    "deflate": lambda: _ZlibEnc(zlib.MAX_WBITS),
    "br": _BrotliEnc,
    "zstd": _ZstdEnc,
}

__all__ = [
    "DEFAULT_LIMIT",
    "BodyTooLarge",
    "DecodeError",
    "Decoder",
    "Encoder",
    "UnsupportedEncoding",
    "codings",
    "decode_body",
    "encode_body",
]
