"""``proxy audit``: prove that a cassette holds no secret, by reading it fully decoded.

A grep of the file proves nothing: bodies and headers are stored zstd-compressed,
response bodies may be gzip/br/zstd/deflate as the upstream sent them, keys travel
base64-encoded or JSON-escaped. So the audit reads every interaction through the
store and looks at:

* the request line: path (raw and percent-decoded), query (each value decoded too),
  host; the request and response headers; the response reason, the end detail and
  WebSocket close reason; the cassette's meta values;
* request bodies as stored, and decoded again by their recorded Content-Encoding
  when the stored bytes are still encoded; response bodies joined from their chunks
  (so a key split across chunks is seen) and decoded by the response's
  Content-Encoding, also when cut short (what decodes is scanned);
* WebSocket frames one by one, and each direction's frames joined (a key split
  across frames);
* inside each of those: JSON strings (so ``\\u0073k-...`` is seen), SSE ``data:``
  lines, and base64 / base64url runs, decoded (and gunzipped / unzstd'ed when they
  hold compressed bytes), two levels deep;
* the raw bytes of the file and of its ``-wal``, for what the live rows no longer
  show (freed pages, superseded WAL frames), and zstd frames found in them.

It looks for the formats in ``redaction.RULES``, the values of the auditing
process's secret-named environment variables (``redaction.env_secrets``), any
extra patterns, a secret header (``redaction.SECRET_HEADERS``, ``*authorization*``)
whose value is not ``REDACTED``, and a secret query parameter whose value is not.

The cassette is never changed: it is copied (with its ``-wal``) to a temporary
directory and read there. A finding is data (:class:`Finding`); its value is masked.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, unquote_plus

import zstandard

from .encoding import DEFAULT_LIMIT, DecodeError, Decoder
from .model import Interaction, Kind
from .redaction import REDACTED, Detector, Redactor, base64_runs
from .store import Cassette, CassetteError, CassetteMissing, NotACassette, OldSchema, migrate

DEPTH = 2  # base64 inside base64 inside a body; deeper is not looked at
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass(frozen=True)
class Finding:
    """One secret in one place. ``interaction`` is the recorded order (``seq``), or
    None for the file's raw bytes and meta values."""

    file: str
    interaction: int | None
    location: str
    kind: str
    masked: str

    def __str__(self) -> str:
        seq = "-" if self.interaction is None else self.interaction
        return f"{self.file} #{seq} {self.location} {self.kind} {self.masked}"


def mask(value: bytes, kind: str) -> str:
    """Enough to recognise the format, nothing of the secret: a key's public prefix
    (at most 4 characters) and the length; nothing at all of an environment value."""
    n = len(value)
    if kind.startswith(("env:", "secret-")) or kind == "pattern":
        return f"[{n} bytes]"
    head = value[:4].decode("ascii", "replace")
    if not head.isprintable():
        head = ""
    return f"{head}…[{n} bytes]"


class Auditor:
    """Scans cassettes with one Redactor's rules (default: the built-in rules and
    this process's secret-named environment variables)."""

    def __init__(self, redactor: Redactor | None = None, limit: int = DEFAULT_LIMIT):
        self.redactor = redactor or Redactor.build()
        self.detector: Detector = self.redactor.detector
        self.limit = limit

    # -- files ------------------------------------------------------------------

    def file(self, path) -> list[Finding]:
        """Every finding in one cassette. Raises store.CassetteError when the file
        is not a readable cassette."""
        path = Path(path)
        name = str(path)
        if not path.exists():
            raise CassetteMissing(path, "no such cassette file")
        if path.is_dir():
            raise NotACassette(path, "is a directory, not a cassette file")
        wal = Path(name + "-wal")
        with tempfile.TemporaryDirectory(prefix="proxy-audit-") as tmp:
            copy = Path(tmp) / "cassette.db"
            shutil.copyfile(path, copy)
            raw = [("file", copy.read_bytes())]
            if wal.exists():
                shutil.copyfile(wal, Path(str(copy) + "-wal"))
                raw.append(("wal", Path(str(copy) + "-wal").read_bytes()))
            found: list[tuple[int | None, tuple]] = []
            try:
                try:
                    Cassette.open(copy).close()
                except OldSchema:  # an older cassette is audited too: migrate the copy, never the file
                    migrate(copy)
                with Cassette.open(copy) as c:
                    for key, value in sorted(c.meta.items()):
                        found += [(None, f) for f in self.scan_text(str(value), f"meta.{key}")]
                    for it in c.interactions():
                        found += [(it.seq, f) for f in self.interaction(it)]
            except CassetteError as e:  # name the file audited, not our copy (also in a hint)
                raise type(e)(path, e.problem.replace(str(copy), name)) from None
        seen = [f[3] for _, f in found]
        for where, data in raw:  # what the live rows no longer show
            for f in self._raw(data, where):
                # the raw bytes around a live value may extend its token: same secret
                if not any(v in f[3] or f[3] in v for v in seen):
                    seen.append(f[3])
                    found.append((None, f))
        return [Finding(name, seq, loc, kind, masked) for seq, (loc, kind, masked, _) in found]

    # -- interactions -----------------------------------------------------------------

    def interaction(self, it: Interaction) -> list[tuple[str, str, str, bytes]]:
        """(location, kind, masked, value) for every secret in one interaction."""
        out: list[tuple[str, str, str, bytes]] = []
        req, resp = it.request, it.response
        out += self.scan_text(req.path, "request.path")
        if unquote(req.path) != req.path:
            out += self.scan_text(unquote(req.path), "request.path.decoded")
        out += self._query(req.query)
        out += self.scan_text(req.host, "request.host")
        out += self._headers(req.headers, "request")
        body = req.body
        out += self.scan(body, "request.body")
        if req.body_encoding and body:
            decoded = self._decode(body, req.body_encoding)
            if decoded:
                out += self.scan(decoded, f"request.body.decoded({req.body_encoding})")
        if resp is not None:
            out += self._headers(resp.headers, "response")
            out += self.scan_text(resp.reason, "response.reason")
        out += self.scan_text(it.end_detail, "end_detail")
        if it.close is not None:
            out += self.scan_text(it.close.reason, "close.reason")
        if it.chunks:
            joined = b"".join(c.data for c in it.chunks)
            out += self.scan(joined, "response.body")
            enc = resp.header("content-encoding") if resp is not None else None
            if enc:
                decoded = self._decode(joined, enc)
                if decoded:
                    out += self.scan(decoded, f"response.body.decoded({enc})")
        if it.kind is Kind.WEBSOCKET or it.frames:
            out += self._frames(it)
        return _unique(out)

    def _headers(self, headers, side: str) -> list:
        out = []
        for k, v in headers:
            where = f"{side}.header[{k.lower()}]"
            if self.redactor.is_secret_header(k) and v != REDACTED and v:
                raw = v.encode("utf-8", "surrogateescape")
                out.append((where, "secret-header", mask(raw, "secret-header"), raw))
            out += self.scan_text(v, where)
        return out

    def _query(self, query: str) -> list:
        out = self.scan_text(query, "request.query")
        for part in query.split("&") if query else ():
            name, eq, value = part.partition("=")
            pname = unquote_plus(name)
            where = f"request.query[{pname}]"
            if eq and value and value != REDACTED and pname.lower() in self.redactor.query_params:
                raw = value.encode()
                out.append((where, "secret-param", mask(raw, "secret-param"), raw))
            if unquote_plus(value) != value:
                out += self.scan_text(unquote_plus(value), where + ".decoded")
        return out

    def _frames(self, it: Interaction) -> list:
        out = []
        for i, f in enumerate(it.frames, 1):
            kind = "text" if f.is_text else "binary"
            out += self.scan(f.payload, f"frame[{i}].{f.direction.value}.{kind}")
        # a secret split across two frames of one direction
        for direction in {f.direction for f in it.frames}:
            frames = [f.payload for f in it.frames if f.direction is direction]
            if len(frames) < 2:
                continue
            joined = b"".join(frames)
            ends, pos = [], 0
            for p in frames:
                pos += len(p)
                ends.append(pos)
            for h in self.detector.find(joined):
                if any(h.start < e < h.end for e in ends):
                    value = joined[h.start : h.end]
                    out.append((f"frames.{direction.value}(split)", h.kind, mask(value, h.kind), value))
        return out

    def _decode(self, data: bytes, encoding: str) -> bytes:
        """What ``data`` decodes to as far as it decodes (a cut stream still shows its
        start); b"" when nothing does."""
        try:
            d = Decoder(encoding, self.limit)
        except DecodeError:
            return b""
        out = bytearray()
        step = 65_536
        try:
            for i in range(0, len(data), step):
                out += d.feed(data[i : i + step])
            out += d.finish()
        except DecodeError:
            pass
        return bytes(out)

    # -- bytes ------------------------------------------------------------------

    def scan_text(self, text: str | None, location: str) -> list:
        if not text:
            return []
        return self.scan(text.encode("utf-8", "surrogateescape"), location, depth=1)

    def scan(self, data: bytes, location: str, depth: int = DEPTH) -> list:
        """(location, kind, masked, value) for each secret in ``data``, looking into
        JSON strings, SSE data lines and base64 runs."""
        if not data:
            return []
        out = []
        for h in self.detector.find(data):
            value = data[h.start : h.end]
            out.append((location, h.kind, mask(value, h.kind), value))
        for s in _json_strings(data):
            raw = s.encode("utf-8", "surrogateescape")
            if raw in data:
                continue  # same bytes as scanned above
            for h in self.detector.find(raw):
                value = raw[h.start : h.end]
                out.append((location + ".json", h.kind, mask(value, h.kind), value))
        if depth > 0:
            for _, _, decoded, _ in base64_runs(data):
                out += self.scan(decoded, location + ".base64", depth - 1)
                enc = _MAGIC.get(decoded[:2]) or _MAGIC.get(decoded[:4])
                if enc:
                    out += self.scan(self._decode(decoded, enc), f"{location}.base64.{enc}", depth - 1)
        return _unique(out)

    def _raw(self, data: bytes, where: str) -> Iterator[tuple[str, str, str, bytes]]:
        for h in self.detector.find(data):
            value = data[h.start : h.end]
            yield f"{where}@{h.start}", h.kind, mask(value, h.kind), value
        # zstd frames in pages (a blob that spans pages decodes up to the page end)
        i = data.find(b"\x28\xb5\x2f\xfd")
        while i >= 0:
            for h_loc, kind, m, value in self._zstd_at(data, i, where):
                yield h_loc, kind, m, value
            i = data.find(b"\x28\xb5\x2f\xfd", i + 4)

    def _zstd_at(self, data: bytes, i: int, where: str):
        d = zstandard.ZstdDecompressor().decompressobj()
        out = bytearray()
        try:
            for j in range(i, min(len(data), i + (1 << 20)), 4096):
                out += d.decompress(data[j : j + 4096])
                if len(out) > self.limit or d.eof:
                    break
        except zstandard.ZstdError:
            pass
        for h in self.detector.find(bytes(out)):
            value = bytes(out[h.start : h.end])
            yield f"{where}@{i}.zstd", h.kind, mask(value, h.kind), value


def _json_strings(data: bytes) -> Iterator[str]:
    """Every string in ``data`` parsed as JSON, or in each SSE ``data:`` line."""
    docs = []
    stripped = data.strip()
    if stripped[:1] in (b"{", b"[", b'"'):
        try:
            docs.append(json.loads(stripped))
        except ValueError:
            pass
    if not docs and b"data:" in data:
        for line in data.splitlines():
            if line.startswith(b"data:"):
                try:
                    docs.append(json.loads(line[5:]))
                except ValueError:
                    pass
    stack = docs
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


def _unique(found: Iterable[tuple[str, str, str, bytes]]) -> list:
    seen, out = set(), []
    for f in found:
        key = (f[0], f[1], f[3])
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def audit(paths: Iterable, redactor: Redactor | None = None) -> list[Finding]:
    """Findings in every cassette of ``paths``; raises store.CassetteError on the
    first file that is not a readable cassette."""
    auditor = Auditor(redactor)
    return [f for p in paths for f in auditor.file(p)]


__all__ = ["Auditor", "Finding", "audit", "mask"]
