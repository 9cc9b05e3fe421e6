"""Structural checks of a self-contained HTML page: its headings, tables and inline images, and no reference out."""

from __future__ import annotations

import base64
import binascii
from html.parser import HTMLParser

import pytest

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What a page holds: its headings, tables (with their header cells), image sources and every URL attribute."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.tables: list[list[str]] = []
        self.images: list[str] = []
        self.references: list[tuple[str, str, str]] = []  # (tag, attribute, value) of href/src/action attributes
        self.tags: set[str] = set()
        self._in: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("href", "src", "action", "srcset", "data", "poster"):
                self.references.append((tag, name, value or ""))
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag == "table":
            self.tables.append([])
        if tag in ("h2", "th"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "h2":
            self.headings.append(data)
        elif self._in == "th":
            self.tables[-1].append(data)


def check_self_contained(text: str) -> Page:
    """The page parsed, after checking that it stands alone: every image an inline PNG, nothing linked or fetched."""
    assert "http" not in text.lower() and "<script" not in text.lower() and "<link" not in text.lower()
    assert "url(" not in text and "@import" not in text  # nothing fetched by the style either
    page = Page(text)
    assert page.images and len(page.images) == len(page.references)
    for tag, attribute, value in page.references:
        assert tag == "img" and attribute == "src" and value.startswith("data:image/png;base64,"), (tag, attribute)
        try:
            png = base64.b64decode(value.removeprefix("data:image/png;base64,"), validate=True)
        except binascii.Error as error:
            pytest.fail(f"an image is not valid base64: {error}")
        assert png.startswith(PNG)
    return page
