"""Self-contained HTML pages of sections: paragraphs, bullet lists, tables and PNG pictures, nothing else.

A page stands alone: its style inline, every picture inline as a ``data:`` URI, no script, no link out, and no
``http`` anywhere in its source (``no_scheme`` writes the ``t`` of every occurrence as a character reference,
which a browser reads back as the same text). The benchmark's report and the run reports render through here.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure

MISSING = "n/a"
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; }
th { background: #eee; }
td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
"""


@dataclass(frozen=True)
class Table:
    """A table of text cells."""

    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Picture:
    """A PNG image shown inline, with its alternative text."""

    alt: str
    png: bytes


Block = str | list[str] | Table | Picture  # a paragraph, a bullet list, a table, a picture


@dataclass(frozen=True)
class Section:
    """A heading and what follows it."""

    heading: str
    blocks: list[Block]


def number(value: float | None, decimals: int) -> str:
    """``value`` with ``decimals`` decimals, ``MISSING`` for None."""
    return MISSING if value is None else f"{value:.{decimals}f}"


def no_scheme(text: str) -> str:
    """Write the t of every "http" as a character reference, so that no link scheme appears in the HTML source."""
    return re.sub(r"(?i)(h)(t)(tp)", lambda m: f"{m[1]}&#{ord(m[2])};{m[3]}", text)


def escape(value: object) -> str:
    """``value`` as HTML text: escaped, and without a link scheme."""
    return no_scheme(html.escape(str(value)))


def block_html(block: Block) -> str:
    """One block as HTML."""
    if isinstance(block, Table):
        head = "".join(f"<th>{escape(c)}</th>" for c in block.header)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Picture):
        data = no_scheme(base64.b64encode(block.png).decode("ascii"))
        return f'<figure><img alt="{escape(block.alt)}" src="data:image/png;base64,{data}"></figure>'
    if isinstance(block, list):
        return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in block) + "</ul>"
    return f"<p>{escape(block)}</p>"


def render_page(title: str, sections: Sequence[Section], style: str = STYLE, lead: Sequence[str] = ()) -> str:
    """The page: the title, then ``lead`` (HTML already escaped, e.g. a verdict), then each section."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{escape(title)}</title><style>{style}</style></head>',
        "<body>",
        f"<h1>{escape(title)}</h1>",
        *lead,
    ]
    for section in sections:
        parts.append(f"<h2>{escape(section.heading)}</h2>")
        parts += [block_html(block) for block in section.blocks]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes at its own resolution, without the software stamp (the same figure, the same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
