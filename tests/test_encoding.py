"""proxy.encoding: one Content-Encoding codec for the recorder, replay and audit."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import zlib

import brotli
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.encoding import (
    BodyTooLarge,
    DecodeError,
    Decoder,
    Encoder,
    UnsupportedEncoding,
    codings,
    decode_body,
    encode_body,
)

EXAMPLES = int(os.environ.get("PROXY_HYPOTHESIS_EXAMPLES", "40"))
PROP = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

single = st.sampled_from(["gzip", "x-gzip", "deflate", "br", "zstd", "identity", "GZIP", " br "])
stacked = st.lists(single, min_size=1, max_size=3).map(", ".join)
bodies = st.one_of(st.binary(max_size=3000), st.text(max_size=2000).map(str.encode),
                   st.integers(0, 200_000).map(lambda n: b"data: {\"delta\":\"x\"}\n\n" * (n // 20)))


def test_codings_are_normalised_in_applied_order():
    assert codings("gzip, br") == ["gzip", "br"]
    assert codings("identity, X-GZIP ,,zstd") == ["gzip", "zstd"]
    assert codings(None) == codings("") == codings("identity") == []
    with pytest.raises(UnsupportedEncoding, match="compress"):
        codings("gzip, compress")


@PROP
@given(bodies, stacked)
def test_round_trip_any_stack(body, encoding):
    assert decode_body(encode_body(body, encoding), encoding) == body


@PROP
@given(bodies, stacked, st.lists(st.integers(1, 4000), min_size=1, max_size=20))
def test_streamed_decoding_equals_whole_decoding_whatever_the_chunking(body, encoding, cuts):
    encoded = encode_body(body, encoding)
    d, out, pos = Decoder(encoding), b"", 0
    for cut in cuts:
        out += d.feed(encoded[pos : pos + cut])
        pos += cut
    out += d.feed(encoded[pos:]) + d.finish()
    assert out == body


@PROP
@given(st.lists(st.binary(max_size=500), min_size=1, max_size=8), stacked)
def test_encoder_keeps_chunk_boundaries(chunks, encoding):
    """After each fed chunk the output so far decodes to the input so far, so a
    re-encoded stream can keep its chunks."""
    enc, out, sent = Encoder(encoding), b"", b""
    for chunk in chunks:
        out += enc.feed(chunk)
        sent += chunk
        d = Decoder(encoding)
        assert d.feed(out) == sent
    out += enc.finish()
    assert decode_body(out, encoding) == sent


def test_multi_frame_zstd_multi_member_gzip_raw_deflate():
    parts = [bytes([i]) * 1000 for i in range(200)]
    frames = b"".join(zstandard.ZstdCompressor().compress(p) for p in parts)
    assert decode_body(frames, "zstd") == b"".join(parts)
    members = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decode_body(members, "gzip") == decode_body(members, "x-gzip") == b"first second"
    assert decode_body(members + b"\0" * 8, "gzip") == b"first second"  # zero padding, as gzip(1) allows
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = c.compress(b"raw deflate " * 100) + c.flush()
    assert decode_body(raw, "deflate") == b"raw deflate " * 100
    assert decode_body(zlib.compress(b"zlib"), "deflate") == b"zlib"
    assert decode_body(gzip.compress(gzip.compress(b"twice")), "gzip, gzip") == b"twice"
    assert decode_body(gzip.compress(b"x"), "identity, gzip") == b"x"
    assert decode_body(brotli.compress(gzip.compress(b"both")), "gzip, br") == b"both"


@pytest.mark.parametrize(
    "data, encoding, message",
    [
        (b"not compressed", "gzip", "not gzip"),
        (gzip.compress(b"x" * 100)[:-6], "gzip", "truncated"),
        (gzip.compress(b"x") + b"junk", "gzip", "trailing garbage"),
        (b"not compressed", "zstd", "zstd"),
        (zstandard.ZstdCompressor().compress(b"x" * 1000)[:-3], "zstd", "truncated"),
        (b"not compressed", "br", "br"),
        (brotli.compress(b"x" * 1000)[:-2], "br", "truncated"),
        (b"not compressed", "deflate", "deflate"),
        (zlib.compress(b"x") + b"more", "deflate", "after the end"),
        (gzip.compress(b"x"), "gzip, gzip", "not gzip"),
        (b"x", "compress", "unsupported"),
    ],
)
def test_garbage_is_a_decode_error_never_raw_bytes(data, encoding, message):
    with pytest.raises(DecodeError, match=message):
        decode_body(data, encoding)


def test_limit_is_a_distinct_error():
    body = b"a" * 100_000
    for encoding in ("gzip", "deflate", "br", "zstd", "gzip, zstd"):
        encoded = encode_body(body, encoding)
        assert decode_body(encoded, encoding, limit=100_000) == body
        with pytest.raises(BodyTooLarge):
            decode_body(encoded, encoding, limit=99_999)
    assert decode_body(encode_body(body, "br"), "br", limit=None) == body


BOMB = """
import resource, sys, zlib, brotli, zstandard
from proxy.encoding import BodyTooLarge, decode_body
enc, mb = sys.argv[1], 300
zeros = bytes(1 << 20)
if enc == "zstd":
    c = zstandard.ZstdCompressor(level=3).compressobj(); bomb = b"".join(c.compress(zeros) for _ in range(mb)) + c.flush()
elif enc == "gzip":
    c = zlib.compressobj(9, zlib.DEFLATED, 31); bomb = b"".join(c.compress(zeros) for _ in range(mb)) + c.flush()
else:
    c = brotli.Compressor(quality=1); bomb = b"".join(c.process(zeros) for _ in range(mb)) + c.finish()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_body(bomb, enc, limit=16 << 20)
except BodyTooLarge:
    print(len(bomb), before >> 10, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10)
"""


@pytest.mark.parametrize("encoding", ["zstd", "gzip", "br"])
def test_a_decompression_bomb_stops_at_the_limit(encoding):
    """300 MB of zeros in a few KB: with a 16 MB limit the process grows by tens of MB, not 300."""
    r = subprocess.run([sys.executable, "-c", BOMB, encoding], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    size, before, after = map(int, r.stdout.split())
    assert size < 400_000
    assert after - before < 80, (before, after)
