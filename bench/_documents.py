"""Shared by bench/ingest.py and tests/test_ingest.py: a folder of mixed user documents made at run time.

The English text is the shipped doc2dial fixture documents' (CC BY 3.0, see groundtune/assets/doc2dial/SOURCE.md),
cut into its sections; the Korean text is written for this project. PDFs are drawn with reportlab (BSD) and Word
files with python-docx (MIT), so no binary document is shipped. Headings are real headings in each format (PDF: a
larger font, or an outline; Word: "Heading N" styles; HTML: h1-h3 inside page chrome that must be dropped).
"""

from __future__ import annotations

import html
from pathlib import Path

KOREAN_SECTIONS = [
    ("운전면허 갱신", "운전면허는 만료일 전후 6개월 안에 갱신해야 합니다. 갱신할 때는 신분증과 사진 한 장이 필요하며 "
     "적성검사를 받아야 하는 경우도 있습니다."),
    ("수수료", "갱신 수수료는 일반 면허 기준으로 만 원이며 온라인으로 신청하면 우편으로 새 면허증을 받을 수 있습니다."),
    ("주소 변경", "이사한 뒤에는 십사 일 안에 주소를 변경해야 하며 변경하지 않으면 과태료가 부과될 수 있습니다."),
]


def doc2dial_sections(limit: int | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """(document title, [(section title, text), ...]) of the shipped doc2dial fixture documents."""
    from groundtune.data import asset_path, load_documents

    out = []
    for doc in load_documents(asset_path("doc2dial/doc2dial_doc.json")).values():
        sections: list[tuple[str, list[str]]] = []
        for span in doc.spans:
            if span.tag.startswith("h"):
                continue
            title = span.title.strip() or doc.title.rsplit("#", 1)[0]
            if not sections or sections[-1][0] != title:
                sections.append((title, []))
            sections[-1][1].append(" ".join(span.text_sp.split()))
        out.append((doc.title.rsplit("#", 1)[0], [(t, " ".join(body)) for t, body in sections]))
    return out[:limit]


def write_pdf(path: Path, title: str, sections, *, outline: bool = False, korean: bool = False) -> None:
    """A PDF with a large-font title, medium-font section headings and one section per page from the second on
    (or the same headings as PDF bookmarks, `outline`)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    font = "Helvetica"
    if korean:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.cidfonts import UnicodeCIDFont

        pdfmetrics.registerFont(UnicodeCIDFont("HYGothic-Medium"))
        font = "HYGothic-Medium"
    c = canvas.Canvas(str(path), pagesize=A4)
    width, height = A4
    y = height - 72

    def line(text, size):
        nonlocal y
        if y < 72:
            c.showPage()
            y = height - 72
        c.setFont(font, size)
        c.drawString(56, y, text)
        y -= size * 1.6

    line(title, 18)
    if outline:
        c.bookmarkPage("title")
        c.addOutlineEntry(title, "title", level=0)
    for n, (heading, text) in enumerate(sections):
        if n:
            c.showPage()
            y = height - 72
        line(heading, 14)
        if outline:
            c.bookmarkPage(f"s{n}")
            c.addOutlineEntry(heading, f"s{n}", level=1)
        words, row = text.split(), []
        for word in words:
            row.append(word)
            if len(" ".join(row)) > (45 if korean else 85):
                line(" ".join(row), 10)
                row = []
        if row:
            line(" ".join(row), 10)
    c.save()


def write_docx(path: Path, title: str, sections) -> None:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for heading, text in sections:
        document.add_heading(heading, level=2)
        document.add_paragraph(text)
    document.save(str(path))


def write_html(path: Path, title: str, sections) -> None:
    body = "".join(f"<h2>{html.escape(h)}</h2><p>{html.escape(t)}</p>" for h, t in sections)
    path.write_text(f"<!doctype html><html><head><title>{html.escape(title)}</title><script>var menu = 1;</script>"
                    "<style>p {color: black}</style></head><body><nav><a href='/'>Home</a> <a href='/help'>Help</a></nav>"
                    f"<main><h1>{html.escape(title)}</h1>{body}</main><footer>Copyright notice</footer></body></html>",
                    encoding="utf-8")


def write_markdown(path: Path, title: str, sections) -> None:
    path.write_text(f"# {title}\n\n" + "".join(f"## {h}\n\n{t}\n\n" for h, t in sections), encoding="utf-8")


def write_text(path: Path, title: str, sections) -> None:
    path.write_text(f"{title}\n\n" + "".join(f"{h}\n{t}\n\n" for h, t in sections), encoding="utf-8")


WRITERS = {".pdf": write_pdf, ".docx": write_docx, ".html": write_html, ".md": write_markdown, ".txt": write_text}


def make_mixed_folder(folder: Path, files: int = 30) -> dict[str, int]:
    """`files` documents, cycling PDF, DOCX, HTML, Markdown and text, in two sub-folders; every sixth one is
    Korean (every format in turn). Each holds two or three doc2dial sections (or the Korean ones). Returns files per suffix."""
    folder = Path(folder)
    (folder / "guides").mkdir(parents=True, exist_ok=True)
    (folder / "web").mkdir(exist_ok=True)
    pool = [(title, sections[i : i + 3]) for title, sections in doc2dial_sections() for i in range(0, len(sections), 3)]
    counts: dict[str, int] = {}
    suffixes = list(WRITERS)
    for n in range(files):
        suffix = suffixes[n % len(suffixes)]
        korean = n % 6 == 5
        title, sections = ("운전면허 안내", KOREAN_SECTIONS) if korean else pool[n % len(pool)]
        path = folder / ("web" if suffix == ".html" else "guides") / f"doc{n:02d}{'_ko' if korean else ''}{suffix}"
        if suffix == ".pdf":
            write_pdf(path, title, sections, outline=n % 2 == 1, korean=korean)
        else:
            WRITERS[suffix](path, title, sections)
        counts[suffix] = counts.get(suffix, 0) + 1
    return counts
