"""Content-Encoding decoding for request bodies (zstd, gzip, deflate, br is not supported).

Used by the recorder (when mitmproxy is not asked to decode) and by the replay
server, which must decode an incoming body exactly as the recorder did before
comparing bodies.
"""

from __future__ import annotations

import gzip
import zlib

import zstandard


class DecodeError(ValueError):
    pass


def decode_body(data: bytes, encoding: str | None) -> bytes:
    """Return ``data`` with its Content-Encoding removed. Raises DecodeError on garbage."""
    if not encoding or not data:
        return data
    enc = encoding.strip().lower()
    try:
        if enc in ("identity", ""):
            return data
        if enc == "zstd":
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if enc in ("gzip", "x-gzip"):
            return gzip.decompress(data)
        if enc == "deflate":
            try:
                return zlib.decompress(data)
            except zlib.error:
                return zlib.decompress(data, -zlib.MAX_WBITS)
    except (zstandard.ZstdError, OSError, EOFError, zlib.error) as e:
        raise DecodeError(f"cannot decode {enc} body: {e}") from e
    raise DecodeError(f"unsupported content-encoding {encoding!r}")
