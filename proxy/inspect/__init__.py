"""proxy inspect: a cassette for a person (``console``: rich tables), a program (``--json``,
the view model itself), git (``text``) or a browser (``html``). One view model (``view``)
feeds every renderer."""

from __future__ import annotations

from .console import show_body, show_list, show_one
from .html import html_page
from .text import text_dump
from .view import detail, listing, printable, timeline

__all__ = ["detail", "html_page", "listing", "printable", "show_body", "show_list", "show_one", "text_dump", "timeline"]
