"""Redaction: pure functions applied to everything before it is stored.

Rules (on by default, see DESIGN.md): the headers in ``DEFAULT_HEADERS`` are stored
as ``REDACTED``; API-key shaped strings (``sk-...``) are scrubbed from every body,
chunk and frame; query parameters that carry keys are replaced. More header
names, JSON paths and regex patterns can be added. The replay server applies the
same rules to incoming requests, so matching compares like with like.

Known limit: a key split across two streamed chunks is not recognised in either
half (model APIs do not echo keys in responses; requests are redacted whole).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from .jsonpath import delete_paths, set_paths
from .model import Headers

REDACTED = "REDACTED"

DEFAULT_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "openai-api-key",
        "cookie",
        "set-cookie",
        "chatgpt-account-id",
    }
)
DEFAULT_QUERY_PARAMS = frozenset({"api-key", "api_key", "apikey", "key", "access_token", "token"})
# sk-..., sk-proj-..., sk-ant-...: at least 16 key characters after the prefix
DEFAULT_PATTERNS = (r"sk-[A-Za-z0-9_\-]{16,}",)


@dataclass(frozen=True)
class Redactor:
    header_names: frozenset[str] = DEFAULT_HEADERS
    query_params: frozenset[str] = DEFAULT_QUERY_PARAMS
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    json_paths: tuple[str, ...] = ()
    enabled: bool = True
    _compiled: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._compiled.extend(re.compile(p.encode()) for p in self.patterns)

    @classmethod
    def build(
        cls,
        extra_headers=(),
        extra_patterns=(),
        json_paths=(),
        enabled: bool = True,
    ) -> "Redactor":
        return cls(
            header_names=DEFAULT_HEADERS | {h.lower() for h in extra_headers},
            patterns=DEFAULT_PATTERNS + tuple(extra_patterns),
            json_paths=tuple(json_paths),
            enabled=enabled,
        )

    def headers(self, headers: Headers) -> Headers:
        if not self.enabled:
            return list(headers)
        return [
            (k, REDACTED if k.lower() in self.header_names else self.text(v)) for k, v in headers
        ]

    def query(self, query: str) -> str:
        if not self.enabled or not query:
            return query
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(k.lower() in self.query_params for k, _ in pairs) and not self._hit(query.encode()):
            return query
        return urlencode(
            [(k, REDACTED if k.lower() in self.query_params else self.text(v)) for k, v in pairs]
        )

    def data(self, data: bytes) -> bytes:
        if not self.enabled or not data:
            return data
        for rx in self._compiled:
            data = rx.sub(REDACTED.encode(), data)
        return data

    def text(self, value: str) -> str:
        if not self.enabled:
            return value
        return self.data(value.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def body(self, data: bytes) -> bytes:
        """A whole request body: JSON paths first (when it parses), then patterns."""
        if self.enabled and self.json_paths and data:
            try:
                doc = json.loads(data)
            except ValueError:
                pass
            else:
                if set_paths(doc, self.json_paths, REDACTED):
                    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        return self.data(data)

    def _hit(self, data: bytes) -> bool:
        return any(rx.search(data) for rx in self._compiled)


NO_REDACTION = Redactor(enabled=False)
__all__ = ["Redactor", "REDACTED", "NO_REDACTION", "delete_paths"]
