"""What the readers and writers of other formats share: their error, the response
headers that must agree with a body as it is replayed, and redaction of an
imported interaction (the recorder's rules)."""

from __future__ import annotations

from ..encoding import DecodeError, decode_body
from ..model import Headers, Interaction
from ..redaction import Redactor


class ConvertError(ValueError):
    """The file is not what it was taken for (a VCR.py cassette, a HAR file)."""


def fix_body_headers(headers: Headers, body: bytes, stored_decoded: bool) -> Headers:
    """Response headers that agree with ``body`` as it will be replayed.

    ``stored_decoded``: the source keeps bodies decoded (HAR), so a ``Content-Encoding``
    no longer applies. Otherwise (VCR.py) the header stays when the body decodes as it
    says and goes when it does not (aiohttp's stub stores decoded bodies). A
    ``Content-Length`` is set to the body's length either way."""
    encoding = next((v for k, v in headers if k.lower() == "content-encoding"), None)
    drop_encoding = False
    if encoding and body:
        if stored_decoded:
            drop_encoding = True
        else:
            try:
                decode_body(body, encoding)
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
    """What the recorder scrubs, scrubbed the same way: headers, query, bodies, chunks, frames."""
    it.request.headers = r.headers(it.request.headers)
    it.request.query = r.query(it.request.query)
    it.request.body = r.body(it.request.body)
    if it.response is not None:
        it.response.headers = r.headers(it.response.headers)
    for c in it.chunks:
        c.data = r.data(c.data)
    for f in it.frames:
        f.payload = r.data(f.payload)
    return it
