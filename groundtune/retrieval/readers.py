"""Users' own files -> sections (title path, text, page), one reader per format, registered in `READERS`.

Every reader goes through a maintained, permissively licensed library rather than a parser of our own:
pypdf (BSD) for PDF, python-docx (MIT) for Word, BeautifulSoup (MIT, with the standard library's HTML parser) for
HTML; Markdown and plain text are read by `passages.py` as before. A section is what a citation points at: the
file, the page (PDFs) and the heading path, doc2dial-style (["Renewals", "Fees"]).

A file that cannot be read raises `Unreadable` with a short reason key ("encrypted", "no_text_layer", ...) and a
message naming the file and the fix; `load_passages` turns it into a counted skip inside a folder and into an
error for a file named on the command line.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Section:
    headings: tuple[str, ...]  # title path, outermost first; () before the first heading
    text: str
    page: int = 0  # 1-based PDF page; 0 where pages do not exist


class Unreadable(Exception):
    """A file that cannot be turned into text; `reason` is the key it is counted under."""

    def __init__(self, path, reason: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.reason = str(path), reason


def _clean(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------------ HTML

HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
# Boilerplate that is not the document's content: navigation, scripts, forms, page chrome.
BOILERPLATE = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "iframe", "svg",
               "button", "select")
# Tags after which text starts a new line (so words of neighbouring blocks do not run together).
BLOCKS = {"p", "div", "li", "ul", "ol", "table", "tr", "td", "th", "pre", "blockquote", "dd", "dt", "dl", "section",
          "article", "main", "br", "caption", "figcaption", *HEADINGS}


def html_sections(html: str, path="HTML") -> list[Section]:
    """Sections of an HTML page under their h1-h6 path; navigation, scripts and page chrome dropped."""
    from bs4 import BeautifulSoup, NavigableString, Tag
    from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup.find_all(BOILERPLATE):
        tag.decompose()
    root = soup.body or soup  # a saved fragment (doc2dial's doc_html_raw) has no <body>: all of it is content
    sections: list[Section] = []
    path_stack: list[tuple[int, str]] = []
    buffer: list[str] = []

    def flush():
        text = "\n".join(_clean(line) for line in "".join(buffer).split("\n") if line.strip())
        if text:
            sections.append(Section(tuple(t for _, t in path_stack), text))
        buffer.clear()

    skip_until = None  # the heading whose strings are being skipped (they are its title, not body)
    for node in root.descendants:
        if skip_until is not None:
            if node is skip_until or skip_until in getattr(node, "parents", ()):
                continue
            skip_until = None
        if isinstance(node, Tag):
            if node.name in HEADINGS:
                title = _clean(node.get_text(" "))
                if title:
                    flush()
                    level = int(node.name[1])
                    path_stack[:] = [(lvl, t) for lvl, t in path_stack if lvl < level] + [(level, title)]
                skip_until = node
            elif node.name in BLOCKS:
                buffer.append("\n")
        elif isinstance(node, NavigableString) and not isinstance(
                node, (Comment, Declaration, Doctype, ProcessingInstruction)):
            buffer.append(str(node))
    flush()
    if not sections:
        raise Unreadable(path, "no_text", "the HTML has no text in its body (after dropping navigation and scripts)")
    return sections


def read_html(path: Path, data: bytes) -> list[Section]:
    return html_sections(decode_text(path, data), path)


# ------------------------------------------------------------------------------------------------- PDF

HEADING_SCALE = 1.15  # a line whose font is this much larger than the body's is a heading
HEADING_MAX_CHARS = 120


def _outline_entries(reader) -> list[tuple[int, int, str]]:
    """(page index, depth, title) of the PDF's outline (bookmarks), in order."""
    out = []

    def walk(items, depth):
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # a bookmark pointing nowhere is ignored, as viewers do
                continue
            if page is not None and page >= 0:
                out.append((page, depth, _clean(str(item.title))))

    try:
        walk(reader.outline, 0)
    except Exception:
        return []
    return out


def _page_lines(page) -> list[tuple[str, float]]:
    """(line text, largest font size on it) of one page, through pypdf's text visitor."""
    lines: list[list] = [["", 0.0]]

    def visit(text, cm, tm, font_dict, font_size):
        scale = abs(tm[3]) if tm and tm[3] else 1.0  # a size set through the text matrix
        size = float(font_size or 0) * scale
        for i, part in enumerate(text.split("\n")):
            if i:
                lines.append(["", 0.0])
            lines[-1][0] += part
            if part.strip():
                lines[-1][1] = max(lines[-1][1], size)

    page.extract_text(visitor_text=visit)
    return [(_clean(t), s) for t, s in lines if t.strip()]


def read_pdf(path: Path, data: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:  # owner-password-only PDFs open with the empty user password
                ok = reader.decrypt("")
            except Exception:
                ok = 0
            if not ok:
                raise Unreadable(path, "encrypted", "the PDF is encrypted; save an unencrypted copy to index it")
        pages = [_page_lines(p) for p in reader.pages]
        outline = _outline_entries(reader)
    except Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as err:
        raise Unreadable(path, "corrupt", f"not a readable PDF ({type(err).__name__}: {err}); is it truncated?") from err
    if not any(pages):
        raise Unreadable(path, "no_text_layer", "the PDF has no text layer (a scan?); OCR is not supported, so run "
                         "it through an OCR tool first")
    headings = _outline_headings(outline) if outline else _font_headings(pages)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []

    def flush(page_no):
        if body:
            sections.append(Section(tuple(t for _, t in stack), "\n".join(body), page_no))
            body.clear()

    for page_index, lines in enumerate(pages):
        for text, size in lines:
            level = headings(page_index, text, size)
            if level:
                flush(page_index + 1)
                stack[:] = [(lvl, t) for lvl, t in stack if lvl < level] + [(level, text)]
            else:
                body.append(text)
        flush(page_index + 1)  # a section never spans pages: each passage cites one page
    return sections


def _outline_headings(outline):
    """Heading test from the outline: a line that is a bookmark's title on the bookmark's page."""
    wanted = {(page, _clean(title).lower()): depth + 1 for page, depth, title in outline}

    def level(page_index, text, size):
        return wanted.get((page_index, text.lower()), 0)

    return level


def _font_headings(pages):
    """Heading test from font sizes: short lines in a font larger than the body's (the most used size by
    characters); larger fonts are outer levels."""
    by_size = Counter()
    for lines in pages:
        for text, size in lines:
            by_size[round(size, 1)] += len(text)
    if not by_size:
        return lambda *_: 0
    body_size = by_size.most_common(1)[0][0]
    larger = sorted({s for s in by_size if s >= body_size * HEADING_SCALE}, reverse=True)
    levels = {s: i + 1 for i, s in enumerate(larger[:6])}

    def level(page_index, text, size):
        return levels.get(round(size, 1), 0) if len(text) <= HEADING_MAX_CHARS else 0

    return level


# ------------------------------------------------------------------------------------------------ DOCX

_HEADING_STYLE = re.compile(r"^heading (\d)$", re.I)


def read_docx(path: Path, data: bytes) -> list[Section]:
    """Paragraphs and tables in order; paragraphs styled "Title" / "Heading N" make the title path."""
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(document.iter_inner_content())
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
        raise Unreadable(path, "corrupt", f"not a readable .docx ({type(err).__name__}: {err}); is it truncated, or "
                         "an old .doc (save it as .docx)?") from err
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []

    def flush():
        if body:
            sections.append(Section(tuple(t for _, t in stack), "\n".join(body)))
            body.clear()

    for block in blocks:
        if isinstance(block, Table):
            for row in block.rows:
                cells = list(dict.fromkeys(_clean(c.text) for c in row.cells if c.text.strip()))  # merged cells repeat
                if cells:
                    body.append(" | ".join(cells))
            continue
        text = _clean(block.text)
        if not text:
            continue
        style = (block.style.name if block.style is not None else "") or ""
        m = _HEADING_STYLE.match(style)
        level = 1 if style.lower() == "title" else int(m.group(1)) if m else 0
        if level:
            flush()
            stack[:] = [(lvl, t) for lvl, t in stack if lvl < level] + [(level, text)]
        else:
            body.append(text)
    flush()
    if not sections:
        raise Unreadable(path, "no_text", "the .docx has no text")
    return sections


# ------------------------------------------------------------------------------------------- plain text


def decode_text(path, data: bytes) -> str:
    """UTF-8 text (a byte-order mark is dropped); anything else is refused with where it breaks."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        from groundtune.fileio import not_utf8

        raise Unreadable(path, "not_utf8", not_utf8(data, err)) from err


# Reader of each suffix (lower case). Markdown and text yield their text; `passages.py` segments them as before.
READERS = {
    ".pdf": read_pdf,
    ".html": read_html,
    ".htm": read_html,
    ".docx": read_docx,
}
