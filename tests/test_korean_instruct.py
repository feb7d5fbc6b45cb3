"""Korean instruction runs scored with Korean-aware metrics, and the summarization evaluation with the seed prompt."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from groundtune.config import DataConfig, GenerationConfig, TrainConfig
from groundtune.data import DataError, asset_path, load_instructions
from groundtune.data.instruct import KOALPACA
from groundtune.metrics import score
from groundtune.tasks.grounded import train_and_evaluate
from groundtune.tasks.summarize import (SUMMARIZE_PROMPT, SummaryPair, evaluate_summaries, join_sentences, load_summaries,
                                  summarization_samples)
from tiny_korean import polyglot_tokenizer, tiny_for

SCI_NEWS = asset_path("ko_summarization/sci-news-sum-kr-50")


@pytest.fixture(scope="module")
def tokenizer():
    return polyglot_tokenizer()


def test_shipped_articles_read_with_their_extractive_summaries():
    pairs, report = load_summaries(SCI_NEWS)
    assert report.kept == 5 and report.total_dropped == 0
    raw = json.loads((SCI_NEWS / "02.json").read_text(encoding="utf-8"))
    first = pairs[0]
    assert first.id == raw["slug"] and first.title == raw["title"]
    assert first.summary == join_sentences([raw["sentences"][i] for i in raw["summaries"]])
    assert first.summary.startswith(raw["sentences"][0] + ". ")  # the stripped full stops are back
    assert first.document.count(". ") >= len(raw["sentences"]) - 2
    assert all(p.document and p.summary and len(p.summary) < len(p.document) for p in pairs)


def test_other_layouts_and_what_is_dropped(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "plain", "document": "첫 문장이다. 둘째 문장이다.", "summary": "첫 문장."},
        {"id": "aihub", "article_original": ["가는 나다", "다는 라다"], "extractive": [1], "abstractive": ["요약문."]},
        {"id": "aihub-extractive", "article_original": ["가는 나다", "다는 라다"], "extractive": [1]},
        {"id": "bad-index", "sentences": ["하나", "둘"], "summaries": [5]},
        {"id": "no-summary", "text": "본문만 있다."},
        {"summary": "본문이 없다."},
        ["not", "an", "object"],
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    pairs, report = load_summaries(path)
    assert [(p.id, p.summary) for p in pairs] == [("plain", "첫 문장."), ("aihub", "요약문."),
                                                  ("aihub-extractive", "다는 라다.")]
    assert report.dropped == {"bad_summary_index": 1, "no_summary": 1, "no_document": 1, "not_an_object": 1}
    assert report.examples["no_summary"] == [f"{path}:5"]

    path.write_text('{"document": "가", "summary": "나"}\n{"document": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.jsonl, line 2"):
        load_summaries(path)


def test_seed_prompt_keeps_its_instruction_when_the_article_is_cut(tokenizer):
    pair = SummaryPair("a", ("아주 긴 기사입니다. " * 50).strip(), "요약.")
    (sample,), cut = summarization_samples([pair], tokenizer, max_document_tokens=20)
    assert cut == 1 and sample.prompt.startswith("주어진 기사를 요약하세요 기사: 아주 긴 기사입니다.")
    body = sample.prompt.removeprefix("주어진 기사를 요약하세요 기사: ")
    assert len(tokenizer(body)["input_ids"]) <= 20 and "\ufffd" not in body  # cut between characters
    assert sample.answer == "요약."
    (wrapped,), _ = summarization_samples([pair], tokenizer, template="koalpaca", max_document_tokens=None)
    assert wrapped.prompt == KOALPACA.prompt(SUMMARIZE_PROMPT.format(document=pair.document))


def test_summary_evaluation_scores_on_korean_morphemes(tokenizer):
    pairs, _ = load_summaries(SCI_NEWS)
    model = tiny_for("gpt_neox", tokenizer)
    gen = GenerationConfig(max_new_tokens=6, batch_size=2)
    samples, predictions, report, cut = evaluate_summaries(model, tokenizer, pairs[:2], gen, max_document_tokens=64,
                                                           progress=False)
    assert cut == 2 and len(predictions) == 2
    assert report.lang == "ko" and set(report.scores) == {"F1", "SacreBLEU", "METEOR", "ROUGE-L", "ROUGE-1"}
    assert any("kiwi" in s for s in report.signatures) and any("ko-mecab" in s for s in report.signatures)
    assert report.scores == score(predictions, [p.summary for p in pairs[:2]], lang="ko").scores


def test_cli_summarize_eval(tmp_path, tokenizer):
    tiny_for("gpt_neox", tokenizer).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    from groundtune.cli import app

    result = CliRunner().invoke(app, ["summarize-eval", "--model", str(tmp_path / "base"), "--limit", "2",
                                      "--max-new-tokens", "4", "--max-document-tokens", "48",
                                      "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["n"] == 2 and results["lang"] == "ko" and results["articles_cut"] == 2
    assert "ROUGE-1" in results["scores"] and len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 2


def test_koalpaca_run_scores_held_out_generations_in_korean(tmp_path, tokenizer):
    records = load_instructions(asset_path("koalpaca/ko_alpaca_data_first100.json"))
    short = sorted(records, key=lambda r: len(r["instruction"] + r.get("input", "") + r["output"]))
    (tmp_path / "train.json").write_text(json.dumps(short[:8], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "eval.json").write_text(json.dumps(short[8:11], ensure_ascii=False), encoding="utf-8")
    cfg = TrainConfig(method={"method": "llama_adapter", "layers": 2, "length": 4},
                      data=DataConfig(format="alpaca", train=str(tmp_path / "train.json"),
                                      eval=str(tmp_path / "eval.json"), template="koalpaca", max_prompt_tokens=256,
                                      max_answer_tokens=48),
                      generation=GenerationConfig(max_new_tokens=6, batch_size=3), output_dir=str(tmp_path / "run"),
                      max_steps=2, batch_size=4, precision="fp32")
    summary = train_and_evaluate(cfg, model=tiny_for("gpt_neox", tokenizer), tokenizer=tokenizer, progress=False)
    assert summary["train_samples"] == 8 and summary["eval_samples"] == 3
    assert {"F1", "SacreBLEU", "ROUGE-1", "ROUGE-L"} <= set(summary["scores"])
    assert any("lang:ko" in s and "kiwi" in s for s in summary["signatures"])
    predictions = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in predictions] == [r["output"].strip() for r in short[8:11]]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["format"] == "alpaca"
