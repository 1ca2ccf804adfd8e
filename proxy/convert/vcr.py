"""VCR.py cassettes (``version: 1``, YAML or JSON) -> Interactions.

The format: ``interactions: [{request: {method, uri, body, headers}, response: {status:
{code, message}, headers, body: {string}}}]``, headers as ``name: [values]``, bodies as
text or bytes (YAML ``!!binary``). Older httpx cassettes hold ``status_code`` and
``content`` instead. What the stubs stored differs, and is handled here:

- httpx and requests (urllib3) store the body as it came off the wire, so a gzip
  response is stored gzipped, with its ``Content-Encoding``: kept as it is.
- aiohttp stores the body *decoded* but keeps ``Content-Encoding`` (and the old
  ``Content-Length``): when the body does not decode as its header says, the header is
  dropped and the length set to the body's, so a client gets what aiohttp gave.

VCR.py keeps no timing: imported interactions have none (they replay at once), and a
stream is one chunk (VCR.py joined it).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from ..encoding import DecodeError, decode_body
from ..model import Chunk, End, Interaction, Kind, Request, Response
from .common import ConvertError, fix_body_headers


def _load(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as e:
            raise ConvertError(f"{path}: not a VCR.py JSON cassette ({e})") from None
    try:
        import yaml
    except ImportError:
        raise ConvertError("reading YAML cassettes needs PyYAML: pip install pyyaml") from None
    try:
        return yaml.safe_load(text)  # !!binary becomes bytes; python/object tags are refused
    except yaml.YAMLError as e:
        raise ConvertError(f"{path}: not a VCR.py cassette ({str(e).splitlines()[0]})") from None


def _bytes(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):  # a body written as {"string": ...}
        return _bytes(value.get("string"))
    return str(value).encode("utf-8")


def _headers(value) -> list[tuple[str, str]]:
    out = []
    for name, values in (value or {}).items():
        for v in values if isinstance(values, list) else [values]:
            out.append((str(name), str(v)))
    return out


def _request(raw: dict) -> Request:
    parts = urlsplit(str(raw.get("uri") or raw.get("url") or ""))
    if not parts.scheme or not parts.hostname:
        raise ConvertError(f"request without an absolute URI: {raw.get('uri')!r}")
    headers = _headers(raw.get("headers"))
    body = _bytes(raw.get("body"))
    encoding = next((v for k, v in headers if k.lower() == "content-encoding"), None)
    if encoding:
        try:
            body = decode_body(body, encoding)  # stored as sent; the cassette keeps it decoded
        except DecodeError:
            pass  # already decoded (or garbage): keep the bytes
    return Request(method=str(raw.get("method", "GET")).upper(), path=parts.path or "/", query=parts.query,
                   headers=headers, body=body, body_encoding=encoding, scheme=parts.scheme, host=parts.hostname,
                   port=parts.port or (443 if parts.scheme == "https" else 80))


def _response(raw: dict) -> tuple[Response, bytes]:
    if "status_code" in raw:  # httpx cassettes of older vcrpy versions
        status, reason, body = raw["status_code"], "", _bytes(raw.get("content"))
    else:
        st = raw.get("status") or {}
        status, reason, body = st.get("code"), st.get("message") or "", _bytes(raw.get("body"))
    if not isinstance(status, int):
        raise ConvertError(f"response without a status code: {raw.get('status')!r}")
    headers = fix_body_headers(_headers(raw.get("headers")), body, stored_decoded=False)
    return Response(status, str(reason), headers), body


def read_vcr(path: str | Path) -> list[Interaction]:
    path = Path(path)
    doc = _load(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("interactions"), list):
        raise ConvertError(f"{path}: not a VCR.py cassette (no interactions list)")
    out = []
    for i, entry in enumerate(doc["interactions"], 1):
        try:
            req = _request(entry["request"])
            resp, body = _response(entry["response"])
        except ConvertError as e:
            raise ConvertError(f"{path}: interaction {i}: {e}") from None
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # ValueError: a port out of range
            raise ConvertError(f"{path}: interaction {i} is malformed ({e!r})") from None
        out.append(Interaction(Kind.HTTP, req, resp, [Chunk(0.0, body)] if body else [], ttfb=0.0, duration=0.0,
                               end=End.COMPLETE))
    return out
