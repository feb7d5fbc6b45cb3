"""Summarization evaluation with the seed study's prompt, scored with Korean-aware ROUGE-1/ROUGE-L, F1, SacreBLEU.

    주어진 기사를 요약하세요 기사: (문서)

Article/summary pairs come from JSON/JSONL records or a folder of JSON files. Two layouts are read:
- plain: {"document" | "article" | "text": str or list of sentences, "summary" | "abstractive": str or list}
- extractive: sentences plus the indices of the summary sentences, as sci-news-sum-kr-50 ({"sentences", "summaries"})
  and AI-Hub news ({"article_original", "extractive"}) store them.

A long article is cut at its end to `max_document_tokens` (counted and reported) rather than left-truncated with
the rest of the prompt, which would cut the instruction in front of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from groundtune.data import DataError
from groundtune.data.sample import DropReport, Sample
from groundtune.fileio import jsonl_lines, read_text
from groundtune.errors import GroundtuneError

SUMMARIZE_PROMPT = "주어진 기사를 요약하세요 기사: {document}"

_DOCUMENT_KEYS = ("document", "article", "text", "article_original", "sentences")
_SUMMARY_KEYS = ("summary", "abstractive")
_INDEX_KEYS = ("summaries", "extractive")
_FINAL = tuple('.?!。…"\'”’)')


@dataclass(frozen=True)
class SummaryPair:
    id: str
    document: str
    summary: str
    title: str = ""


def join_sentences(sentences: Sequence[str]) -> str:
    """Sentences as running text. sci-news-sum-kr-50 stripped the final full stops, so a sentence without final
    punctuation gets one back (otherwise sentence ends would vanish from both the prompt and the reference)."""
    parts = [s.strip() for s in sentences if isinstance(s, str) and s.strip()]
    return " ".join(p if p.endswith(_FINAL) else p + "." for p in parts)


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return join_sentences(value)
    return None


def _pair(record: dict, where: str, report: DropReport) -> SummaryPair | None:
    doc_key = next((k for k in _DOCUMENT_KEYS if k in record), None)
    document = _text(record.get(doc_key)) if doc_key else None
    if not document:
        report.drop("no_document", where)
        return None
    summary = next((_text(record[k]) for k in _SUMMARY_KEYS if record.get(k)), None)
    index_key = next((k for k in _INDEX_KEYS if record.get(k)), None)
    if not summary and index_key and isinstance(record.get(doc_key), list):
        sentences, picked = record[doc_key], record[index_key]
        if not all(isinstance(i, int) and 0 <= i < len(sentences) for i in picked):
            report.drop("bad_summary_index", where)
            return None
        summary = join_sentences([sentences[i] for i in picked])
    if not summary:
        report.drop("no_summary", where)
        return None
    report.keep()
    return SummaryPair(str(record.get("id") or record.get("slug") or where), document, summary,
                       str(record.get("title") or ""))


def _records(path: Path):
    text = read_text(path, what="data file")
    if path.suffix == ".jsonl" or not text.lstrip().startswith(("[", "{")) or _is_jsonl(text):
        for line_no, record in jsonl_lines(text.splitlines(), path, "{document, summary}", DataError):
            yield f"{path}:{line_no}", record
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if isinstance(data, dict):
        yield str(path), data
    else:
        yield from ((f"{path}:{i}", r) for i, r in enumerate(data))


def _is_jsonl(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    try:
        json.loads(lines[0])
        return True
    except json.JSONDecodeError:
        return False


def load_summaries(path: str | Path) -> tuple[list[SummaryPair], DropReport]:
    """Pairs from a .json / .jsonl file or a folder of .json files (read in name order)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        if not files:
            raise DataError(f"{path} holds no .json or .jsonl files")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path} does not exist")
    report = DropReport(str(path))
    pairs = []
    for file in files:
        for where, record in _records(file):
            if not isinstance(record, dict):
                report.drop("not_an_object", where)
                continue
            pair = _pair(record, where, report)
            if pair is not None:
                pairs.append(pair)
    return pairs, report


def _cut(tokenizer, text: str, max_tokens: int) -> tuple[str, bool]:
    """`text` cut after `max_tokens` tokens, at a character boundary (byte-level tokens can split a syllable)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    if len(enc["input_ids"]) <= max_tokens:
        return text, False
    end = enc["offset_mapping"][max_tokens - 1][1]
    return text[:end].rstrip(), True


def summarization_samples(pairs: Sequence[SummaryPair], tokenizer, *, prompt: str = SUMMARIZE_PROMPT,
                          template: str | None = None, max_document_tokens: int | None = 512
                          ) -> tuple[list[Sample], int]:
    """Samples (prompt = the seed prompt with the article, answer = the reference) and how many articles were cut.

    template: None writes the seed prompt as it is; an instruction template ("koalpaca", "alpaca", "chat" or a
    YAML file, see groundtune.data.instruct) wraps it as the instruction, as a model tuned on that template expects.
    """
    from groundtune.data.instruct import instruction_samples

    if "{document}" not in prompt:
        raise GroundtuneError(f"the summarization prompt must contain {{document}}, got {prompt!r}")
    texts, cut = [], 0
    for pair in pairs:
        document = pair.document
        if max_document_tokens is not None:
            document, was_cut = _cut(tokenizer, document, max_document_tokens)
            cut += was_cut
        texts.append(prompt.replace("{document}", document))
    if template is None:
        samples = [Sample(p.id, text, p.summary, meta={"title": p.title}) for p, text in zip(pairs, texts)]
    else:
        records = [{"id": p.id, "instruction": text, "output": p.summary} for p, text in zip(pairs, texts)]
        samples, _ = instruction_samples(records, template, tokenizer=tokenizer)  # nothing drops: fields are set
    return samples, cut


def evaluate_summaries(model, tokenizer, pairs: Sequence[SummaryPair], gen=None, *, prompt: str = SUMMARIZE_PROMPT,
                       template: str | None = None, max_document_tokens: int | None = 512, progress: bool = True):
    """Generate a summary per article and score it against the reference with Korean morpheme metrics.

    Returns (samples, predictions, report, articles cut); `report` is groundtune.metrics' Report (ROUGE-1, ROUGE-L,
    F1, SacreBLEU, METEOR x100 with signatures)."""
    from groundtune.config import GenerationConfig
    from groundtune.tasks.grounded import evaluate

    if not pairs:
        raise GroundtuneError("no article/summary pairs to evaluate: check the data file and the drop report")
    gen = gen or GenerationConfig(max_new_tokens=128, batch_size=4)
    samples, cut = summarization_samples(pairs, tokenizer, prompt=prompt, template=template,
                                         max_document_tokens=max_document_tokens)
    # Articles are already cut, so the prompt limit only guards against a runaway template.
    limit = (max_document_tokens or 0) + 512 if max_document_tokens else 1 << 30
    predictions, report = evaluate(model, tokenizer, samples, gen, lang="ko", max_prompt_tokens=limit,
                                   progress=progress)
    return samples, predictions, report, cut
