"""Test tooling that ships with the package, so `make demo`, the benchmarks and
``python -m proxy.testing.simulator`` work from an installed copy: the simulated model
API (``simulator``) and the offline demo (``demo``). Runtime code never imports it."""

from __future__ import annotations


def fake_key(label: str) -> str:
    """An API-key shaped string that is no key, for demos and tests: redaction must
    scrub it. Built here so that no key-shaped literal sits in any tracked file."""
    return "sk-" + label + "-" + "Zq7" * 8
