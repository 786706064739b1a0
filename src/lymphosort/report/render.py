"""The report as plain data (sections of blocks) and its two renderings, HTML and Markdown.

Section builders only produce blocks of *unescaped* text; escaping happens here, in one
place per format, so no builder can forget it. The HTML page is self-contained: inline CSS,
images as base64 data URIs, no script, no external font or stylesheet. The Markdown page
links images by path relative to the report's folder.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Sequence, Union
from urllib.parse import quote

__all__ = ["Banner", "Document", "Image", "Para", "Section", "Table", "to_html", "to_markdown"]

NOT_RUN = "not run"


@dataclass(frozen=True)
class Para:
    text: str
    #: "p" plain, "note" (muted), "warn" (highlighted: estimates, missing files)
    kind: str = "p"


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    #: resolved file, or None when the record names a file that is not there
    path: Path | None
    caption: str
    #: what the record said, shown when the file is missing
    ref: str = ""


Block = Union[Para, Table, Image]


@dataclass
class Section:
    id: str
    title: str
    #: "done", or NOT_RUN (then `reason` says why and `blocks` are usually empty)
    status: str
    data: str = ""
    blocks: list[Block] = field(default_factory=list)
    reason: str = ""


@dataclass(frozen=True)
class Banner:
    text: str
    kind: str  # "simulated" | "real" | "unknown"


@dataclass
class Document:
    title: str
    subtitle: str
    banner: Banner
    sections: list[Section]
    footer: str = ""


# ------------------------------------------------------------------------------ images

#: Raster formats we embed, by file signature: a record cannot make the report embed an
#: arbitrary file (a text file, an SVG with script) just by naming it.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_mime(data: bytes) -> str | None:
    for sig, mime in _SIGNATURES:
        if data.startswith(sig):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _read_image(path: Path | None) -> tuple[bytes, str] | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    mime = image_mime(data)
    return (data, mime) if mime else None


# ------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2329;background:#fafbfc;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:1.5rem 2rem 3rem}
h1{margin:.2rem 0}h2{margin-top:2.2rem;border-bottom:2px solid #dde3ea;padding-bottom:.25rem}
.subtitle{color:#59636e;margin:0 0 1rem}
.banner{padding:.8rem 1rem;border-radius:6px;font-weight:600;margin:1rem 0}
.banner.simulated{background:#fff4d6;border:2px solid #e0a800;color:#5c4400}
.banner.real{background:#e6f4ea;border:2px solid #34a853;color:#174d26}
.banner.unknown{background:#fde8e8;border:2px solid #d93025;color:#6b1410}
.data{color:#59636e;font-size:.9rem;margin:.2rem 0 .8rem}
.status{display:inline-block;font-size:.75rem;font-weight:600;padding:.1rem .5rem;border-radius:10px;vertical-align:middle;margin-left:.5rem}
.status.done{background:#e6f4ea;color:#174d26}.status.not-run{background:#eceff1;color:#59636e}
.notrun{color:#59636e;font-style:italic}
.note{color:#59636e;font-size:.9rem}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:.4rem .8rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem;background:#fff}
th,td{border:1px solid #dde3ea;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f1f4f7}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
caption{caption-side:top;text-align:left;color:#59636e;font-size:.85rem;padding-bottom:.2rem}
figure{margin:.6rem 0 1.2rem}figure img{max-width:100%;height:auto;border:1px solid #dde3ea;background:#fff}
figcaption{color:#59636e;font-size:.85rem}
nav ol{columns:2;font-size:.95rem}
footer{color:#59636e;font-size:.8rem;margin-top:3rem}
""".strip()

_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
$css
</style>
</head>
<body>
<main>
<h1>$title</h1>
<p class="subtitle">$subtitle</p>
<div class="banner $banner_kind" role="note">$banner</div>
<nav><ol>
$toc
</ol></nav>
$sections
<footer>$footer</footer>
</main>
</body>
</html>
"""
)

_NUMERIC = re.compile(r"^[\s+\-]?[\d,.]+\s*(%|x|pp|ms|us|µs|ns|MHz|[kMG])?(\s*\[.*\])?$|^n/a$")


def _e(s: str) -> str:
    return html.escape(str(s), quote=True)


def _html_block(b: Block) -> str:
    if isinstance(b, Para):
        cls = {"note": ' class="note"', "warn": ' class="warn"'}.get(b.kind, "")
        return f"<p{cls}>{_e(b.text)}</p>"
    if isinstance(b, Table):
        cap = f"<caption>{_e(b.caption)}</caption>" if b.caption else ""
        head = "".join(f"<th>{_e(h)}</th>" for h in b.header)
        body = "\n".join(
            "<tr>" + "".join(
                f'<td class="n">{_e(c)}</td>' if _NUMERIC.match(str(c)) else f"<td>{_e(c)}</td>" for c in row
            ) + "</tr>"
            for row in b.rows
        )
        return f"<table>{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"
    if isinstance(b, Image):
        got = _read_image(b.path)
        if got is None:
            return f'<p class="warn">{_e(_missing(b))}</p>'
        data, mime = got
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        return f'<figure><img src="{uri}" alt="{_e(b.caption)}"><figcaption>{_e(b.caption)}</figcaption></figure>'
    raise TypeError(f"unknown block {type(b).__name__}")


def _missing(b: Image) -> str:
    what = b.ref or (str(b.path) if b.path else "no file recorded")
    return f"{b.caption}: image missing or not a PNG/JPEG ({what})"


def to_html(doc: Document) -> str:
    toc = "\n".join(
        f'<li><a href="#{_e(s.id)}">{_e(s.title)}</a>{"" if s.status == "done" else " (" + NOT_RUN + ")"}</li>'
        for s in doc.sections
    )
    parts = []
    for s in doc.sections:
        cls = "done" if s.status == "done" else "not-run"
        out = [f'<section id="{_e(s.id)}">', f'<h2>{_e(s.title)}<span class="status {cls}">{_e(s.status)}</span></h2>']
        if s.data:
            out.append(f'<p class="data">{_e(s.data)}</p>')
        if s.status != "done":
            out.append(f'<p class="notrun">{_e(_not_run_text(s))}</p>')
        out.extend(_html_block(b) for b in s.blocks)
        out.append("</section>")
        parts.append("\n".join(out))
    return _PAGE.substitute(
        title=_e(doc.title),
        subtitle=_e(doc.subtitle),
        css=_CSS,
        banner_kind=_e(doc.banner.kind),
        banner=_e(doc.banner.text),
        toc=toc,
        sections="\n".join(parts),
        footer=_e(doc.footer),
    )


def _not_run_text(s: Section) -> str:
    return f"Stage {NOT_RUN}" + (f": {s.reason}" if s.reason else ".")


# ------------------------------------------------------------------------------ Markdown

_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}#|!])")


def md_escape(s: str) -> str:
    """Text that renders literally: HTML is neutralised (as entities), markup characters are
    backslash-escaped, newlines flattened (a cell or line must stay one line)."""
    s = html.escape(str(s), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", s).replace("\r", " ").replace("\n", " ")


def _md_link(path: Path, base: Path) -> str:
    rel = Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    return quote(rel, safe="/._-~")


def _md_block(b: Block, base: Path) -> str:
    if isinstance(b, Para):
        t = md_escape(b.text)
        return f"> **Note:** {t}" if b.kind == "warn" else (f"_{t}_" if b.kind == "note" else t)
    if isinstance(b, Table):
        lines = [f"_{md_escape(b.caption)}_", ""] if b.caption else []
        lines.append("| " + " | ".join(md_escape(h) for h in b.header) + " |")
        lines.append("|" + "---|" * len(b.header))
        lines.extend("| " + " | ".join(md_escape(c) for c in row) + " |" for row in b.rows)
        return "\n".join(lines)
    if isinstance(b, Image):
        if _read_image(b.path) is None:
            return f"> **Note:** {md_escape(_missing(b))}"
        assert b.path is not None
        return f"![{md_escape(b.caption)}]({_md_link(b.path, base)})\n\n_{md_escape(b.caption)}_"
    raise TypeError(f"unknown block {type(b).__name__}")


def to_markdown(doc: Document, base: Path) -> str:
    """Markdown with image links relative to `base` (the folder the .md is written to)."""
    out = [f"# {md_escape(doc.title)}", "", md_escape(doc.subtitle), "", f"> **{md_escape(doc.banner.text)}**", ""]
    out.append("Contents:")
    out.extend(
        f"{i}. [{md_escape(s.title)}](#{s.id})" + ("" if s.status == "done" else f" ({NOT_RUN})")
        for i, s in enumerate(doc.sections, 1)
    )
    out.append("")
    for s in doc.sections:
        out += [f'<a id="{s.id}"></a>', "", f"## {md_escape(s.title)}", ""]
        if s.data:
            out += [f"_{md_escape(s.data)}_", ""]
        if s.status != "done":
            out += [f"**{NOT_RUN.capitalize()}.** " + md_escape(s.reason or ""), ""]
        for b in s.blocks:
            out += [_md_block(b, base), ""]
    if doc.footer:
        out += ["---", "", md_escape(doc.footer), ""]
    return "\n".join(out)
