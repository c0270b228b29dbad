"""A tiny document model rendered twice: Markdown for repository browsers, one self-contained HTML page.

The report is built once as a list of blocks; ``to_markdown`` and ``to_html``
render the same content, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Paragraph:
    text: str  # inline Markdown: `code`, **bold**, *italic*, [text](#anchor)


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Numbered:
    """An ordered list (the answer's claims); ``anchor`` ids the list in HTML."""

    items: list[str]
    anchor: str = ""


@dataclass
class Terms:
    """A glossary: ``[anchor, term, definition]`` per entry; each term is a link target."""

    items: list[list[str]]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: bool = True  # right-align every column but the first
    wrap: bool = False  # let long cells wrap (an index whose rows should fit the page) instead of scrolling


@dataclass
class Image:
    path: Path  # file on disk; Markdown links it relatively, HTML embeds it
    alt: str
    caption: str = ""


@dataclass
class Code:
    text: str


@dataclass
class Details:
    summary: str
    blocks: list = field(default_factory=list)


@dataclass
class Section:
    """Wraps blocks in ``<section id=...>`` in HTML (one per model)."""

    anchor: str
    blocks: list = field(default_factory=list)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# -- Markdown -----------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_block(block, base: Path) -> str:
    if isinstance(block, Heading):
        anchor = f' <a id="{block.anchor}"></a>' if block.anchor else ""
        return f"{'#' * block.level} {block.text}{anchor}"
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Numbered):
        anchor = f'<a id="{block.anchor}"></a>\n\n' if block.anchor else ""
        return anchor + "\n".join(f"{k}. {item}" for k, item in enumerate(block.items, 1))
    if isinstance(block, Terms):
        return "\n".join(f'- <a id="{anchor}"></a>**{term}**: {meaning}' for anchor, term, meaning in block.items)
    if isinstance(block, Table):
        align = ["---"] + (["---:"] if block.numeric else ["---"]) * (len(block.columns) - 1)
        lines = [
            "| " + " | ".join(_md_cell(c) for c in block.columns) + " |",
            "| " + " | ".join(align) + " |",
        ]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        text = "\n".join(lines)
        return f"{text}\n\n*{block.caption}*" if block.caption else text
    if isinstance(block, Image):
        rel = block.path.relative_to(base).as_posix()
        text = f"![{block.alt}]({rel})"
        return f"{text}\n\n*{block.caption}*" if block.caption else text
    if isinstance(block, Code):
        return f"```\n{block.text}\n```"
    if isinstance(block, Details):
        inner = "\n\n".join(_md_block(b, base) for b in block.blocks)
        return f"<details><summary>{html.escape(block.summary)}</summary>\n\n{inner}\n\n</details>"
    if isinstance(block, Section):
        return "\n\n".join(_md_block(b, base) for b in block.blocks)
    raise TypeError(f"unknown block {type(block).__name__}")


def to_markdown(blocks: list, base: Path) -> str:
    """Markdown with images linked relative to ``base`` (the report's folder)."""
    return "\n\n".join(_md_block(b, base) for b in blocks) + "\n"


# -- HTML ---------------------------------------------------------------------------------

_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\((#[^)\s]+)\)"), r'<a href="\2">\1</a>'),
]


def inline_html(text: str) -> str:
    """Escape, then turn the few inline Markdown forms used here into HTML.

    ``\\*`` is Markdown's literal asterisk: it stays an asterisk and never opens or closes
    emphasis (the SE marker inside an italic note).
    """
    out = html.escape(str(text), quote=False).replace("\\*", "&#42;")
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out


def _data_uri(path: Path) -> str:
    kind = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}[path.suffix.lower()]
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _html_block(block) -> str:
    if isinstance(block, Heading):
        anchor = f' id="{block.anchor}"' if block.anchor else ""
        return f"<h{block.level}{anchor}>{inline_html(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{inline_html(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Numbered):
        anchor = f' id="{block.anchor}"' if block.anchor else ""
        return f'<ol class="claims"{anchor}>' + "".join(f"<li>{inline_html(i)}</li>" for i in block.items) + "</ol>"
    if isinstance(block, Terms):
        return ('<dl class="terms">' + "".join(f'<dt id="{anchor}">{inline_html(term)}</dt><dd>{inline_html(meaning)}</dd>'
                                               for anchor, term, meaning in block.items) + "</dl>")
    if isinstance(block, Table):
        head = "".join(f'<th scope="col">{inline_html(c)}</th>' for c in block.columns)
        body = []
        td = '<td class="num">' if block.numeric else "<td>"
        for row in block.rows:
            cells = [f'<th scope="row">{inline_html(row[0])}</th>'] + [
                f"{td}{inline_html(c)}</td>" for c in row[1:]
            ]
            body.append("<tr>" + "".join(cells) + "</tr>")
        # The caption sits outside the scrolling wrapper so that it wraps at the screen's width.
        caption = f'<p class="caption">{inline_html(block.caption)}</p>' if block.caption else ""
        table = '<table class="wrap">' if block.wrap else "<table>"
        return (
            f'<div class="table-wrap">{table}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>{caption}"
        )
    if isinstance(block, Image):
        caption = f"<figcaption>{inline_html(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><img src="{_data_uri(block.path)}" alt="{html.escape(block.alt)}">{caption}</figure>'
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text)}</code></pre>"
    if isinstance(block, Details):
        inner = "".join(_html_block(b) for b in block.blocks)
        return f"<details><summary>{inline_html(block.summary)}</summary>{inner}</details>"
    if isinstance(block, Section):
        inner = "".join(_html_block(b) for b in block.blocks)
        return f'<section id="{block.anchor}" class="model">{inner}</section>'
    raise TypeError(f"unknown block {type(block).__name__}")


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;margin:0;color:#1b1b1b;background:#fff}
main{max-width:980px;margin:0 auto;padding:1rem}
p,li,h1,h2,h3,figcaption,summary{overflow-wrap:anywhere}
h1{font-size:1.5rem;margin:.4rem 0 .5rem}h2{font-size:1.35rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1.1rem}
ol.claims{margin:.2rem 0 .4rem;padding-left:1.6rem}
ol.claims li{margin:.15rem 0}dl.terms dt{font-weight:600;margin-top:.4rem}dl.terms dd{margin-left:1.2rem}
.table-wrap{overflow-x:auto;max-width:100%;margin:.6rem 0}
table{border-collapse:collapse;font-size:.85rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;white-space:nowrap}
td.num{text-align:right}table.wrap th,table.wrap td{white-space:normal;min-width:5.5em}thead th{background:#f3f3f3}p.caption{font-size:.8rem;color:#555;margin-top:0}
figure{margin:.8rem 0}img{max-width:100%;height:auto;display:block}
figcaption{font-size:.85rem;color:#555}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.8rem}
code{font-size:.9em}details{margin:.5rem 0}summary{cursor:pointer}
footer{border-top:1px solid #ddd;margin-top:2rem;padding-top:.5rem;font-size:.8rem;color:#444}
@media (max-width:600px){main{padding:.5rem}h1{font-size:1.35rem}table{font-size:.75rem}}
"""


def to_html(blocks: list, title: str, footer: list | None = None) -> str:
    """One self-contained page: inline CSS, images as data URIs, no scripts, no network."""
    body = "".join(_html_block(b) for b in blocks)
    foot = "<footer>" + "".join(_html_block(b) for b in footer) + "</footer>" if footer else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}{foot}</main></body></html>\n"
    )
