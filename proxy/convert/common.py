"""What the readers and writers of other formats share: their error, the response
headers that must agree with a body as it is replayed, and redaction of an
imported interaction (the recorder's rules)."""

from __future__ import annotations

from ..encoding import BodyTooLarge, DecodeError, UnsupportedEncoding, decode_body
from ..model import Chunk, Headers, Interaction
from ..redaction import Redactor


class ConvertError(ValueError):
    """The file is not what it was taken for (a VCR.py cassette, a HAR file)."""


def fix_body_headers(headers: Headers, body: bytes, stored_decoded: bool) -> Headers:
    """Response headers that agree with ``body`` as it will be replayed.

    ``stored_decoded``: the source keeps bodies decoded (HAR), so a ``Content-Encoding``
    no longer applies. Otherwise (VCR.py) the header stays when the body decodes as it
    says and goes when it does not (aiohttp's stub stores decoded bodies); a coding that
    cannot be checked (unknown here, or past the decoding limit) stays. A
    ``Content-Length`` is set to the body's length either way."""
    encoding = next((v for k, v in headers if k.lower() == "content-encoding"), None)
    drop_encoding = False
    if encoding and body:
        if stored_decoded:
            drop_encoding = True
        else:
            try:
                decode_body(body, encoding)
            except (UnsupportedEncoding, BodyTooLarge):  # not checked, so not known to be decoded
                pass
            except DecodeError:
                drop_encoding = True
    out = []
    for k, v in headers:
        if drop_encoding and k.lower() == "content-encoding":
            continue
        if k.lower() == "content-length":
            v = str(len(body))
        out.append((k, v))
    return out


def redact(it: Interaction, r: Redactor) -> Interaction:
    """What the recorder scrubs, scrubbed the same way (``proxy.redaction``): path, query
    and headers; the request body (held decoded); the response body through the same
    stream redactor as a recording, content encoding included, so a compressed body with
    a secret is re-encoded and its content-length follows; WebSocket frames per session;
    end details and close reasons."""
    req = it.request
    req.path, req.query = r.path(req.path), r.query(req.query)
    req.headers = r.headers(req.headers)
    req.body = r.body(req.body)
    it.end_detail = r.text(it.end_detail)
    if it.response is not None:
        it.response.headers = r.headers(it.response.headers)
    if it.chunks:
        body = r.response_body(it.response.header("content-encoding") if it.response else None)
        released = [out for c in it.chunks for out in body.feed(c.data, c.offset)] + body.finish()
        it.chunks = [Chunk(offset, clean) for offset, clean in released]
        if body.length_changed and it.response is not None and it.response.header("content-length") is not None:
            size = str(sum(len(c.data) for c in it.chunks))
            it.response.headers = [(k, size if k.lower() == "content-length" else v) for k, v in it.response.headers]
    if it.frames:
        frames = r.frames()
        released = [out for f in it.frames for out in frames.feed(f.direction, f.payload, f)] + frames.finish()
        for f, clean in released:
            f.payload = clean
    if it.close is not None:
        it.close.reason = r.text(it.close.reason)
    return it
