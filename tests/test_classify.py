"""In-context classification: prompts, label tokens, batched scores against one-at-a-time scores, shots, metrics."""

import json
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

import groundtune
from groundtune.tasks.classify import (ClassifyTask, LabelledText, _split_ids, classify, load_labelled, score_labels,
                                 select_shots)
from groundtune.data import DataError, asset_path
from tiny_korean import polyglot_tokenizer, tiny_for

NSMC_TEST = asset_path("nsmc/ratings_test_derived_1k.txt")
NSMC_TRAIN = asset_path("nsmc/ratings_train.txt")


@pytest.fixture(scope="module")
def tokenizer():
    return polyglot_tokenizer()


@pytest.fixture(scope="module")
def nsmc():
    rows, _ = load_labelled(NSMC_TEST)
    pool, _ = load_labelled(NSMC_TRAIN)
    return rows, pool


def reference_scores(model, tokenizer, prompts, continuations):
    """log P(prompt + continuation) - log P(shared prefix), one unpadded sequence at a time."""
    out = torch.zeros(len(prompts), len(continuations), dtype=torch.float64)
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            context, conts = _split_ids(tokenizer, prompt, continuations)
            for j, cont in enumerate(conts):
                ids = torch.tensor([context + cont])
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
                out[i, j] = sum(logp[len(context) - 1 + k, tok].item() for k, tok in enumerate(cont))
    return out


def test_seed_prompt_layout():
    task = ClassifyTask()
    shot = LabelledText("a", "최고의 영화", 1)
    assert task.prompt("지루했다", [shot]) == ("문장의 긍정, 부정을 분류하세요. 최고의 영화 정답: 긍정\n"
                                             "문장의 긍정, 부정을 분류하세요. 지루했다 정답:")
    assert task.prompt("지루했다") == "문장의 긍정, 부정을 분류하세요. 지루했다 정답:"
    assert task.continuations() == [" 부정", " 긍정"]  # same spacing as "정답: 긍정" in the examples


def test_multi_token_labels_are_the_label_tokens_after_the_prompt(tokenizer):
    prompt = ClassifyTask().prompt("재밌어요")
    context, conts = _split_ids(tokenizer, prompt, [" 부정", " 긍정"])
    assert context == tokenizer(prompt)["input_ids"]
    assert [tokenizer.decode(c) for c in conts] == [" 부정", " 긍정"]
    assert len(conts[1]) > 1 and len(conts[0]) != len(conts[1])  # several tokens, and unequal: the sum matters


def test_a_merge_across_the_boundary_moves_the_shared_prefix_back(tokenizer):
    # "정" + "을" is one token of this BPE ("정을"), so the prompt's last token is not a prefix of "…정을".
    prompt, continuations = "분류 부정", ["을", "이"]
    assert tokenizer("정을", add_special_tokens=False)["input_ids"] != \
        tokenizer("정", add_special_tokens=False)["input_ids"] + tokenizer("을", add_special_tokens=False)["input_ids"]
    context, conts = _split_ids(tokenizer, prompt, continuations)
    full = tokenizer(prompt + "을")["input_ids"]
    assert context == full[:len(context)] and len(context) < len(tokenizer(prompt)["input_ids"])
    assert context + conts[0] == full and context + conts[1] == tokenizer(prompt + "이")["input_ids"]


@pytest.mark.parametrize("family,method", [("gpt_neox", None), ("gpt_neox", "llama_adapter"), ("llama", "lora"),
                                           ("llama", "prompt_tuning"), ("gpt2", None)])
def test_batched_scores_equal_one_sequence_at_a_time(tokenizer, nsmc, family, method):
    model = tiny_for(family, tokenizer)
    if method == "llama_adapter":
        model = groundtune.attach(model, groundtune.LlamaAdapterConfig(layers=2, length=3))
    elif method == "lora":
        model = groundtune.attach(model, groundtune.LoraConfig(r=4))
    elif method == "prompt_tuning":
        model = groundtune.attach(model, groundtune.PromptTuningConfig(length=4, init="random"))
    with torch.no_grad():  # zero-initialised gates / LoRA B would make the method a no-op
        for name, p in model.named_parameters():
            if p.requires_grad and not p.any():
                p.normal_(0, 0.5)
    rows, pool = nsmc
    task = ClassifyTask()
    queries = rows[:7]
    prompts = [task.prompt(q.text, s) for q, s in zip(queries, select_shots(queries, pool, 1, 2, seed=3))]
    batched, truncated = score_labels(model, tokenizer, prompts, task.continuations(), batch_size=3, progress=False)
    assert truncated == 0
    torch.testing.assert_close(batched, reference_scores(model, tokenizer, prompts, task.continuations()),
                               atol=2e-4, rtol=0)


def test_long_prompts_are_cut_on_the_left(tokenizer):
    model = tiny_for("gpt_neox", tokenizer)
    task = ClassifyTask()
    prompts = [task.prompt("아주 " * 80 + "재밌어요"), task.prompt("별로")]
    scores, truncated = score_labels(model, tokenizer, prompts, task.continuations(), max_prompt_tokens=40,
                                     progress=False)
    assert truncated == 1 and torch.isfinite(scores).all()
    short, _ = score_labels(model, tokenizer, prompts[1:], task.continuations(), max_prompt_tokens=40, progress=False)
    torch.testing.assert_close(scores[1:], short)


def test_shots_are_balanced_seeded_and_never_the_query(nsmc):
    rows, pool = nsmc
    queries = rows[:40]
    pool = list(pool) + queries[:10]  # the pool holds some queries: they must not be their own example
    picked = select_shots(queries, pool, 4, 2, seed=1)
    for query, shots in zip(queries, picked):
        assert len(shots) == 4 and Counter(s.label for s in shots) == {0: 2, 1: 2}
        assert query.text not in {s.text for s in shots}
    assert picked == select_shots(queries, pool, 4, 2, seed=1)
    assert picked != select_shots(queries, pool, 4, 2, seed=2)
    assert select_shots(queries[:5], pool, 4, 2, seed=1) == picked[:5]  # per-query seeding: subsets agree
    one = select_shots(queries, pool, 1, 2, seed=1)
    assert {len(s) for s in one} == {1} and {s[0].label for s in one} == {0, 1}
    with pytest.raises(ValueError, match="pool has"):
        select_shots(queries, pool[:3], 4, 2)


def test_nsmc_fixture_and_other_layouts(tmp_path):
    rows, report = load_labelled(NSMC_TEST)
    assert report.kept == 1000 and report.total_dropped == 0
    assert Counter(r.label for r in rows) == {0: 500, 1: 500}

    tsv = tmp_path / "reviews.txt"
    tsv.write_text('id\tdocument\tlabel\n1\t"따옴표" 있는 리뷰\t1\n2\t\t0\n3\t최악\t0\n', encoding="utf-8")
    rows, report = load_labelled(tsv)
    assert [(r.id, r.text, r.label) for r in rows] == [("1", '"따옴표" 있는 리뷰', 1), ("3", "최악", 0)]
    assert report.dropped == {"empty_text": 1}

    task = ClassifyTask(labels={"neg": "부정", "pos": "긍정"}, text_field="text", label_field="y")
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"text": "좋다", "y": "pos"}\n{"text": "싫다", "y": "부정"}\n', encoding="utf-8")
    assert [r.label for r in load_labelled(jsonl, task)[0]] == [1, 0]  # file values or the label words

    jsonl.write_text('{"text": "좋다", "y": "positive"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"reviews.jsonl:1: label 'positive'.*labels"):
        load_labelled(jsonl, task)
    with pytest.raises(DataError, match="header"):
        load_labelled(tsv, task)


def test_task_yaml(tmp_path):
    path = tmp_path / "topic.yaml"
    path.write_text("template: '주제를 고르세요. {text} 답: {label}'\nlabels: {0: 경제, 1: 과학, 2: 스포츠}\n",
                    encoding="utf-8")
    task = ClassifyTask.from_yaml(path)
    assert task.name == "topic" and task.label_words == ["경제", "과학", "스포츠"]
    assert task.continuations() == [" 경제", " 과학", " 스포츠"]
    path.write_text("template: '{text} 답: {label}'\nlabels: [싫다, 좋다]\n", encoding="utf-8")
    assert ClassifyTask.from_yaml(path).labels == {"0": "싫다", "1": "좋다"}
    path.write_text("template: '{text} 답: {label} 끝'\n", encoding="utf-8")
    with pytest.raises(ValueError, match="end with {label}"):
        ClassifyTask.from_yaml(path)
    path.write_text("template: '{text} {label}'\nlabel: x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown key"):
        ClassifyTask.from_yaml(path)


def test_accuracy_and_macro_f1_of_a_model_that_always_says_positive(tokenizer, nsmc):
    model = tiny_for("gpt_neox", tokenizer)
    positive = _split_ids(tokenizer, ClassifyTask().prompt("x"), [" 부정", " 긍정"])[1][1]
    bias = torch.zeros(len(tokenizer))
    bias[positive] = 50.0  # every token of 긍정 becomes near-certain
    model.get_output_embeddings().register_forward_hook(lambda mod, args, out: out + bias)
    rows, pool = nsmc
    queries = rows[:12]
    result = classify(model, tokenizer, queries, shots=1, pool=pool, batch_size=5, progress=False)
    gold = Counter(q.label for q in queries)
    assert result.predicted_counts == {"부정": 0, "긍정": 12}
    assert result.accuracy == pytest.approx(gold[1] / 12)
    f1_positive = 2 * gold[1] / (gold[1] + 12)  # precision gold[1]/12, recall 1
    assert result.macro_f1 == pytest.approx(f1_positive / 2)  # the negative class scores 0
    assert result.confusion == [[0, gold[0]], [0, gold[1]]]
    assert len(result.predictions) == 12 and all(len(p["shots"]) == 1 for p in result.predictions)


def test_cli_with_an_adapter_folder(tmp_path, tokenizer):
    model = tiny_for("gpt_neox", tokenizer)
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    adapted = groundtune.attach(model, groundtune.LlamaAdapterConfig(layers=2, length=3))
    groundtune.save_adapter(adapted, tmp_path / "adapter")
    from groundtune.cli import app

    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["classify", "--model", str(tmp_path / "base"), "--adapter",
                                      str(tmp_path / "adapter"), "--limit", "6", "--shots", "2", "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == 6 and report["shots"] == 2 and 0 <= report["accuracy"] <= 1
    assert len(report["predictions"]) == 6 and "accuracy" in result.output


def biased_towards_positive(tokenizer, bias: float = 8.0):
    """A tiny model whose LM head adds `bias` to every token of 긍정: it says 긍정 whatever the review."""
    model = tiny_for("gpt_neox", tokenizer)
    positive = _split_ids(tokenizer, ClassifyTask().prompt("x"), [" 부정", " 긍정"])[1][1]
    shift = torch.zeros(len(tokenizer))
    shift[positive] = bias
    model.get_output_embeddings().register_forward_hook(lambda mod, args, out: out + shift)
    return model


def test_contextual_calibration_flips_a_label_bias(tokenizer, nsmc):
    """A model biased towards 긍정 says 긍정 for every review; calibrated against content-free inputs written with
    the same examples, the bias is divided out: those inputs become uniform and the reviews are no longer all 긍정."""
    from groundtune.tasks.classify import CONTENT_FREE, calibrate_scores

    model = biased_towards_positive(tokenizer)
    rows, pool = nsmc
    queries = rows[:16]
    plain = classify(model, tokenizer, queries, shots=1, pool=pool, batch_size=8, progress=False)
    assert plain.predicted_counts["부정"] == 0 and plain.calibration is None and "calibrated" not in plain.predictions[0]
    assert "calibration:none" in plain.signature and "shots:1" in plain.signature
    calibrated = classify(model, tokenizer, queries, shots=1, pool=pool, batch_size=8, progress=False,
                          calibration="contextual", content_free=CONTENT_FREE)
    assert calibrated.predicted_counts["부정"] > 0
    assert "calibration:contextual('N/A','','[MASK]')" in calibrated.signature
    # the raw scores are kept; the calibrated ones are the raw label probabilities over the content-free mean
    for p_plain, p_cal in zip(plain.predictions, calibrated.predictions):
        assert p_cal["scores"] == pytest.approx(p_plain["scores"])
    # by hand, for one query: its content-free prompts, scored alone
    task, shot = ClassifyTask(), calibrated.predictions[0]["shots"]
    examples = [r for r in pool if r.id in shot]
    cf = score_labels(model, tokenizer, [task.prompt(c, examples) for c in CONTENT_FREE], task.continuations(),
                      progress=False)[0]
    p_cf = torch.softmax(cf, -1).mean(0)
    raw = torch.tensor([calibrated.predictions[0]["scores"][w] for w in task.label_words], dtype=torch.float64)
    expected = torch.log_softmax(torch.log_softmax(raw, -1) - torch.log(p_cf), -1)
    got = [calibrated.predictions[0]["calibrated"][w] for w in task.label_words]
    assert got == pytest.approx(expected.tolist(), abs=1e-6)
    # a content-free input calibrated against itself is uniform
    uniform = calibrate_scores(cf[:1], cf[None, :1])
    assert torch.exp(uniform)[0].tolist() == pytest.approx([0.5, 0.5])


def test_batch_calibration_balances_the_mean_prediction(tokenizer, nsmc):
    """Batch calibration divides out the mean label probability over the rows: the biased model's calibrated
    probabilities average to uniform (geometrically, before renormalising: checked against the formula)."""
    from groundtune.tasks.classify import batch_calibrate

    model = biased_towards_positive(tokenizer)
    rows, pool = nsmc
    result = classify(model, tokenizer, rows[:16], shots=1, pool=pool, batch_size=8, progress=False,
                      calibration="batch")
    assert result.predicted_counts["부정"] > 0 and "calibration:batch|" in result.signature
    words = ClassifyTask().label_words
    raw = torch.tensor([[p["scores"][w] for w in words] for p in result.predictions], dtype=torch.float64)
    logp = torch.log_softmax(raw, -1)
    expected = torch.log_softmax(logp - torch.log(torch.exp(logp).mean(0)), -1)
    got = torch.tensor([[p["calibrated"][w] for w in words] for p in result.predictions], dtype=torch.float64)
    assert torch.allclose(got, expected) and torch.allclose(batch_calibrate(raw), expected)


@pytest.mark.parametrize("args, named", [(["--content-free", "N/A"], "--calibrate contextual"),
                                         (["--calibrate", "batch", "--content-free", "N/A"], "--calibrate contextual"),
                                         (["--calibrate", "nope"], "contextual, batch")])
def test_cli_refuses_calibration_settings_that_do_nothing(args, named):
    from groundtune.cli import app

    result = CliRunner().invoke(app, ["classify", *args, "--limit", "2"])
    assert result.exit_code == 2 and named in result.output, result.output


def gemma_like_tokenizer(prefix_space: bool = False):
    """A SentencePiece-style BPE (spaces become "▁", no pre-tokenizer: Gemma's layout) whose Korean label words split
    differently with and without a leading space, and unequally between labels, as Gemma 3's do:
    " 부정" -> ["▁부정"] but "부정" -> ["부", "정"]; " 긍정" -> ["▁", "긍정"] but "긍정" -> ["긍정"].
    prefix_space: also add a "▁" in front of every text (the legacy Llama/SentencePiece dummy prefix), so that a
    label encoded on its own gets a token it never has after the prompt."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(NSMC_TEMPLATE_CHARS + "▁부정긍재밌어요별로최고아주지루했다"))
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    merges = [("▁", "부"), ("▁부", "정"), ("긍", "정")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, ignore_merges=False))
    steps = [normalizers.Prepend("▁")] if prefix_space else []
    tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " ")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")


NSMC_TEMPLATE_CHARS = "문장의 긍정, 부정을 분류하세요. 정답:"


def words_of(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(ids)


@pytest.mark.parametrize("template", ["문장의 긍정, 부정을 분류하세요. {text} 정답: {label}",
                                      "문장의 긍정, 부정을 분류하세요. {text} 정답:{label}"])
def test_label_words_that_split_differently_after_a_space(template):
    """Korean label words under a SentencePiece-style vocabulary: each label is scored on the tokens it has after
    the prompt (not on its tokens alone), whatever the spacing, and a label-word training sample teaches exactly
    those tokens."""
    from groundtune.data.collate import encode
    from groundtune.data.sample import Sample
    from groundtune.tasks.classify import label_samples

    tokenizer = gemma_like_tokenizer()
    assert words_of(tokenizer, tokenizer(" 부정")["input_ids"]) == ["▁부정"]
    assert words_of(tokenizer, tokenizer("부정")["input_ids"]) == ["부", "정"]
    assert words_of(tokenizer, tokenizer(" 긍정")["input_ids"]) == ["▁", "긍정"]
    task = ClassifyTask(template=template)
    prompt = task.prompt("재밌어요")
    _, conts = _split_ids(tokenizer, prompt, task.continuations())
    spaced = template.endswith(" {label}")
    assert [words_of(tokenizer, c) for c in conts] == ([["▁부정"], ["▁", "긍정"]] if spaced else [["부", "정"], ["긍정"]])
    model = tiny_for("llama", tokenizer)
    queries = [LabelledText("a", "재밌어요", 1), LabelledText("b", "지루했다", 0), LabelledText("c", "별로", 0)]
    prompts = [task.prompt(q.text) for q in queries]
    scores, _ = score_labels(model, tokenizer, prompts, task.continuations(), batch_size=2, progress=False)
    torch.testing.assert_close(scores, reference_scores(model, tokenizer, prompts, task.continuations()),
                               atol=2e-4, rtol=0)
    # training on the label words teaches the scored tokens (+ EOS), not the label's tokens on its own
    for sample, query in zip(label_samples(tokenizer, task, queries), queries):
        encoded = encode(tokenizer, sample)
        taught = [t for t, lab in zip(encoded["input_ids"], encoded["labels"]) if lab != -100]
        assert taught == _split_ids(tokenizer, sample.prompt, task.continuations())[1][query.label] + [1]
    assert isinstance(sample, Sample)


def test_label_words_a_dummy_prefix_would_change_are_refused():
    """A tokenizer that adds "▁" in front of every text (legacy SentencePiece) encodes " 긍정" on its own as
    ["▁", "▁", "긍정"], which the model never sees after "정답:": training would teach tokens classify() never scores.
    That is refused before any work, naming the fix."""
    from groundtune.errors import ConfigError
    from groundtune.tasks.classify import label_samples

    tokenizer = gemma_like_tokenizer(prefix_space=True)
    with pytest.raises(ConfigError, match=r"label .(부정|긍정). \(row a\).*never scores.*prefix"):
        label_samples(tokenizer, ClassifyTask(), [LabelledText("a", "재밌어요", 1)])


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_empty_and_too_long_reviews_are_counted_drops(tokenizer, family):
    """An empty review and one past the model's positions (1024 here) are left out and counted by reason; the rest
    are classified as they would be alone. Without the check the long one would run past the positions (a crash on
    GPT-2's learned position table) or be scored on a fragment without its instruction."""
    model = tiny_for(family, tokenizer)
    queries = [LabelledText("ok1", "정말 재밌어요 최고의 영화", 1), LabelledText("empty", "  ", 0),
               LabelledText("long", "아주 " * 1500 + "재밌어요", 1), LabelledText("ok2", "별로", 0)]
    assert len(tokenizer(ClassifyTask().prompt(queries[2].text))["input_ids"]) > 1024
    result = classify(model, tokenizer, queries, shots=0, batch_size=2, progress=False)
    assert result.n == 2 and result.dropped == {"empty_text": 1, "too_long": 1}
    assert [p["id"] for p in result.predictions] == ["ok1", "ok2"]
    assert "dropped (not in n): empty_text 1, too_long 1" in result.table()
    alone = classify(model, tokenizer, [queries[0], queries[3]], shots=0, progress=False)
    assert [p["scores"] for p in alone.predictions] == [p["scores"] for p in result.predictions]
    # a lower max_prompt_tokens drops by the same rule: room for the shortest review's prompt and labels only
    need = {q.id: len(c) + max(map(len, cs)) for q in (queries[0], queries[3])
            for c, cs in [_split_ids(tokenizer, ClassifyTask().prompt(q.text), ClassifyTask().continuations())]}
    assert need["ok1"] > need["ok2"]
    short = classify(model, tokenizer, queries, shots=0, max_prompt_tokens=need["ok2"], progress=False)
    assert short.dropped == {"empty_text": 1, "too_long": 2} and [p["id"] for p in short.predictions] == ["ok2"]
    with pytest.raises(ValueError, match="no rows to classify"):
        classify(model, tokenizer, queries[1:3], shots=0, progress=False)
