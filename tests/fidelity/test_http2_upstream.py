"""An HTTPS upstream speaking HTTP/2 (hypercorn, a trustme certificate).

Recorded with the ``proxy record`` command (a process of its own, its CA in a temporary
--confdir, the upstream's CA by --upstream-ca). The recording client speaks TLS to the
recorder offering http/1.1 then h2: mitmproxy picks http/1.1 for the client and mirrors
the offer upstream, where hypercorn picks h2. So the cassette holds HTTP/2 responses (no
reason phrase, no framing header), and the replay client, on plain HTTP/1.1, must still
see what the recording client saw.
"""

from __future__ import annotations

import ssl

from . import adapter
from . import shapes as S
from .harness import run_batch
from .upstream import H2Upstream


def test_http2_upstream_replays_as_recorded(tls_files, fidelity_dir, tmp_path):
    certs = tls_files  # trustme: ca.pem, cert.pem, key.pem (tests/conftest.py)
    confdir = str(tmp_path / "mitmproxy")
    tls = ssl.create_default_context(cafile=adapter.recorder_ca(confdir))
    tls.set_alpn_protocols(["http/1.1", "h2"])
    upstreams: list[H2Upstream] = []

    def upstream(registry):
        upstreams.append(H2Upstream(registry, str(certs / "cert.pem"), str(certs / "key.pem")))
        return upstreams[-1]

    shapes = [S.openai_responses(), S.anthropic_messages(), S.json_body("length"), S.json_body("chunked"),
              S.encoded("br", True), S.encoded("zstd", False, "length"), S.big_chunks(), S.rate_limited()]
    outcomes = run_batch(shapes, fidelity_dir, upstream=upstream, tls=tls, record_scheme="https",
                         recorder=adapter.start_recorder_process,  # `proxy record --upstream-ca --confdir`
                         recorder_kwargs={"upstream_ca": str(certs / "ca.pem"), "confdir": confdir})
    assert set(upstreams[0].versions) == {"2"}, upstreams[0].versions
    problems = [o.report() for o in outcomes if o.problems]
    assert not problems, "\n".join(problems)
    # the recording client read close-delimited bodies (mitmproxy's HTTP/2 -> 1.1), replay chunks them
    assert outcomes[0].recorded.framing == "close" and outcomes[0].replayed.framing == "chunked"
