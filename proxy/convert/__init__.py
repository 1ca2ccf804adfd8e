"""Cassettes in and out: ``proxy import`` reads VCR.py cassettes (``vcr``) and HAR 1.2
files (``har``: browsers, mitmproxy's HAR export, Chrome's ``_webSocketMessages``) into
a new cassette, keeping whatever timing the source has; ``proxy export --har`` writes a
cassette as HAR 1.2 for Chrome DevTools and other HAR viewers.

Imported interactions are redacted like recorded ones (the same Redactor, before
anything is stored) and written through the public ``Cassette`` API (create, append).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..model import Interaction, origin
from ..record import RedactionOptions
from ..store import Cassette, CassetteError
from .common import ConvertError, redact
from .har import export_har, load_har, read_har
from .vcr import read_vcr

__all__ = ["ConvertError", "FORMATS", "Imported", "export_har", "import_into", "read", "read_har", "read_vcr"]


FORMATS = ("vcr", "har")


def detect(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".har":
        return "har"
    if suffix in (".yaml", ".yml"):
        return "vcr"
    head = path.read_text(encoding="utf-8", errors="replace")[:4096]
    if '"log"' in head:
        return "har"
    if "interactions" in head:
        return "vcr"
    raise ConvertError(f"{path}: neither a VCR.py cassette nor a HAR file (name it .yaml or .har, or pass --format)")


@dataclass
class Imported:
    format: str
    interactions: list[Interaction]
    skipped: list[str] = field(default_factory=list)  # entries that could not be imported, and why
    meta: dict[str, str] = field(default_factory=dict)  # our own export's upstream and mode


def read(path: str | Path, fmt: str | None = None) -> Imported:
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    fmt = fmt or detect(path)
    if fmt == "vcr":
        return Imported("vcr", read_vcr(path))
    if fmt == "har":
        interactions, skipped, meta = load_har(path)
        return Imported("har", interactions, skipped, meta)
    raise ConvertError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def import_into(sources: list[str | Path], cassette: str | Path, fmt: str | None = None,
                redaction: RedactionOptions = RedactionOptions()) -> list[Imported]:
    """Read every source (in order) and write them into a new cassette."""
    read_all = [read(s, fmt) for s in sources]  # every file is read before anything is written
    interactions = [it for imp in read_all for it in imp.interactions]
    if not interactions:
        raise ConvertError("nothing to import: " + "; ".join(s for imp in read_all for s in imp.skipped or ["no entries"]))
    first = interactions[0].request
    upstream = origin(first.scheme or "http", first.host, first.port)  # IPv6 in brackets
    mode = "import"
    if all(imp.meta.get("mode") == "forward" for imp in read_all):  # our export of forward-mode cassettes
        upstream, mode = read_all[0].meta.get("upstream", upstream), "forward"
    if Path(cassette).exists():
        raise CassetteError(cassette, "already exists; import into a new cassette")
    redactor = redaction.redactor()
    with Cassette.create(cassette, upstream=upstream, mode=mode,
                         imported_from=", ".join(f"{Path(s).name} ({imp.format})" for s, imp in zip(sources, read_all))
                         ) as c:
        for it in interactions:
            c.append(redact(it, redactor))
    return read_all
