"""Documents -> passages, the units that are indexed and retrieved.

Two segmentations of doc2dial / MultiDoc2Dial documents, as the MultiDoc2Dial baselines build them
(IBM/multidoc2dial, scripts/data_preprocessor.py, `split_text` and `split_text_section`):
  * "token": the document text split on single spaces into non-overlapping windows of 100 words;
  * "structure": one passage per section (consecutive spans sharing a section id or a heading), written
    "parent titles // text".
Each passage keeps its doc_id and the ids of the spans it covers, so retrieval can be scored against the
gold grounding spans. Users' own corpora come as plain text (token windows, or paragraphs), markdown
(windows, or sections under their heading path), and PDF, HTML and Word files (`readers.py`: sections under their
heading path, with the page of a PDF).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from groundtune.errors import ConfigError, DataError
from groundtune.fileio import jsonl_lines

SEGMENTATIONS = ("structure", "token")
WINDOW_WORDS = 100  # MultiDoc2Dial's passage length for "token" segmentation
TITLE_SEP = " // "


@dataclass(frozen=True)
class Passage:
    doc_id: str
    text: str  # what is indexed and shown to a model ("structure" passages start with their titles)
    title: str = ""
    span_ids: tuple[str, ...] = ()  # doc2dial spans this passage covers, in document order
    domain: str = ""
    page: int = 0  # 1-based page of a PDF; 0 where the source has no pages
    headings: tuple[str, ...] = ()  # title path of a user's file, outermost first (["Renewals", "Fees"])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["span_ids"] = list(self.span_ids)
        # Written only when set, so indexes of doc2dial documents read the same as before.
        for key in ("page", "headings"):
            if not d[key]:
                del d[key]
        if "headings" in d:
            d["headings"] = list(self.headings)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Passage":
        return cls(d["doc_id"], d["text"], d.get("title", ""), tuple(d.get("span_ids", ())), d.get("domain", ""),
                   int(d.get("page", 0)), tuple(d.get("headings", ())))

    @property
    def citation(self) -> str:
        """Where the passage is, as a citation shows it: "handbook.pdf p. 12 · Renewals › Fees"."""
        where = self.doc_id
        if self.page:
            where += f" p. {self.page}"
        return where + (" · " + " › ".join(self.headings) if self.headings else "")


# ----------------------------------------------------------------------------------------- doc2dial


def _one_line(text: str) -> str:
    # MultiDoc2Dial's text2line makes newlines and tabs spaces; runs of spaces are also collapsed here,
    # which changes no term and reads better in a prompt.
    return " ".join(text.split())


def _clean_title(title: str) -> str:
    # doc2dial titles end in "#<n>" and may contain "/", which MultiDoc2Dial replaces since it separates titles.
    return title.replace("/", "-").rsplit("#")[0]


def token_passages(document, words: int = WINDOW_WORDS) -> list[Passage]:
    """Non-overlapping `words`-word windows of the document text (MultiDoc2Dial's `split_text`)."""
    text = document.text
    pieces = text.split(" ")
    starts, pos = [], 0
    for piece in pieces:
        starts.append(pos)
        pos += len(piece) + 1
    spans = list(document.spans)
    out = []
    for w in range(0, len(pieces), words):
        window = " ".join(pieces[w : w + words])
        if not window.strip():
            continue
        begin, end = starts[w], starts[w] + len(window)
        covered = tuple(s.id_sp for s in spans if _overlaps(text, s.start_sp, s.end_sp, begin, end))
        # One line, as MultiDoc2Dial writes its passages (text2line): the terms are unchanged.
        out.append(Passage(document.doc_id, _one_line(window), _clean_title(document.title), covered, document.domain))
    return out


def _overlaps(text: str, start: int, end: int, begin: int, stop: int) -> bool:
    """Does [start, end) share a non-blank character with [begin, stop)?"""
    lo, hi = max(start, begin), min(end, stop)
    return lo < hi and not text[lo:hi].isspace()


def structure_passages(document) -> list[Passage]:
    """One passage per section, "parent titles // section text" (MultiDoc2Dial's `split_text_section`).

    Consecutive spans belong to the same section while their id_sec or their heading is unchanged. The
    titles are the section's parent titles when it has more than one, else the document title, exactly as
    in MultiDoc2Dial (so our recall is comparable to theirs).
    """
    groups: list[list] = []
    previous = None
    for span in document.spans:
        same = previous is not None and (span.id_sec == previous.id_sec or span.title.strip() == previous.title.strip())
        if same:
            groups[-1].append(span)
        else:
            groups.append([span])
        previous = span
    doc_title = _clean_title(document.title)
    out = []
    for group in groups:
        last = group[-1]  # MultiDoc2Dial takes the titles from the section's last span
        titles = [_clean_title(t) for t in last.parent_titles] if len(last.parent_titles) > 1 else [doc_title]
        title = " / ".join(titles)
        body = " ".join(s.text_sp for s in group)
        out.append(Passage(document.doc_id, _one_line(title + TITLE_SEP + body), title,
                           tuple(s.id_sp for s in group), document.domain))
    return out


def document_passages(documents, segmentation: str = "structure", words: int = WINDOW_WORDS) -> list[Passage]:
    """Passages of doc2dial documents (a dict from `load_documents` or an iterable), in document order."""
    if words < 1:
        raise ConfigError(f"words is {words}; it must be a whole number in [1, inf) (words per passage window)")
    if segmentation not in SEGMENTATIONS:
        raise DataError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    docs = documents.values() if isinstance(documents, dict) else documents
    out = []
    for doc in docs:
        if segmentation == "token":
            out += token_passages(doc, words)
        else:
            if doc.spans and not any(s.id_sec or s.title for s in doc.spans):
                raise DataError(
                    f"document {doc.doc_id!r} has no section ids or headings (the reading-comprehension release "
                    "drops them); use segmentation='token' for it"
                )
            out += structure_passages(doc)
    return out


# ------------------------------------------------------------------------------- users' own documents


def _word_windows(text: str, words: int) -> list[str]:
    tokens = text.split()
    return [" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]


def text_passages(text: str, doc_id: str, *, title: str = "", segmentation: str = "token",
                  words: int = WINDOW_WORDS) -> list[Passage]:
    """Plain text: `words`-word windows ("token") or blank-line paragraphs ("structure", long ones windowed)."""
    if segmentation == "token":
        return [Passage(doc_id, w, title) for w in _word_windows(text, words)]
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        for w in _word_windows(paragraph, words):
            out.append(Passage(doc_id, title + TITLE_SEP + w if title else w, title))
    return out


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_sections(text: str) -> list[tuple[list[str], str]]:
    """(heading path, body) per section; text before the first heading has an empty path. Fenced code
    blocks are not scanned for headings, since "# comment" lines there are not headings."""
    sections: list[tuple[list[str], list[str]]] = [([], [])]
    path: list[tuple[int, str]] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            level = len(m.group(1))
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, m.group(2))]
            sections.append(([t for _, t in path], []))
        else:
            sections[-1][1].append(line)
    return [(p, "\n".join(body).strip()) for p, body in sections if "\n".join(body).strip()]


def markdown_passages(text: str, doc_id: str, *, title: str = "", segmentation: str = "structure",
                      words: int = WINDOW_WORDS) -> list[Passage]:
    """Markdown: sections under their heading path ("structure"; long sections windowed) or word windows."""
    if segmentation == "token":
        return text_passages(text, doc_id, title=title, segmentation="token", words=words)
    out = []
    for headings, body in markdown_sections(text):
        section_title = " / ".join(headings) or title
        for w in _word_windows(body, words * 2):  # sections are kept whole up to twice a window
            out.append(Passage(doc_id, section_title + TITLE_SEP + w if section_title else w, section_title))
    return out


# ------------------------------------------------------------------------------------------ corpora

TEXT_SUFFIXES = (".txt",)
MARKDOWN_SUFFIXES = (".md", ".markdown")
PLAIN_SUFFIXES = TEXT_SUFFIXES + MARKDOWN_SUFFIXES
DEFAULT_MAX_FILE_MB = 50  # bigger files are refused, not read: a file is read whole into memory


def document_suffixes() -> tuple[str, ...]:
    """Suffixes of the users' files that are indexed (besides doc2dial .json)."""
    from groundtune.retrieval.readers import READERS

    return PLAIN_SUFFIXES + tuple(READERS)


@dataclass
class IngestReport:
    """What a folder gave: files read per format, and files skipped per reason (each with its message)."""

    read: dict = field(default_factory=dict)  # suffix -> files
    skipped: dict = field(default_factory=dict)  # reason -> ["file: message", ...]

    def skip(self, reason: str, message: str) -> None:
        self.skipped.setdefault(reason, []).append(message)

    def summary(self) -> str:
        read = ", ".join(f"{k.lstrip('.')} {v}" for k, v in sorted(self.read.items())) or "none"
        line = f"files read: {read}"
        if self.skipped:
            line += "; skipped: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(self.skipped.items()))
        return line


def _walk(folder: Path, report: IngestReport) -> list[Path]:
    """Files under `folder` (recursive, following symlinked folders once; a link back into a folder already
    walked is a loop, counted and not followed)."""
    import errno

    out, seen = [], {os.path.realpath(folder)}
    for here, dirs, files in os.walk(folder, followlinks=True):
        for d in list(dirs):
            real = os.path.realpath(os.path.join(here, d))
            if real in seen:
                dirs.remove(d)
                report.skip("symlink_loop", f"{os.path.join(here, d)}: a symlink back to a folder already read; not followed")
            seen.add(real)
        dirs.sort()
        for name in sorted(files):
            f = Path(here, name)
            if f.suffix.lower() not in document_suffixes():
                continue
            try:
                f.stat()
            except OSError as err:
                if err.errno == errno.ELOOP:
                    report.skip("symlink_loop", f"{f}: a symlink loop; not followed")
                    continue
            out.append(f)
    return out


def file_passages(f: Path, rel: Path, segmentation: str = "structure", words: int = WINDOW_WORDS, *,
                  max_file_mb: float = DEFAULT_MAX_FILE_MB) -> list[Passage]:
    """Passages of one user file (.pdf, .html, .docx, .md, .txt), each numbered in its span_ids so that
    questions made from it (`groundtune synth`) can name their gold passage. Raises `Unreadable`."""
    from dataclasses import replace

    from groundtune.retrieval.readers import READERS, Unreadable, decode_text

    try:
        size = f.stat().st_size
        if size > max_file_mb * 2**20:
            raise Unreadable(f, "too_large", f"{size / 2**20:,.0f} MB is over the {max_file_mb:g} MB limit; split "
                             "it or raise --max-file-mb")
        data = f.read_bytes()
    except FileNotFoundError as err:
        raise Unreadable(f, "vanished", "the file disappeared before it was read") from err
    except OSError as err:
        raise Unreadable(f, "unreadable", f"cannot be read ({err.strerror or err})") from err
    suffix = f.suffix.lower()
    if suffix in READERS or (suffix in MARKDOWN_SUFFIXES and segmentation == "structure"):
        from groundtune.retrieval.readers import Section

        sections = (READERS[suffix](f, data) if suffix in READERS
                    else [Section(tuple(h), body) for h, body in markdown_sections(decode_text(f, data))])
        size = words if segmentation == "token" else words * 2  # sections are kept whole up to twice a window
        out = []
        for section in sections:
            title = " / ".join(section.headings) or f.stem
            for w in _word_windows(section.text, size):
                out.append(Passage(str(rel), title + TITLE_SEP + w, title, page=section.page, headings=section.headings))
    else:
        out = text_passages(decode_text(f, data), str(rel), title=f.stem, segmentation=segmentation, words=words)
    if not out:
        raise Unreadable(f, "no_text", "the file has no text")
    return [replace(p, span_ids=(str(i),)) for i, p in enumerate(out)]


def load_passages(paths, segmentation: str = "structure", words: int = WINDOW_WORDS, *,
                  max_file_mb: float = DEFAULT_MAX_FILE_MB, report: IngestReport | None = None) -> list[Passage]:
    """Passages from doc2dial JSON document files, users' files (.pdf, .html, .docx, .md, .txt) or folders of
    them (recursive).

    A user file's doc_id is its path relative to the folder it was found in (or its name). A file in a folder
    that cannot be read (encrypted, scanned, corrupt, too large, not UTF-8, a symlink loop, gone) is skipped
    and counted by reason in `report`; a file named explicitly raises a `DataError` instead.
    """
    from groundtune.data.doc2dial import load_documents
    from groundtune.errors import DataError
    from groundtune.retrieval.readers import Unreadable

    if words < 1:
        raise ConfigError(f"words is {words}; it must be a whole number in [1, inf) (words per passage window)")
    if segmentation not in SEGMENTATIONS:
        raise DataError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    report = IngestReport() if report is None else report
    doc_sources, files = [], []
    for p in map(Path, paths):
        if p.is_dir():
            doc_sources.append(p)  # load_documents skips the dialogue files it finds in folders
            files += [(f, f.relative_to(p), False) for f in _walk(p, report)]
        elif p.suffix.lower() == ".json":
            doc_sources.append(p)
        elif p.suffix.lower() in document_suffixes() and p.is_file():
            files.append((p, Path(p.name), True))
        elif not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        else:
            raise DataError(f"{p}: cannot index a {p.suffix or 'suffix-less'} file; give .json (doc2dial), "
                             f"{', '.join(document_suffixes())}, or a folder")
    out = document_passages(load_documents(doc_sources), segmentation, words) if doc_sources else []
    for f, rel, explicit in files:
        try:
            out += file_passages(f, rel, segmentation, words, max_file_mb=max_file_mb)
        except Unreadable as err:
            if explicit:
                raise DataError(str(err)) from err
            report.skip(err.reason, str(err))
            continue
        report.read[f.suffix.lower()] = report.read.get(f.suffix.lower(), 0) + 1
    if not out:
        why = "; ".join(m for ms in report.skipped.values() for m in ms[:3])
        raise DataError(f"no passages found in {', '.join(map(str, paths))}" + (f" ({why})" if why else ""))
    return out


def write_passages(passages: Iterable[Passage], path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for p in passages:
            f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")


def read_passages(path: str | os.PathLike) -> list[Passage]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, record in jsonl_lines(f, path, "passage record (rebuild the index)"):
            try:
                out.append(Passage.from_dict(record))
            except (KeyError, TypeError, AttributeError) as e:
                raise DataError(f"{path}: line {n} is not a passage record ({e}); rebuild the index") from e
    return out
