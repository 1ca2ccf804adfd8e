"""Fake secrets in every format redaction knows, built at run time from pieces.

No key-shaped literal may sit in a tracked file (a hook greps for them, and a
scanner would flag them): every prefix below is split, and the random part is
drawn from a seeded generator.
"""

from __future__ import annotations

import base64
import json
import random
import string

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"


def _rand(rng: random.Random, n: int, chars: str = ALNUM) -> str:
    # "Zq7" first: a random key has upper case, lower case and a digit
    return "Zq7" + "".join(rng.choice(chars) for _ in range(n - 3))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def fake(kind: str, seed: int = 0) -> str:
    """A fake secret of ``kind`` (one of KINDS)."""
    rng = random.Random(f"{kind}-{seed}")
    if kind == "openai-key":
        return "s" + "k-" + _rand(rng, 48)
    if kind == "openai-project-key":
        return "s" + "k-" + "proj-" + _rand(rng, 156, URLSAFE)
    if kind == "openai-service-key":
        return "s" + "k-" + "svcacct-" + _rand(rng, 156, URLSAFE)
    if kind == "openai-admin-key":
        return "s" + "k-" + "admin-" + _rand(rng, 156, URLSAFE)
    if kind == "openai-ephemeral-key":
        return "e" + "k_" + "".join(rng.choice("0123456789abcdef") for _ in range(31)) + "a"
    if kind == "anthropic-key":
        return "s" + "k-" + "ant-" + "api03-" + _rand(rng, 93, URLSAFE) + "AA"
    if kind == "google-api-key":
        return "AI" + "za" + _rand(rng, 35, URLSAFE)
    if kind == "jwt":
        head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64url(json.dumps({"sub": _rand(rng, 12), "iat": 1_700_000_000}).encode())
        return f"{head}.{body}.{_rand(rng, 43, URLSAFE)}"
    if kind == "aws-access-key-id":
        return "AK" + "IA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))
    if kind == "aws-secret-key":
        return _rand(rng, 40, ALNUM + "/+")
    if kind == "aws-session-token":
        return "IQoJ" + "b3JpZ2luX2Vj" + _rand(rng, 300, ALNUM + "/+")
    if kind == "github-token":
        return "gh" + "p_" + _rand(rng, 36)
    if kind == "github-pat":
        return "github" + "_pat_" + _rand(rng, 82, ALNUM + "_")
    if kind == "slack-token":
        return "xo" + "xb-" + str(rng.randrange(10**11, 10**12)) + "-" + str(rng.randrange(10**11, 10**12)) + "-" \
            + _rand(rng, 24)
    raise ValueError(kind)


# kinds whose value is found on its own, anywhere (AWS secret keys need their name beside them)
STANDALONE = ("openai-key", "openai-project-key", "openai-service-key", "openai-admin-key", "openai-ephemeral-key",
              "anthropic-key", "google-api-key", "jwt", "aws-access-key-id", "aws-session-token", "github-token",
              "github-pat", "slack-token")
# the kind redaction reports for each (the project/service/admin keys are OpenAI keys)
REPORTED = {k: k for k in STANDALONE} | {"openai-project-key": "openai-key", "openai-service-key": "openai-key",
                                         "openai-admin-key": "openai-key", "github-pat": "github-token"}


def assert_clean(*paths, secrets=(), patterns=()) -> None:
    """``proxy audit`` finds nothing in these cassettes (and their -wal): no key format,
    none of ``secrets`` (checked as literal values, as the recorder's environment
    secrets are), no match of ``patterns``. Use this, never a grep of the file: the
    store compresses headers and bodies, so a grep sees nothing."""
    from proxy.audit import Auditor
    from proxy.redaction import Redactor

    env = {f"TEST_SECRET_{i}_TOKEN": s for i, s in enumerate(secrets)}
    auditor = Auditor(Redactor.build(extra_patterns=patterns, environ=env))
    assert len(auditor.redactor.secrets) == len(env), "a test secret too short or plain to be checked"
    findings = [str(f) for p in paths for f in auditor.file(p)]
    assert findings == [], "\n".join(findings)
