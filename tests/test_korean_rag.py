"""`groundtune demo ko-rag` end to end on a tiny random Llama with a Korean byte-level BPE (tests/tiny_korean.py):
the shipped Korean news indexed with Kiwi BM25, questions through synth's filters, held out by article, training,
both models asked through a real `serve` app over HTTP, Korean scores with intervals. Seconds, not minutes.

A random model cannot write questions, so the teacher here is a small one that asks about two content words of
the sentence (as a person skimming it would); synth's filters and the round trip through the index still decide."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from groundtune.cli import app
from groundtune.metrics import METRICS


class KeywordTeacher:
    """Asks about the two longest words of the passage in synth's Korean prompt (never copies a run of it)."""

    def complete(self, prompts):
        out = []
        for prompt in prompts:
            passage = prompt.split("글:", 1)[1].split("질문:", 1)[0].split("//", 1)[-1]
            words = sorted({w for w in re.findall(r"[가-힣]{2,6}", passage)}, key=lambda w: (-len(w), w))[:2]
            out.append(f"{' 그리고 '.join(words)}에 대해 무엇이라고 하나요?" if words else "")
        return out


@pytest.fixture
def tiny_korean_model(tmp_path, monkeypatch):
    from tiny_korean import polyglot_tokenizer, tiny_for

    from groundtune.tasks import korean_rag

    tokenizer = polyglot_tokenizer()
    folder = tmp_path / "tiny-ko"
    tiny_for("llama", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    real_config = korean_rag.korean_rag_config

    def small(*args, **kwargs):  # the demo's own run, shrunk: one adapter layer, four new tokens
        cfg = real_config(*args, method={"method": "llama_adapter", "layers": 1, "length": 2}, **kwargs)
        cfg.generation.max_new_tokens = 4
        return cfg

    monkeypatch.setattr(korean_rag, "korean_rag_config", small)
    monkeypatch.setattr(korean_rag, "default_teacher", lambda model, tokenizer: KeywordTeacher())
    return folder


def test_demo_ko_rag_end_to_end(tiny_korean_model, tmp_path):
    out = tmp_path / "ko-rag"
    result = CliRunner().invoke(app, ["demo", "ko-rag", "--model", str(tiny_korean_model), "--steps", "2",
                                      "--output-dir", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    summary = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert summary["articles"] == 20 and summary["passages"] > 200  # the shipped articles, a sentence a passage
    assert summary["synth"]["generated"] == 109 and summary["synth"]["kept"] > 20  # every second sentence asked
    # held out by article: no held-out article has a training question
    rows = [json.loads(line) for line in (out / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
    held = set(summary["held_out_articles"])
    assert len(held) == 4 and held == {r["doc_id"] for r in rows if r["doc_id"] in held}
    assert sum(r["doc_id"] not in held for r in rows) == summary["train_questions"]
    assert summary["held_out_questions"] == len(rows) - summary["train_questions"] > 0
    # every metric before and after, each with its 95% interval, on Korean settings
    for side in ("before", "after"):
        assert set(summary[side]) == set(METRICS), summary[side]
        assert all(len(summary[f"{side}_intervals"][m]) == 2 for m in METRICS)
    assert any("ko-mecab" in s for s in summary["signatures"])
    # answers came back from serve with the index's citations
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(predictions) == summary["held_out_questions"]
    assert all(len(p["citations"]) == 3 and p["reference"] for p in predictions)
    prompt_format = json.loads((out / "adapter" / "groundtune_prompt.json").read_text())
    assert prompt_format["kind"] == "grounded" and prompt_format["k"] == 3
    assert 0 <= summary["source_cited"] <= 100
    assert "before" in result.output and "95% CI" in result.output
