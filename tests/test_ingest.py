"""Users' own files: PDF, HTML, Word, Markdown and text keep their structure; bad files are refused or counted."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _documents import KOREAN_SECTIONS, make_mixed_folder, write_docx, write_pdf  # noqa: E402

from groundtune.errors import DataError  # noqa: E402
from groundtune.retrieval.passages import IngestReport, _walk, file_passages, load_passages  # noqa: E402
from groundtune.retrieval.readers import Unreadable, html_sections  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "doc2dial_html" / "doc2dial_html_docs.json"
SECTIONS = [("Renewals", "Renew your licence every eight years at any office."),
            ("Fees", "The renewal fee is sixty-four dollars and fifty cents.")]


def _dmv_html() -> str:
    docs = json.loads(FIXTURE.read_text(encoding="utf-8"))["doc_data"]["dmv"]
    return docs["Top 5 DMV Mistakes and How to Avoid Them#3_0"]["doc_html_raw"]


def test_html_keeps_the_heading_path_and_drops_boilerplate(tmp_path):
    sections = html_sections(_dmv_html())
    titles = [s.headings[-1] for s in sections if s.headings]
    assert titles[:3] == ["1. Forgetting to Update Address", "2. Leaving the State Without Notifying DMV",
                          "3. Letting Insurance Lapse"]
    page = ("<html><head><script>var secret = 1;</script></head><body><nav>Home Menu</nav><h1>Guide</h1><p>Intro.</p>"
            "<h2>Renewals</h2><h3>Fees</h3><p>Sixty dollars.</p><footer>Copyright</footer></body></html>")
    (tmp_path / "guide.html").write_text(page, encoding="utf-8")
    passages = load_passages(tmp_path / "guide.html")
    assert [p.headings for p in passages] == [("Guide",), ("Guide", "Renewals", "Fees")]
    assert passages[1].citation == "guide.html · Guide › Renewals › Fees"
    text = " ".join(p.text for p in passages)
    assert "secret" not in text and "Menu" not in text and "Copyright" not in text


def test_pdf_pages_and_headings_from_fonts_and_outline(tmp_path):
    for outline in (False, True):
        path = tmp_path / f"handbook{int(outline)}.pdf"
        write_pdf(path, "Handbook", SECTIONS, outline=outline)
        passages = file_passages(path, Path(path.name))
        assert [(p.page, p.headings) for p in passages] == [(1, ("Handbook", "Renewals")), (2, ("Handbook", "Fees"))]
        assert passages[1].citation == f"{path.name} p. 2 · Handbook › Fees"
        assert "sixty-four dollars" in passages[1].text


def test_docx_headings_by_style_and_a_korean_pdf(tmp_path):
    write_docx(tmp_path / "policy.docx", "Policy", SECTIONS)
    passages = file_passages(tmp_path / "policy.docx", Path("policy.docx"))
    assert [p.headings for p in passages] == [("Policy", "Renewals"), ("Policy", "Fees")]
    write_pdf(tmp_path / "ko.pdf", "운전면허 안내", KOREAN_SECTIONS, korean=True)
    ko = file_passages(tmp_path / "ko.pdf", Path("ko.pdf"))
    assert ko[1].headings == ("운전면허 안내", "수수료") and "갱신 수수료" in ko[1].text


def test_mixed_folder_recursive(tmp_path):
    counts = make_mixed_folder(tmp_path, 10)
    report = IngestReport()
    passages = load_passages(tmp_path, report=report)
    assert report.read == counts and not report.skipped
    assert {Path(p.doc_id).suffix for p in passages} == {".pdf", ".docx", ".html", ".md", ".txt"}
    assert any("운전면허" in p.text for p in passages)
    # every passage of a user's file is numbered within it, so a synthetic question can name its gold passage
    for doc in {p.doc_id for p in passages}:
        ids = [p.span_ids for p in passages if p.doc_id == doc]
        assert ids == [(str(i),) for i in range(len(ids))]


def _bad_files(folder: Path) -> dict[str, str]:
    """One file per bad kind; returns file name -> the reason it must be counted under."""
    from reportlab.lib import pdfencrypt
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(folder / "locked.pdf"), encrypt=pdfencrypt.StandardEncryption("user-pw", canModify=0))
    c.drawString(72, 720, "Secret text")
    c.save()
    c = canvas.Canvas(str(folder / "scan.pdf"))
    c.rect(72, 72, 300, 300, fill=1)  # an image-like page: marks, no text layer
    c.save()
    write_pdf(folder / "whole.pdf", "Handbook", SECTIONS)
    (folder / "truncated.pdf").write_bytes((folder / "whole.pdf").read_bytes()[:300])
    write_docx(folder / "whole.docx", "Policy", SECTIONS)
    (folder / "truncated.docx").write_bytes((folder / "whole.docx").read_bytes()[:2000])
    (folder / "empty.html").write_text("<html><head><title>x</title><script>a()</script></head><body> </body></html>")
    (folder / "latin1.txt").write_bytes("Caf\xe9 menu, pr\xe9sent\xe9".encode("latin-1"))
    with open(folder / "huge.txt", "wb") as f:  # sparse: 200 MB on paper, nothing on disk
        f.truncate(200 * 2**20)
    (folder / "loop").mkdir()
    os.symlink("..", folder / "loop" / "back")
    os.symlink("self.md", folder / "self.md")
    return {"locked.pdf": "encrypted", "scan.pdf": "no_text_layer", "truncated.pdf": "corrupt",
            "truncated.docx": "corrupt", "empty.html": "no_text", "latin1.txt": "not_utf8", "huge.txt": "too_large",
            "self.md": "symlink_loop"}


def test_bad_files_in_a_folder_are_counted_by_reason_and_the_good_ones_kept(tmp_path):
    expected = _bad_files(tmp_path)
    report = IngestReport()
    passages = load_passages(tmp_path, report=report)
    assert {p.doc_id for p in passages} == {"whole.pdf", "whole.docx"}  # nothing good is lost
    for name, reason in expected.items():
        assert any(m.startswith(str(tmp_path / name)) for m in report.skipped.get(reason, [])), (name, report.skipped)
    assert any("back" in m for m in report.skipped["symlink_loop"])  # the folder loop, not followed
    assert "OCR is not supported" in report.skipped["no_text_layer"][0]
    assert "line 1 (byte 3): not UTF-8" in report.skipped["not_utf8"][0]
    assert "over the 50 MB limit" in report.skipped["too_large"][0]
    assert "skipped: " in report.summary() and "encrypted 1" in report.summary()


@pytest.mark.parametrize("name", ["locked.pdf", "scan.pdf", "truncated.pdf", "truncated.docx", "empty.html",
                                  "latin1.txt", "huge.txt"])
def test_a_bad_file_named_explicitly_is_an_error_naming_it(tmp_path, name):
    _bad_files(tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / name)):
        load_passages(tmp_path / name)


def test_the_size_limit_is_configurable(tmp_path):
    (tmp_path / "a.txt").write_text("word " * 300_000)  # 1.5 MB
    with pytest.raises(DataError, match=r"over the 1 MB limit; split it or raise --max-file-mb"):
        load_passages(tmp_path / "a.txt", max_file_mb=1)
    assert load_passages(tmp_path / "a.txt", max_file_mb=2)


def test_a_file_that_vanishes_mid_run_is_counted(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\ntext")
    (tmp_path / "b.md").write_text("# B\n\ntext")
    listed = _walk(tmp_path, IngestReport())
    (tmp_path / "b.md").unlink()  # gone between the listing and the reading
    with pytest.raises(Unreadable) as err:
        file_passages(listed[1], Path("b.md"))
    assert err.value.reason == "vanished" and "b.md" in str(err.value)
    assert file_passages(listed[0], Path("a.md"))[0].headings == ("A",)


def test_serve_citations_show_file_page_and_title_path(tmp_path):
    from groundtune.retrieval.index import Retriever, build_index
    from groundtune.serve.citations import Grounding

    write_pdf(tmp_path / "handbook.pdf", "Handbook", SECTIONS)
    build_index(load_passages(tmp_path), tmp_path / "index", dense=False, show_progress=False)
    cited = Grounding(Retriever.load(tmp_path / "index")).passages("what is the renewal fee", [], 1)
    assert cited[0].to_dict()["source"] == "handbook.pdf p. 2 · Handbook › Fees"


def test_index_command_reports_skips_at_the_end(tmp_path):
    from typer.testing import CliRunner

    from groundtune.cli import app

    docs = tmp_path / "docs"
    docs.mkdir()
    _bad_files(docs)
    result = CliRunner().invoke(app, ["index", str(docs), "--out", str(tmp_path / "index"), "--no-dense",
                                      "--max-file-mb", "100"])
    assert result.exit_code == 0, result.output
    assert "files read: docx 1, pdf 1; skipped: corrupt 2, encrypted 1, no_text 1, no_text_layer 1, not_utf8 1, " \
           "symlink_loop 2, too_large 1" in result.output
    assert f"skipped {docs / 'huge.txt'}: 200 MB is over the 100 MB limit" in result.output
