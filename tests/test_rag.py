"""Fusion weights and language coverage (the Korean default), UPR re-ranking, RAG from the config and the CLI."""

import json

import pytest

from groundtune.data import asset_path
from groundtune.retrieval import Passage, Retriever, RetrievalQuery, build_index, build_query, evaluate_retriever
from groundtune.retrieval.hybrid import reciprocal_rank_fusion, tune_dense_weight, weighted_fusion


# --------------------------------------------------------------------------------------------- fusion


def test_weighted_fusion_ends_are_the_parts_and_half_is_plain_rrf():
    bm25 = [(1, 9.0), (2, 5.0), (3, 1.0)]
    dense = [(3, 0.9), (4, 0.8), (1, 0.1)]
    assert weighted_fusion(bm25, dense, 0.0) == bm25
    assert weighted_fusion(bm25, dense, 1.0) == dense
    assert weighted_fusion(bm25, dense, 0.5) == reciprocal_rank_fusion([bm25, dense])
    assert weighted_fusion(bm25, dense, 0.9)[0][0] == 3  # dense's first wins when it weighs more
    with pytest.raises(ValueError, match="dense_weight"):
        weighted_fusion(bm25, dense, 1.5)


def test_tuned_weight_follows_the_retriever_that_knows():
    # BM25 ranks the relevant passage first, dense ranks it last: the tuned weight gives dense nothing
    bm25 = [[(q, 1.0), (q + 10, 0.5)] for q in range(5)]
    dense = [[(q + 10, 0.9), (q + 20, 0.8), (q, 0.1)] for q in range(5)]
    relevant = [{q} for q in range(5)]
    weight, scores = tune_dense_weight(bm25, dense, relevant)
    assert weight < 0.5 and scores[weight] == pytest.approx(1.0) and scores[1.0] < scores[0.0]
    weight, _ = tune_dense_weight(dense, bm25, relevant)  # roles swapped: all on dense
    assert weight > 0.5
    with pytest.raises(ValueError, match="no query"):
        tune_dense_weight(bm25, dense, [set()] * 5)


# ---------------------------------------------------------------------------------- Korean default


@pytest.fixture(scope="module")
def korean():
    """Korean retrieval data made from the shipped KoAlpaca sample: each answer is a passage, its
    instruction the question grounded in it (100 passages, 100 questions)."""
    records = json.loads(asset_path("koalpaca/ko_alpaca_data_first100.json").read_text(encoding="utf-8"))
    passages, queries = [], []
    for i, r in enumerate(records):
        text = " ".join(x for x in (r["input"], r["output"]) if x)
        passages.append(Passage(f"ko{i}", text, span_ids=("1",)))
        queries.append(RetrievalQuery(f"d{i}_1", build_query(r["instruction"]), f"ko{i}", ("1",)))
    return passages, queries


def test_korean_default_skips_the_english_encoder_and_scores_bm25s_recall(tmp_path, korean):
    passages, queries = korean
    folder = build_index(passages, tmp_path / "ko", language="ko", show_progress=False)  # defaults: dense wanted
    retriever = Retriever.load(folder)
    meta = retriever.meta
    assert meta["language"] == "ko" and meta["corpus_languages"]["ko"] > 0.9
    assert meta["dense"] is False and "en" in meta["dense_skipped"] and meta["encoder_languages"] == ["en"]
    assert retriever.default_method == "bm25"
    results = evaluate_retriever(retriever, queries, ["bm25", "default"], show_progress=False)
    for k in ("recall@1", "recall@5", "mrr"):
        assert results["default"]["passage"][k] >= results["bm25"]["passage"][k]
    assert results["bm25"]["passage"]["recall@5"] > 0.5  # Kiwi BM25 does find Korean answers


def test_korean_forced_dense_gets_weight_zero_unless_dev_questions_say_otherwise(tmp_path, korean):
    passages, queries = korean
    dev, test = queries[::2], queries[1::2]
    forced = Retriever.load(build_index(passages, tmp_path / "forced", language="ko", dense=True, show_progress=False))
    assert forced.dense is not None and forced.meta["encoder_covers_corpus"] is False
    assert forced.dense_weight == 0.0 and forced.default_method == "bm25"
    tuned = Retriever.load(build_index(passages, tmp_path / "tuned", language="ko", dense=True, dev_queries=dev,
                                       show_progress=False))
    fusion = tuned.meta["fusion"]
    assert fusion["chosen_on"] == "50 dev questions" and set(fusion["scores"]) >= {"0", "0.5", "1"}
    assert fusion["scores"][f"{fusion['dense_weight']:g}"] >= fusion["scores"]["0"]  # never below BM25 on dev
    results = evaluate_retriever(tuned, test, ["bm25", "default"], show_progress=False)
    # held-out: the tuned default stays at BM25's level (an English encoder on Korean earns no weight)
    assert results["default"]["passage"]["recall@5"] >= results["bm25"]["passage"]["recall@5"] - 0.04


def test_train_reranker_refuses_the_english_encoder_on_a_korean_index(tmp_path, korean):
    # all-MiniLM-L6-v2 cuts Hangul into pieces that mean nothing: a reranker trained from it would be noise
    from typer.testing import CliRunner

    from groundtune.cli import app

    passages, queries = korean
    folder = build_index(passages, tmp_path / "ko", language="ko", show_progress=False)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": queries[0].qid, "doc_id": queries[0].doc_id, "question": queries[0].query,
                                     "answer_span_ids": ["1"]}, ensure_ascii=False) + "\n")
    result = CliRunner().invoke(app, ["train-reranker", str(folder), str(questions), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "covers ['en'], not this ko index" in result.output and "--base" in result.output
    assert not (tmp_path / "r").exists()


def test_cli_index_dev_questions_choose_the_weight(tmp_path, korean):
    from typer.testing import CliRunner

    from groundtune.cli import app

    _, queries = korean
    docs = tmp_path / "docs.md"
    docs.write_text("# 하나\n\n서울은 한국의 수도이다.\n\n# 둘\n\n부산은 바다가 아름다운 항구 도시이다.\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["index", str(docs), "--out", str(tmp_path / "idx"), "--language", "ko"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["dense"] is False and meta["language"] == "ko"


# -------------------------------------------------------------------------------------------- UPR


def _tiny_lm(folder):
    """A random tiny Llama with a byte-level BPE tokenizer trained on a few sentences, saved to `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["Passage: renew your licence online. Question: how do I renew?"] * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_upr_scores_question_likelihood_and_reorders_the_head(tmp_path):
    import torch

    from groundtune.retrieval.upr import UPRReranker, question_of

    model, tokenizer = _tiny_lm(tmp_path / "lm")
    upr = UPRReranker(model, tokenizer, batch_size=2)
    pairs = [("how do I renew?", "renew your licence online."), ("what?", "a much longer passage " * 5),
             ("how do I renew?", "x")]
    scores = upr.score(pairs)
    # each score is the mean log-probability of the question's tokens, computed here one pair at a time
    for (question, passage), got in zip(pairs, scores):
        head, tail = upr.prompt.split("{passage}")
        ctx = upr._ids(head, 64) + upr._ids(passage, upr.max_passage_tokens) + upr._ids(tail, 64)
        target = upr._ids(" " + question, 64)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + target])).logits[0, :-1], -1)
        want = logp[torch.arange(len(ctx) - 1, len(ctx) - 1 + len(target)), torch.tensor(target)].mean()
        assert got == pytest.approx(float(want), abs=1e-4)
    assert question_of("q?[SEP]user: a||agent: b") == "q?"
    passages = [Passage("d", t) for t in ("renew your licence online.", "x", "a much longer passage")]
    ranked = [[(1, 3.0), (0, 2.0), (2, 1.0)]]
    out = upr.rerank(["how do I renew?[SEP]"], ranked, passages, depth=2)[0]
    assert {i for i, _ in out[:2]} == {0, 1} and out[2] == (2, 1.0)  # only the head is re-ordered
    assert out[0][1] >= out[1][1]


def test_upr_pipeline_in_the_retriever(tmp_path):
    from groundtune.retrieval.upr import UPRReranker

    model, tokenizer = _tiny_lm(tmp_path / "lm")
    passages = [Passage("a", "renew your licence online"), Passage("b", "pay a parking ticket"),
                Passage("c", "renew the registration of a car")]
    retriever = Retriever.load(build_index(passages, tmp_path / "idx", dense=False, show_progress=False))
    retriever.use(UPRReranker(model, tokenizer))
    ranked = retriever.rank_pipelines(["renew licence[SEP]"], 3, ["bm25", "bm25+upr", "default+upr"], rerank_depth=3)
    assert {i for i, _ in ranked["bm25+upr"][0]} == {i for i, _ in ranked["bm25"][0]}
    assert ranked["default+upr"] == ranked["bm25+upr"]
    with pytest.raises(ValueError, match="upr"):
        retriever.rank_pipelines(["x"], 3, ["bm25+foo"])


# ------------------------------------------------------------------------------------ RAG from config


def _rag_config(tmp_path, index, model_dir, **retrieval):
    import yaml

    cfg = {
        "model": str(model_dir),
        "method": {"method": "llama_adapter", "layers": 1, "length": 2},
        "data": {"format": "doc2dial", "train": str(asset_path("doc2dial/doc2dial_dial_train.json")),
                 "eval": str(asset_path("doc2dial/doc2dial_dial_validation.json")),
                 "documents": str(asset_path("doc2dial/doc2dial_doc.json")), "max_eval_samples": 4,
                 "max_train_samples": 4, "retrieval": {"index": str(index), **retrieval}},
        "generation": {"max_new_tokens": 4, "batch_size": 4},
        "output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2, "precision": "fp32", "save_every": 10,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_retrieval_block_is_checked():
    from groundtune.config import DataConfig
    from groundtune.errors import ConfigError

    data = DataConfig(retrieval={"index": "idx"})
    assert data.retrieval == {"index": "idx", "k": 3, "pipeline": "default", "reranker": None, "rerank_depth": 20}
    for bad, match in (({"k": 3}, "index"), ({"index": "i", "k": 0}, "k"), ({"index": "i", "top": 2}, "unknown"),
                       ({"index": "i", "pipeline": "hybrid+rerank"}, "reranker"), ({"index": "i", "pipeline": "x"}, "pipeline")):
        with pytest.raises(ConfigError, match=match):
            DataConfig(retrieval=bad)
    with pytest.raises(ConfigError, match="doc2dial"):
        DataConfig(format="alpaca", retrieval={"index": "i"})


def test_config_rag_samples_and_eval_index_cli(tmp_path):
    from typer.testing import CliRunner

    from groundtune.cli import app
    from groundtune.config import load_config
    from groundtune.tasks.grounded import load_samples
    from groundtune.retrieval import document_passages
    from groundtune.data import load_documents

    passages = document_passages(load_documents(asset_path("doc2dial/doc2dial_doc.json")), "structure")
    index = build_index(passages, tmp_path / "idx", dense=False, show_progress=False)
    _tiny_lm(tmp_path / "lm")
    config = _rag_config(tmp_path, index, tmp_path / "lm", k=2)
    cfg = load_config(config)
    train, evaluation = load_samples(cfg.data, None, verbose=False)
    assert train and evaluation and all("<h>" not in s.prompt for s in train + evaluation)
    assert all(len(s.meta["passage_texts"]) == 2 for s in evaluation)
    out = tmp_path / "report.json"
    # --index overrides the config's index; k stays the config's
    other = build_index(passages, tmp_path / "idx2", dense=False, show_progress=False)
    result = CliRunner().invoke(app, ["eval", "--config", str(config), "--index", str(other), "--out", str(out),
                                      "--metrics", "F1"])
    assert result.exit_code == 0, result.output
    assert "knowledge-F1" in result.output and "passage recall@2" in result.output
    rag = json.loads(out.read_text())["rag"]
    assert rag["n"] == 4 and rag["retrieval"]["k"] == 2
    assert sum(part["n"] for part in rag["by_gold_retrieved"].values()) == rag["retrieval"]["turns_with_gold"]
    assert 0 <= rag["grounding"]["knowledge_f1"] <= 100
    result = CliRunner().invoke(app, ["train", str(config), "--set", f"output_dir={tmp_path / 'train'}"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "train" / "results.json").read_text())["train_samples"] == 4
