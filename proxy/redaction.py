"""Redaction: pure functions applied to everything before it is stored.

Rules (on by default; README "Redaction" lists them for users):

* **Secret headers** (``SECRET_HEADERS``, and every header whose name contains
  ``authorization``, whatever the scheme: Bearer, Basic, AWS4-HMAC-SHA256, ...) are
  stored as ``REDACTED``. Every other header value is scrubbed like a body.
* **Secret query parameters** (``SECRET_QUERY_PARAMS``, case-insensitive) get the
  value ``REDACTED``, in place: the rest of the query keeps its exact bytes.
* **Known key formats** (``RULES``) are found anywhere: paths, queries, header
  values, bodies, chunks, frames, log lines. Each rule is anchored: a key is a whole
  token (no key character right before or after it), has a bounded length, and the
  random-looking ones must look random (upper and lower case, and a digit unless 80+ long),
  so hyphenated words (``task-`` and more) or a 4 MB base64url blob are never touched.
* **The recorder's own secrets**: the values of its environment variables whose
  names mark a secret (``KEY``, ``TOKEN``, ``SECRET``, ``PASSWORD``, ``PASSWD``,
  ``CREDENTIAL``), when they are at least ``MIN_ENV_SECRET`` characters and look
  like secrets (see :func:`env_secrets`), wherever they appear, also JSON-escaped or
  percent-encoded.
* **Base64 inside a body or frame**: a base64 / base64url run that decodes to bytes
  holding a secret is re-encoded with the secret scrubbed (same length).

**Same length.** A secret found in bytes (body, chunk, frame, path, query value) is
replaced by a marker of exactly its length: ``REDACTED`` then ``*`` (cut short for a
secret under 8 bytes). Lengths never change, so ``content-length`` stays true, chunk
and frame sizes stay what they were, and a JSON string stays a JSON string. Bytes
holding no secret are returned unchanged (the same object). The exceptions are the
whole-value replacements above (secret headers, secret query parameters) and
``--redact-json-path``, which rewrites a request body's JSON (request bodies are
only compared, never replayed).

**Streams.** :class:`StreamRedactor` scrubs a body that arrives in chunks and
catches a key split across chunks. It returns every chunk with its own size and in
its own order, each once no key can still span its end: at once when the chunk ends
on a byte no rule can match in the middle of a key (``\\n``, ``}``, binary, ...),
else when the bytes after it decide (at most ``max_len`` of them), else at
``finish()``. A key across a boundary is masked on both sides of it; the boundary
stays where it was. A base64 run in progress is held until it ends (up to
``StreamRedactor.B64_HOLD``), so it is decoded and scanned whole.
:class:`EncodedStreamRedactor` does the same for a compressed response (decoded as it
arrives; stored as it came, or re-encoded chunk by chunk when it held a secret) and
:class:`FrameRedactor` for WebSocket messages (whole, and per direction as a stream).

**Request bodies** (:meth:`Redactor.request_body`) are decoded with the shared codec
(``proxy.encoding``) before they are scrubbed; one that does not decode is stored as
``undecodable_marker(...)``, never as the bytes sent. The replay server normalizes
incoming requests with these same methods, so matching compares like with like.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, unquote_plus

from .encoding import DEFAULT_LIMIT, DecodeError, Decoder, Encoder, codings, decode_body
from .jsonpath import delete_paths, set_paths
from .model import Direction, Headers

REDACTED = "REDACTED"

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",  # Azure OpenAI
        "x-api-key",  # Anthropic
        "x-goog-api-key",  # Gemini
        "openai-api-key",
        "x-amz-security-token",  # AWS session token (SigV4)
        "ocp-apim-subscription-key",  # Azure API Management
        "x-functions-key",  # Azure Functions
        "x-auth-token",
        "x-access-token",
        "cookie",
        "set-cookie",
        "chatgpt-account-id",
    }
)
SECRET_QUERY_PARAMS = frozenset(
    {
        "api-key", "api_key", "apikey", "key", "access_token", "token", "id_token", "refresh_token",
        "client_secret", "secret", "password", "auth", "sig", "signature", "subscription-key",
        "subscription_key", "x-amz-security-token", "x-amz-signature", "x-amz-credential",
    }
)
# Kept for callers of the old names.
DEFAULT_HEADERS = SECRET_HEADERS
DEFAULT_QUERY_PARAMS = SECRET_QUERY_PARAMS

MIN_ENV_SECRET = 12
_SECRET_NAME_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
# name parts that contain a secret word but name no secret
_NOT_SECRET_PARTS = frozenset({"KEYBOARD", "KEYRING", "KEYCHAIN", "KEYMAP", "MONKEY", "HOTKEY", "TOKENIZER",
                               "TOKENIZERS", "TURNKEY"})
# a last name part that says the value points at a secret rather than being one
_NOT_SECRET_LAST = frozenset({"PATH", "FILE", "FILENAME", "DIR", "HOME", "URL", "URI", "ENDPOINT", "HOST", "PORT",
                              "REGION", "NAME", "TYPE", "MODE", "ENABLED", "LENGTH", "SIZE", "ALGORITHM", "HEADER"})

# A user pattern may match anything; in a stream its matches are looked for across
# chunk boundaries up to this many bytes.
USER_PATTERN_SPAN = 1024


# -- detection ------------------------------------------------------------------

_K = rb"A-Za-z0-9_\-"  # key characters: a token starts and ends where they do
# A key starts where no key character precedes it, or right after an escape whose last
# character is one: JSON's \n, \t, \u0022, a URL's %3D, %20 (else the key in
# {"content": "my key:\nsk-..."} or in ?next=x%3Fkey%3Dsk-... would be missed).
_ESCAPED = rb"(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4})|(?<=%[0-9A-Fa-f]{2})"
_LEFT = rb"(?:(?<![" + _K + rb"])|" + _ESCAPED + rb")"
_RIGHT = rb"(?![" + _K + rb"])"
_B64 = rb"A-Za-z0-9/+="


def _looks_random(token: bytes, body_from: int = 0) -> bool:
    """Random keys mix upper case, lower case and digits; words, slugs and CamelCase
    names do not. (A random 48-character key lacks a digit once in 5,000; bodies of 80
    characters and more need only both cases.)"""
    body = token[body_from:]
    upper = any(65 <= c <= 90 for c in body)
    lower = any(97 <= c <= 122 for c in body)
    digit = any(48 <= c <= 57 for c in body)
    return upper and lower and (digit or len(body) >= 80)


def _jwt_header(token: bytes) -> bool:
    head = token.split(b".", 1)[0]
    try:
        doc = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(doc, dict) and ("alg" in doc or "typ" in doc)


def _sk_body(token: bytes) -> bool:
    # skip the known prefix so "sk-proj-" does not count as random
    m = re.match(rb"sk-(?:ant-[a-z]+\d*-|proj-|svcacct-|admin-|None-)?", token)
    return _looks_random(token, m.end())


@dataclass(frozen=True)
class Rule:
    """One known secret format. Every match holds one of ``anchors`` at most
    ``back`` bytes after its start (0: every match starts with an anchor). Anchors
    are found with ``bytes.find``, and the regex runs only there. ``group`` is the
    part replaced (1 when the pattern includes a name before the value); ``check``
    rejects a match that only looks right."""

    kind: str
    pattern: bytes
    anchors: tuple[bytes, ...]
    max_len: int
    group: int = 0
    check: Callable[[bytes], bool] | None = None
    back: int = 0


def _names(*names: str) -> tuple[bytes, ...]:
    """The spellings of a field name as it appears in env files, JSON and XML."""
    out = []
    for n in names:
        words = n.split("_")
        out += ["_".join(words), "_".join(words).upper(), words[0] + "".join(w.title() for w in words[1:]),
                "".join(w.title() for w in words)]
    return tuple(dict.fromkeys(x.encode() for x in out))


_SECRET_KEY_NAMES = _names("aws_secret_access_key", "secret_access_key")
_SESSION_NAMES = _names("aws_session_token", "session_token")
_NAME_SEP = rb"""(?:["']?[ \t]{0,4}[:=][ \t]{0,4}["']?|>)"""


def _alt(names: tuple[bytes, ...]) -> bytes:
    return b"(?:" + b"|".join(re.escape(n) for n in names) + b")"


RULES: tuple[Rule, ...] = (
    Rule("anthropic-key", _LEFT + rb"sk-ant-[a-z]{2,8}\d{0,3}-[A-Za-z0-9_\-]{20,250}" + _RIGHT, (b"sk-ant-",), 270,
         check=_sk_body),
    Rule("openai-key", _LEFT + rb"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,250}" + _RIGHT, (b"sk-",), 262,
         check=_sk_body),
    # realtime client secrets: ek_ + 32 lower-case hex today
    Rule("openai-ephemeral-key", _LEFT + rb"ek_[A-Za-z0-9]{20,200}" + _RIGHT, (b"ek_",), 203,
         check=lambda t: re.search(rb"[0-9]", t[3:]) is not None and re.search(rb"[A-Za-z]", t[3:]) is not None),
    Rule("google-api-key", _LEFT + rb"AIza[A-Za-z0-9_\-]{35}" + _RIGHT, (b"AIza",), 39),
    Rule("jwt", _LEFT + rb"eyJ[A-Za-z0-9_\-]{8,4096}\.[A-Za-z0-9_\-]{8,16384}\.[A-Za-z0-9_\-]{0,4096}" + _RIGHT,
         (b"eyJ",), 24_600, check=_jwt_header),
    Rule("aws-access-key-id", _LEFT + rb"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}" + _RIGHT,
         (b"AKIA", b"ASIA", b"A3T", b"ABIA", b"ACCA"), 20),
    Rule("aws-secret-key", _alt(_SECRET_KEY_NAMES) + _NAME_SEP + rb"([A-Za-z0-9/+]{40})(?![" + _B64 + rb"])",
         (b"ccess", b"CCESS"), 80, group=1, back=10),
    Rule("aws-session-token", _alt(_SESSION_NAMES) + _NAME_SEP + rb"([A-Za-z0-9/+=]{100,4096})(?![" + _B64 + rb"])",
         (b"ession", b"ESSION"), 4140, group=1, back=12),
    Rule("aws-session-token", rb"(?:(?<![A-Za-z0-9/+])|" + _ESCAPED + rb")(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdzE)[A-Za-z0-9/+=]{80,4096}"
         + rb"(?![" + _B64 + rb"])", (b"IQoJb3JpZ2luX2Vj", b"FwoGZXIvYXdzE"), 4112),
    Rule("github-token", _LEFT + rb"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,251}" + _RIGHT,
         (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"), 255),
    Rule("github-token", _LEFT + rb"github_pat_[A-Za-z0-9_]{22,244}" + _RIGHT, (b"github_pat_",), 255),
    Rule("slack-token", _LEFT + rb"(?:xox[abposre]|xapp)-[0-9]+-[A-Za-z0-9\-]{8,250}" + _RIGHT,
         (b"xox", b"xapp-"), 270),
    Rule("slack-webhook", rb"hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9/_+\-]{20,200})" + _RIGHT,
         (b"hooks.slack.com/",), 240, group=1),
)

# Bytes that no rule can match in the middle of a key (the union of their alphabets
# is letters, digits and _-./+=:"'<> space tab). A chunk boundary next to one of
# these cannot be inside a key.
_RULE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./+=:\"'<> \t")
BREAKERS = frozenset(range(256)) - _RULE_BYTES
_RULE_CHARS = bytes(sorted(_RULE_BYTES))


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class Literal:
    """A known secret value (from the environment) and the forms it travels in."""

    name: str
    forms: tuple[bytes, ...]


def env_secrets(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The (name, value) pairs of ``environ`` (default: ``os.environ``) that hold a
    secret: the name has a part containing KEY, TOKEN, SECRET, PASSWORD, PASSWD or
    CREDENTIAL (``OPENAI_API_KEY``, ``GH_TOKEN``, ``APIKEY``; not ``KEYBOARD_LAYOUT``,
    not ``*_KEY_PATH``/``*_FILE``/``*_URL``...), and the value is at least
    ``MIN_ENV_SECRET`` characters, has no whitespace, mixes two of upper case, lower
    case and digits, and is not a path or a plain URL. Conservative on purpose: a
    value scrubbed wherever it appears must never be ordinary text."""
    environ = os.environ if environ is None else environ
    out = []
    for name, value in environ.items():
        parts = [p for p in re.split(r"[^A-Z0-9]+", name.upper()) if p]
        if not parts or parts[-1] in _NOT_SECRET_LAST:
            continue
        if not any(w in p and p not in _NOT_SECRET_PARTS for p in parts for w in _SECRET_NAME_WORDS):
            continue
        if not _secret_value(value):
            continue
        out.append((name, value))
    return tuple(sorted(out))


def _secret_value(value: str) -> bool:
    if len(value) < MIN_ENV_SECRET or any(c.isspace() for c in value):
        return False
    if value.startswith(("/", "~", "./", "../")) or re.match(r"^[A-Za-z]:[\\/]", value):
        return False
    if re.match(r"^[a-z][a-z0-9+.-]*://", value, re.I) and "@" not in value:
        return False
    classes = sum((any(c.isupper() for c in value), any(c.islower() for c in value), any(c.isdigit() for c in value)))
    return classes >= 2


def _forms(value: str) -> tuple[bytes, ...]:
    raw = value.encode("utf-8", "surrogateescape")
    forms = {raw, json.dumps(value)[1:-1].encode(), quote(value, safe="").encode(), quote_plus(value, safe="").encode()}
    return tuple(sorted(forms, key=len, reverse=True))


class Detector:
    """Finds secrets in bytes: the built-in ``RULES``, extra user regexes and
    literal values. Pure; build once, use from any thread."""

    def __init__(self, patterns: Iterable[str] = (), literals: Iterable[tuple[str, str]] = ()):
        self.rules = [(r, re.compile(r.pattern)) for r in RULES]
        self.user = [re.compile(p.encode()) for p in patterns]
        self.literals = [Literal(name, _forms(value)) for name, value in literals]
        lit_max = max((len(f) for lit in self.literals for f in lit.forms), default=0)
        self.max_len = max([r.max_len for r in RULES] + [lit_max] + ([USER_PATTERN_SPAN] if self.user else []))
        self.lit_max = lit_max
        # with user patterns any byte may be inside a match
        self.breakers = BREAKERS if not self.user else frozenset()
        self._lit_prefixes = frozenset(f[:i] for lit in self.literals for f in lit.forms for i in range(1, len(f)))
        # every rule is tried only where one of its anchors is: one pass finds whether any is
        self._any_anchor = re.compile(b"|".join(re.escape(a) for r in RULES for a in r.anchors))

    def find(self, data: bytes | bytearray, start: int = 0, final: bool = True) -> list[Hit]:
        """Secrets in ``data[start:]`` (``data[:start]`` is context for boundaries),
        sorted, overlaps merged. With ``final=False`` a hit that touches the end of
        ``data`` is left out: more bytes might extend or cancel it."""
        hits: list[Hit] = []
        end = len(data)
        for rule, rx in self.rules if self._any_anchor.search(data, start) else ():
            for anchor in rule.anchors:
                i = data.find(anchor, start)
                while i >= 0:
                    if rule.back:  # the match starts at most `back` bytes before the anchor
                        # (the window ends past any match starting by i: look-aheads see real bytes)
                        m = rx.search(data, max(start, i - rule.back), i + rule.max_len + 1)
                        if m is not None and m.start() > i:
                            m = None
                    else:
                        m = rx.match(data, i)  # the look-behind still sees data[:i]
                    i = data.find(anchor, i + 1)
                    if m is None or (not final and m.end() >= end):
                        continue
                    s, e = m.span(rule.group)
                    if rule.check is None or rule.check(bytes(data[s:e])):
                        hits.append(Hit(s, e, rule.kind))
        for rx in self.user:
            for m in rx.finditer(data, start):
                if m.end() > m.start() and (final or m.end() < end):
                    hits.append(Hit(m.start(), m.end(), "pattern"))
        for lit in self.literals:
            for form in lit.forms:
                i = data.find(form, start)
                while i >= 0:
                    hits.append(Hit(i, i + len(form), "env:" + lit.name))
                    i = data.find(form, i + 1)
        return _merge(hits)

    def releasable(self, data: bytes | bytearray) -> int:
        """How much of ``data`` (a stream so far) is decided: no secret that more bytes
        could still complete starts before this position. Every later byte may yet
        belong to one."""
        if self.user:  # a user regex may match anything: only enough lookahead decides
            return max(0, len(data) - self.max_len - 1)
        # A built-in match never holds a breaker, so a match still in progress lies in
        # the trailing run of non-breaker bytes; everything before that run is decided.
        end = len(data.rstrip(_RULE_CHARS))
        if self.literals:
            # a literal (any bytes) still in progress is a proper prefix of it ending the data
            for n in range(min(len(data), self.lit_max - 1), 0, -1):
                if bytes(data[-n:]) in self._lit_prefixes:
                    end = min(end, len(data) - n)
                    break
        return end


def _merge(hits: list[Hit]) -> list[Hit]:
    if len(hits) < 2:
        return hits
    hits.sort(key=lambda h: (h.start, -h.end))
    out = [hits[0]]
    for h in hits[1:]:
        last = out[-1]
        if h.start < last.end:
            if h.end > last.end:
                out[-1] = Hit(last.start, h.end, last.kind)
        else:
            out.append(h)
    return out


def marker(n: int) -> bytes:
    """The same-length replacement of an n-byte secret."""
    return (b"REDACTED" + b"*" * max(0, n - 8))[:n]


def _apply(buf: bytearray, hits: list[Hit], offset: int = 0) -> None:
    for h in hits:
        s, e = max(0, h.start - offset), h.end - offset
        if e > s:
            buf[s:e] = marker(e - s)


# base64 / base64url runs long enough to hold the shortest secret (12 bytes -> 16 chars)
_B64_RUN = re.compile(rb"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{16,}={0,2}(?![A-Za-z0-9+/=_\-])")


# The same runs found faster (no look-behind tried at every byte): a greedy match starts
# where a run starts, since the search resumes only after a run or its padding; the
# look-ahead is checked by hand.
_B64_GREEDY = re.compile(rb"[A-Za-z0-9+/_\-]{16,}={0,2}")
_B64_AFTER = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-")


def _b64_matches(data: bytes):
    """What ``_B64_RUN.finditer(data)`` finds."""
    n = len(data)
    for m in _B64_GREEDY.finditer(data):
        end = m.end()
        if end < n and data[end] in _B64_AFTER:
            continue
        yield m


def base64_runs(data: bytes):
    """(start, end, decoded, urlsafe) for each run that decodes and re-encodes exactly."""
    for m in _b64_matches(data):
        run = m.group()
        if run.islower() or run.isupper():
            continue  # words and hex: base64 of anything holding a key mixes cases
        body = run.rstrip(b"=")
        url = b"-" in body or b"_" in body
        if url and (b"+" in body or b"/" in body):
            continue
        if len(body) % 4 == 1:
            continue
        try:
            raw = (base64.urlsafe_b64decode if url else base64.b64decode)(body + b"=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            continue
        if _b64encode(raw, url, padded=run.endswith(b"=")) != run:
            continue  # not canonical: re-encoding would change bytes
        yield m.start(), m.end(), raw, url


def _b64encode(raw: bytes, url: bool, padded: bool) -> bytes:
    out = (base64.urlsafe_b64encode if url else base64.b64encode)(raw)
    return out if padded else out.rstrip(b"=")


class StreamRedactor:
    """Scrubs a stream of chunks; see the module docstring for what it guarantees.

    ``feed(data, tag)`` returns the ``(tag, data)`` pairs now safe to store, in
    order, each ``data`` as long as it was fed; ``finish()`` returns the rest.
    ``found`` counts the secrets scrubbed. Holds back at most ``max_len`` bytes
    beyond the chunk in progress, or, with ``embedded`` (the base64 step), a base64
    run still in progress up to ``B64_HOLD`` bytes, so that it is decoded whole: a
    longer run that spans chunks is looked at only as the bytes it is.
    """

    _CTX = 64  # released bytes kept for look-behind
    B64_HOLD = 1 << 20

    def __init__(self, detector: Detector | None, unsupported: str | None = None,
                 embedded: Callable[[bytes], bytes] | None = None):
        self.detector = detector  # None: pass every chunk through at once
        self.embedded = embedded
        self.found = 0
        self.length_changed = False
        # a body in a content-encoding we cannot decode is scrubbed as raw bytes
        self.warning = f"unsupported content-encoding {unsupported!r}: scrubbed as raw bytes" if unsupported else None
        self._buf = bytearray()
        self._ctx = b""
        self._held: deque = deque()

    def feed(self, data: bytes, tag=None) -> list[tuple[object, bytes]]:
        if self.detector is None:
            return [(tag, data)]
        old = len(self._buf)
        self._buf += data
        self._held.append((tag, len(data)))
        self._scan(max(0, old - self.detector.max_len), final=False)
        return self._release(final=False)

    def finish(self) -> list[tuple[object, bytes]]:
        if self.detector is None:
            return []
        self._scan(max(0, len(self._buf) - self.detector.max_len), final=True)
        return self._release(final=True)

    def _scan(self, start: int, final: bool) -> None:
        window = self._ctx + bytes(self._buf)
        hits = self.detector.find(window, len(self._ctx) + start, final=final)
        if hits:
            self.found += len(hits)
            _apply(self._buf, hits, offset=len(self._ctx))

    def _release(self, final: bool) -> list[tuple[object, bytes]]:
        out: list[tuple[object, bytes]] = []
        buf = self._buf
        # a chunk goes once its end is decided: no secret in progress can reach back over it
        limit = len(buf) if final else max(self.detector.releasable(buf), len(buf) - self.detector.max_len - 1)
        if self.embedded is not None:
            # base64 runs hold no breaker byte: those before the trailing run are complete
            complete = len(buf) if final else len(buf.rstrip(_RULE_CHARS))
            if len(buf) - complete <= self.B64_HOLD:
                limit = min(limit, complete)
            if complete:
                region = bytes(buf[:complete])
                clean = self.embedded(region)
                if clean is not region:
                    self.found += 1
                    buf[:complete] = clean
        pos = 0
        while self._held and pos + self._held[0][1] <= limit:
            tag, size = self._held.popleft()
            out.append((tag, bytes(buf[pos : pos + size])))
            pos += size
        if pos:
            self._ctx = (self._ctx + bytes(buf[:pos]))[-self._CTX :]
            del buf[:pos]
        return out


# -- the redactor ------------------------------------------------------------------


@dataclass(frozen=True)
class Redactor:
    header_names: frozenset[str] = SECRET_HEADERS
    query_params: frozenset[str] = SECRET_QUERY_PARAMS
    patterns: tuple[str, ...] = ()  # extra regexes, besides the built-in RULES
    json_paths: tuple[str, ...] = ()
    secrets: tuple[tuple[str, str], ...] = ()  # (env name, value), see env_secrets()
    enabled: bool = True
    detector: Detector = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "detector", Detector(self.patterns, self.secrets))

    @classmethod
    def build(
        cls,
        extra_headers=(),
        extra_patterns=(),
        json_paths=(),
        enabled: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> "Redactor":
        """The recorder's redactor: defaults plus the user's additions, and the
        secrets of ``environ`` (default ``os.environ``)."""
        return cls(
            header_names=SECRET_HEADERS | {h.lower() for h in extra_headers},
            patterns=tuple(extra_patterns),
            json_paths=tuple(json_paths),
            secrets=env_secrets(environ),
            enabled=enabled,
        )

    # -- where secrets travel ----------------------------------------------------

    def is_secret_header(self, name: str) -> bool:
        name = name.lower()
        return name in self.header_names or "authorization" in name

    def headers(self, headers: Headers) -> Headers:
        if not self.enabled:
            return list(headers)
        return [(k, REDACTED if self.is_secret_header(k) else self.text(v)) for k, v in headers]

    def query(self, query: str) -> str:
        """Secret parameters' values become ``REDACTED``; everything else keeps its
        bytes (no re-encoding), secrets inside other values are masked."""
        if not self.enabled or not query:
            return query
        parts = query.split("&")
        changed = False
        for i, part in enumerate(parts):
            name, eq, value = part.partition("=")
            if eq and value and unquote_plus(name).lower() in self.query_params and value != REDACTED:
                parts[i] = name + "=" + REDACTED
                changed = True
        query = "&".join(parts) if changed else query
        return self.text(query)

    def path(self, path: str) -> str:
        """A URL path: secrets in segments are masked (same length)."""
        return self.text(path)

    def target(self, target: str) -> str:
        """``path?query`` as in a request line or a log line."""
        path, q, query = target.partition("?")
        return self.path(path) + (q + self.query(query) if q else "")

    def data(self, data: bytes) -> bytes:
        """A whole body or frame: secrets masked, base64-embedded ones too."""
        if not self.enabled or not data:
            return data
        hits = self.detector.find(data)
        if hits:
            buf = bytearray(data)
            _apply(buf, hits)
            data = bytes(buf)
        return self.embedded(data)

    def embedded(self, data: bytes) -> bytes:
        """Secrets inside base64 / base64url runs of ``data``, re-encoded scrubbed (same length)."""
        if not self.enabled or not data:
            return data
        buf = None
        for s, e, raw, url in base64_runs(data):
            hits = self.detector.find(raw)
            if not hits:
                continue
            clean = bytearray(raw)
            _apply(clean, hits)
            enc = _b64encode(bytes(clean), url, padded=data[e - 1 : e] == b"=")
            if len(enc) != e - s:  # cannot happen: same decoded length, same alphabet
                continue
            if buf is None:
                buf = bytearray(data)
            buf[s:e] = enc
        return data if buf is None else bytes(buf)

    def text(self, value: str) -> str:
        if not self.enabled or not value:
            return value
        raw = value.encode("utf-8", "surrogateescape")
        clean = self.data(raw)
        return value if clean is raw else clean.decode("utf-8", "surrogateescape")

    def body(self, data: bytes) -> bytes:
        """A whole request body: JSON paths first (when it parses), then secrets."""
        if self.enabled and self.json_paths and data:
            try:
                doc = json.loads(data)
            except (ValueError, RecursionError):  # not JSON to us (too deep: 200 KB of "[")
                pass
            else:
                if set_paths(doc, self.json_paths, REDACTED):
                    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        return self.data(data)

    def request_body(self, raw: bytes, encoding: str | None, limit: int | None = DEFAULT_LIMIT
                     ) -> tuple[bytes, str | None]:
        """A request body as the wire carried it -> what is stored (and compared on
        replay): decoded by its Content-Encoding, then scrubbed. A body that does not
        decode is never stored as it came (it could hold a key in any form): it becomes
        ``undecodable_marker(encoding)``, and the second value says why."""
        try:
            body = decode_body(raw, encoding, limit)
        except DecodeError as e:
            return undecodable_marker(encoding), str(e)
        return self.body(body), None

    def stream(self) -> StreamRedactor:
        """A redactor for one streamed body (see StreamRedactor)."""
        return StreamRedactor(self.detector if self.enabled else None, embedded=self.embedded)

    def response_body(self, encoding: str | None, limit: int | None = DEFAULT_LIMIT):
        """A redactor for one streamed response body with this Content-Encoding:
        a StreamRedactor when it is identity, else an EncodedStreamRedactor."""
        if not self.enabled:
            return self.stream()
        try:
            applied = codings(encoding)
        except DecodeError:
            return StreamRedactor(self.detector, unsupported=encoding, embedded=self.embedded)
        return EncodedStreamRedactor(self, encoding, limit) if applied else self.stream()

    def frames(self) -> "FrameRedactor":
        """A redactor for the messages of one WebSocket session (see FrameRedactor)."""
        return FrameRedactor(self)


def undecodable_marker(encoding: str | None) -> bytes:
    """What is stored for a request body that does not decode as its Content-Encoding."""
    return f"[proxy: body not stored: it does not decode as content-encoding {encoding!r}]".encode()


class EncodedStreamRedactor:
    """A response body in a Content-Encoding (gzip, br, zstd, deflate, stacked).

    Each chunk is decoded as it arrives and the decoded stream scrubbed (as
    StreamRedactor does). Chunks are held until ``finish()``, which returns them as
    they came when no secret was found, else re-encoded: the scrubbed decoded bytes of
    each chunk encoded with a flush, so the same chunks (count, tags) carry a valid
    body whose sizes differ (``length_changed``: a stored content-length must follow).
    A body that does not decode is scrubbed as raw bytes, same length, and ``warning``
    says so. Same interface as StreamRedactor.
    """

    def __init__(self, redactor: Redactor, encoding: str, limit: int | None = DEFAULT_LIMIT):
        self.redactor, self.encoding = redactor, encoding
        self._decoder: Decoder | None = Decoder(encoding, limit)
        self._stream = redactor.stream()
        self._chunks: list[tuple[object, bytes]] = []
        self._clean: dict[int, bytearray] = {}
        self.found = 0
        self.length_changed = False
        self.warning: str | None = None
        self._broken: int | None = None  # the chunk where decoding failed after some output

    def feed(self, data: bytes, tag=None) -> list[tuple[object, bytes]]:
        i = len(self._chunks)
        self._chunks.append((tag, data))
        if self._decoder is not None and self._broken is None:
            try:
                self._take(self._stream.feed(self._decoder.feed(data), i))
            except DecodeError as e:
                self.warning = f"response body does not decode as {self.encoding!r}: {e}"
                # the output of the failing call is lost with the error: decode again up to it
                wire = b"".join(c for _, c in self._chunks)
                lost = _decoded_prefix(wire, self.encoding, self._decoder.limit)[self._decoder.produced :]
                if self._decoder.produced or lost:
                    self._broken = i  # decoded in part: what decoded may hold a key (see finish)
                    self._take(self._stream.feed(lost, i))
                else:
                    self._decoder = None
        return []

    def _take(self, released) -> None:
        for i, clean in released:
            self._clean.setdefault(i, bytearray()).extend(clean)

    def finish(self) -> list[tuple[object, bytes]]:
        if not self._chunks:
            return []
        if self._decoder is not None:
            tail = b""
            if self._broken is None:
                try:
                    tail = self._decoder.finish()
                except DecodeError:
                    pass  # a cut stream: everything that decoded was scanned
            last = len(self._chunks) - 1
            self._take(self._stream.feed(tail, last) + self._stream.finish())
            self.found = self._stream.found
            if not self.found:
                if self._broken is None:
                    return list(self._chunks)
                self._decoder = None  # no key in what decoded: the rest is scrubbed as bytes, below
            else:
                # The wire bytes would give the key back to any decoder: store what decoded,
                # scrubbed and re-encoded, without the bytes that did not decode.
                if self._broken is not None:
                    self.warning += "; stored re-encoded without the bytes that did not decode"
                return self._reencode()
        # undecodable: scrub what was on the wire, as bytes
        raw = self.redactor.stream()
        out = []
        for i, (_, data) in enumerate(self._chunks):
            out += raw.feed(data, i)
        out += raw.finish()
        self.found = raw.found
        return [(self._chunks[i][0], data) for i, data in out]

    def _reencode(self) -> list[tuple[object, bytes]]:
        enc = Encoder(self.encoding)
        out: list[tuple[object, bytes]] = []
        carry = b""
        for i, (tag, _) in enumerate(self._chunks):
            piece = carry + enc.feed(bytes(self._clean.get(i, b"")))
            if i == len(self._chunks) - 1:
                piece += enc.finish()
            if piece:
                out.append((tag, piece))
                carry = b""
            else:
                carry = piece  # nothing to send for this chunk yet: it joins the next one
        self.length_changed = True
        return out


def _decoded_prefix(data: bytes, encoding: str, limit: int | None) -> bytes:
    """All that ``data`` decodes to before the byte where decoding fails."""
    step, out, fed = 4096, bytearray(), 0
    d = Decoder(encoding, limit)
    try:
        for fed in range(0, len(data), step):
            out += d.feed(data[fed : fed + step])
        return bytes(out)
    except DecodeError:
        pass
    d, out = Decoder(encoding, limit), bytearray()  # again, the failing slice byte by byte
    try:
        out += d.feed(data[:fed]) if fed else b""
        for j in range(fed, min(len(data), fed + step)):
            out += d.feed(data[j : j + 1])
    except DecodeError:
        pass
    return bytes(out)


class FrameRedactor:
    """The messages of one WebSocket session. Each is scrubbed alone (base64 inside
    JSON included) and, per direction, as one stream, so a key split across two
    messages of one side is caught too. ``feed`` returns the ``(tag, payload)`` pairs
    now safe to store in the order the messages arrived (a message that could still be
    the start of a split key holds back the ones after it); payload sizes never
    change. Past ``MAX_HELD`` bytes held, the side holding the oldest message is
    flushed: a key split across that boundary is then missed."""

    MAX_HELD = 1 << 20

    def __init__(self, redactor: Redactor):
        self.redactor = redactor
        self._streams: dict[Direction, StreamRedactor] = {}
        self._queue: deque[list] = deque()  # [tag, direction, size, clean payload or None, hits in it alone]
        self._held = 0
        self._whole = 0
        self.found = 0

    def feed(self, direction: Direction, payload: bytes, tag=None) -> list[tuple[object, bytes]]:
        # the message alone: in the joined stream a key is missed when the message before
        # ends (or the one after starts) with a key character ("hello" then "sk-...")
        whole = self.redactor.detector.find(payload) if self.redactor.enabled and payload else []
        self._whole += len(whole)
        entry = [tag, direction, len(payload), None, whole]
        self._queue.append(entry)
        self._held += len(payload)
        stream = self._streams.get(direction)
        if stream is None:
            stream = self._streams[direction] = self.redactor.stream()
        self._fill(stream.feed(payload, entry))
        while self._held > self.MAX_HELD and self._queue and self._queue[0][3] is None:
            self._fill(self._streams[self._queue[0][1]].finish())
        return self._pop()

    def finish(self) -> list[tuple[object, bytes]]:
        for stream in self._streams.values():
            self._fill(stream.finish())
        return self._pop()

    def _fill(self, released) -> None:
        for entry, clean in released:
            entry[3] = clean

    def _pop(self) -> list[tuple[object, bytes]]:
        out = []
        while self._queue and self._queue[0][3] is not None:
            tag, _, size, clean, whole = self._queue.popleft()
            self._held -= size
            if whole:
                buf = bytearray(clean)
                _apply(buf, whole)
                clean = bytes(buf)
            out.append((tag, self.redactor.embedded(clean)))
        self.found = sum(s.found for s in self._streams.values()) + self._whole
        return out

NO_REDACTION = Redactor(enabled=False)
__all__ = [
    "BREAKERS",
    "Detector",
    "EncodedStreamRedactor",
    "FrameRedactor",
    "Hit",
    "NO_REDACTION",
    "REDACTED",
    "RULES",
    "Redactor",
    "SECRET_HEADERS",
    "SECRET_QUERY_PARAMS",
    "StreamRedactor",
    "delete_paths",
    "env_secrets",
    "marker",
    "undecodable_marker",
]
