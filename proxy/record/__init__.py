"""Everything that runs mitmproxy (the ``record`` extra): the record addon (``addon``),
``connect_to``, the forward-mode front of the replay server (``front``), the addon that
reports the bound address (``ready``) and the in-process runner (``runner``). The only
package importing mitmproxy. Import its modules explicitly: importing this package
imports nothing heavy, so the configuration below is usable where mitmproxy is not
installed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..redaction import Redactor


class RecordError(Exception):
    """Recording cannot start: a bad upstream URL, a port in use, mitmproxy failing to listen."""


@dataclass(frozen=True)
class RedactionOptions:
    """Redaction as the user states it (the recorder's ``proxy_redact*`` options). Replay
    builds the same Redactor from it, so matching compares like with like."""

    headers: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    json_paths: tuple[str, ...] = ()
    enabled: bool = True

    def redactor(self) -> Redactor:
        """Raises re.error or jsonpath.PathError for a bad pattern or path."""
        return Redactor.build(self.headers, self.patterns, self.json_paths, enabled=self.enabled)


@dataclass
class RecordConfig:
    upstream: str | None
    cassette: str
    host: str = "127.0.0.1"
    port: int = 8080
    upstream_ca: str | None = None
    insecure: bool = False
    mode: str = "reverse"  # reverse | forward
    confdir: str | None = None
    connect_to: tuple[str, ...] = ()  # HOST:PORT:HOST2:PORT2 (curl's --connect-to)
    redaction: RedactionOptions = field(default_factory=RedactionOptions)
