"""Ingestion bench: do groundtune's HTML sections agree with doc2dial's own, and how fast is a mixed folder read?

1. Section agreement. doc2dial documents that keep their original HTML (`doc_html_raw`) also carry gold spans,
   each naming the section it is in (`title`). Every text span is located in groundtune's HTML sections (by its
   letters and digits, since doc2dial re-tokenises punctuation) and counts as agreeing when the innermost heading
   of the section holding it equals the span's own title ("" before the first heading on both sides).
   --data-dir is searched recursively for doc2dial document JSON files with `doc_html_raw` (documents seen twice
   count once).
2. Throughput. A folder of --files mixed documents made at run time (PDF, DOCX, HTML, Markdown, text; Korean
   among them; bench/_documents.py) is read by `load_passages`: files/s and passages.

    python bench/ingest.py --data-dir DIR
    python bench/ingest.py --smoke        # the shipped fixture documents (tests/fixtures/doc2dial_html)

The last line printed is one JSON object:

JSON keys: data, html_documents, spans_located, spans_total, section_agreement, section_agreement_by_doc,
mixed_files, mixed_files_by_format, korean_files, passages, ingest_s, files_per_s, skipped_files, smoke, skipped
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _smoke import json_keys  # noqa: E402

JSON_KEYS = json_keys(__doc__)
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "doc2dial_html"


def _letters(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def html_documents(folder: Path) -> dict[str, dict]:
    """doc_id -> raw doc2dial document record, for every document under `folder` that keeps its HTML."""
    out = {}
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("doc_data"), dict):
            continue
        for docs in data["doc_data"].values():
            for doc_id, doc in (docs or {}).items():
                if isinstance(doc, dict) and doc.get("doc_html_raw") and isinstance(doc.get("spans"), dict):
                    out.setdefault(doc_id, doc)
    return out


def section_agreement(doc: dict) -> tuple[int, int, int]:
    """(spans located in groundtune's sections, of which agreeing on the section title, text spans in all)."""
    from groundtune.retrieval.readers import html_sections

    sections = html_sections(doc["doc_html_raw"])
    joined, owner = "", []
    for i, s in enumerate(sections):
        piece = _letters(s.text)
        joined += piece
        owner += [i] * len(piece)
    located = agree = total = 0
    cursor = 0
    for span in sorted(doc["spans"].values(), key=lambda s: int(s["start_sp"])):
        if str(span.get("tag", "")).startswith("h"):
            continue  # a heading span is the title itself, not a section's text
        needle = _letters(span["text_sp"])
        if not needle:
            continue
        total += 1
        at = joined.find(needle, cursor)
        if at < 0:
            at = joined.find(needle)
        if at < 0:
            continue
        cursor = at + len(needle)
        located += 1
        headings = sections[owner[at]].headings
        ours = headings[-1] if headings else ""
        agree += _letters(ours) == _letters(span.get("title", ""))
    return located, agree, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="folder searched for doc2dial documents with doc_html_raw")
    parser.add_argument("--files", type=int, default=30, help="mixed documents made for the throughput run")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if not args.smoke and args.data_dir is None:
        parser.error("give --data-dir DIR (or --smoke)")
    folder = FIXTURE if args.smoke else args.data_dir

    from _documents import make_mixed_folder

    from groundtune.retrieval.passages import IngestReport, load_passages

    documents = html_documents(folder)
    if not documents:
        raise SystemExit(f"{folder}: no doc2dial document JSON with doc_html_raw found")
    by_doc, located, agree, total = {}, 0, 0, 0
    for doc_id, doc in documents.items():
        n_located, n_agree, n_total = section_agreement(doc)
        by_doc[doc_id] = round(n_agree / n_located, 4) if n_located else None
        located, agree, total = located + n_located, agree + n_agree, total + n_total

    with tempfile.TemporaryDirectory() as tmp:
        counts = make_mixed_folder(Path(tmp), args.files)
        korean = sum(1 for p in Path(tmp).rglob("*_ko.*"))
        report = IngestReport()
        start = time.perf_counter()
        passages = load_passages(tmp, report=report)
        seconds = time.perf_counter() - start
    result = {
        "data": str(folder) if not args.smoke else "shipped fixtures (tests/fixtures/doc2dial_html)",
        "html_documents": len(documents),
        "spans_located": located,
        "spans_total": total,
        "section_agreement": round(agree / located, 4) if located else None,
        "section_agreement_by_doc": by_doc,
        "mixed_files": sum(counts.values()),
        "mixed_files_by_format": counts,
        "korean_files": korean,
        "passages": len(passages),
        "ingest_s": round(seconds, 3),
        "files_per_s": round(sum(counts.values()) / seconds, 1),
        "skipped_files": {k: len(v) for k, v in report.skipped.items()},
        "smoke": args.smoke,
        "skipped": {},
    }
    assert set(result) == set(JSON_KEYS), set(result) ^ set(JSON_KEYS)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
