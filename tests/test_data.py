"""Data: doc2dial / MultiDoc2Dial readers on the shipped fixtures, grounded samples, instruction data, collation."""

import json
import re

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from groundtune.data import DataError, asset_path
from groundtune.data.collate import IGNORE_INDEX, Collator, encode
from groundtune.data.doc2dial import Dialogue, Reference, Turn, load_dialogues, load_documents
from groundtune.data.grounded import (DropReport, GroundedConfig, Sample, build_prompt, grounded_samples, highlight,
                                      load_jsonl_samples, samples_from_passages, split_by_dialogue, turn_contexts)
from groundtune.data.instruct import ALPACA, KOALPACA, InstructTemplate, instruction_samples, split_response
from groundtune.data.sample import encode_prompt

DMV = "Top 5 DMV Mistakes and How to Avoid Them#3_0"
SSA = "Benefits Planner: Survivors | Planning For Your Survivors | Social Security Administration#1_0"


@pytest.fixture(scope="module")
def docs():
    return load_documents(asset_path("doc2dial/doc2dial_doc.json"))


@pytest.fixture(scope="module")
def train_dialogues():
    return load_dialogues(asset_path("doc2dial/doc2dial_dial_train.json"))


def word_tokenizer(words, add_bos=True, pad=False):
    """A real fast tokenizer over a fixed word list (Llama-like with BOS, or GPT-NeoX-like without BOS and pad)."""
    special = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(special + list(words)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>" if add_bos else None, eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>" if pad else None)


# ------------------------------------------------------------------------------------------- documents


def test_doc2dial_documents_spans_in_order_and_offsets(docs):
    assert set(docs) == {DMV, SSA}
    dmv, ssa = docs[DMV], docs[SSA]
    assert (len(dmv.spans), len(ssa.spans)) == (56, 99)
    assert (dmv.domain, ssa.domain, dmv.title) == ("dmv", "ssa", "Top 5 DMV Mistakes and How to Avoid Them#3")
    for doc in docs.values():
        assert [s.start_sp for s in doc.spans] == sorted(s.start_sp for s in doc.spans)
        assert all(doc.text[s.start_sp:s.end_sp] == s.text_sp for s in doc.spans)
    first = ssa.span("1")
    assert (first.tag, first.id_sec, first.title) == ("h2", "t_0", "Benefits Planner: Survivors | Planning For Your Survivors")
    assert ssa.span("no such span") is None


def test_rc_layout_recovers_the_official_offsets(docs):
    rc = load_documents(asset_path("doc2dial/formats/doc2dial_rc_documents.json"))
    assert set(rc) == set(docs)
    for doc_id, doc in rc.items():
        assert doc.text == docs[doc_id].text
        assert [(s.id_sp, s.start_sp, s.end_sp) for s in doc.spans] == \
               [(s.id_sp, s.start_sp, s.end_sp) for s in docs[doc_id].spans]


def test_spans_as_list_in_any_order(tmp_path, docs):
    raw = json.loads(asset_path("doc2dial/doc2dial_doc.json").read_text())
    for domain in raw["doc_data"].values():
        for doc in domain.values():
            doc["spans"] = list(reversed(list(doc["spans"].values())))
    (tmp_path / "docs.json").write_text(json.dumps(raw))
    again = load_documents(tmp_path / "docs.json")
    assert {k: v.spans for k, v in again.items()} == {k: v.spans for k, v in docs.items()}


def test_folders_and_several_paths(docs):
    # The folder also holds dialogue files (skipped) and the same documents in the rc layout (first one kept).
    found = load_documents([asset_path("doc2dial"), asset_path("multidoc2dial")])
    assert set(found) == set(docs)
    with pytest.raises(DataError, match="not a document file"):
        load_documents(asset_path("doc2dial/doc2dial_dial_train.json"))
    with pytest.raises(DataError, match="not a dialogue file"):
        load_dialogues(asset_path("doc2dial/doc2dial_doc.json"))


def test_bad_offsets_and_bad_json_are_named(tmp_path):
    raw = json.loads(asset_path("doc2dial/doc2dial_doc.json").read_text())
    raw["doc_data"]["dmv"][DMV]["spans"]["3"]["end_sp"] += 5
    (tmp_path / "docs.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"docs\.json: document .*span '3'"):
        load_documents(tmp_path / "docs.json")
    (tmp_path / "broken.json").write_text('{"doc_data": {"dmv": ')
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON \(line 1"):
        load_documents(tmp_path / "broken.json")


# ------------------------------------------------------------------------------------------- dialogues


def test_v101_references_take_the_dialogue_document(train_dialogues):
    assert len(train_dialogues) == 20
    d = train_dialogues[0]
    assert d.doc_id in (DMV, SSA) and d.domain in ("dmv", "ssa")
    refs = [r for t in d.turns for r in t.references]
    assert refs and all(r.doc_id == d.doc_id for r in refs)
    assert d.turns[1].role == "agent" and d.turns[1].da == "respond_solution"


def test_v09_reference_dict_keeps_labels_and_grounds_like_v101(docs, train_dialogues):
    old = load_dialogues(asset_path("doc2dial/formats/doc2dial_v0.9_dial_dev.json"))
    assert len(old) == 1 and old[0].doc_id == SSA
    assert old[0].turns[1].references == [Reference(SSA, "2", "precondition"), Reference(SSA, "1", "reference")]
    # The same dialogue in v1.0.1: agent turns with the same reply have the same grounding, because the v0.9
    # "reference" label (spans carried over from earlier turns) is not grounding.
    new = [d for d in load_dialogues(asset_path("doc2dial")) if d.dial_id == old[0].dial_id]
    old_s, _ = grounded_samples(old, docs)
    new_s, _ = grounded_samples(new, docs)
    by_answer = {s.answer: s.meta["span_ids"] for s in new_s}
    shared = [s for s in old_s if s.answer in by_answer]
    assert len(shared) >= 3 and all(s.meta["span_ids"] == by_answer[s.answer] for s in shared)


def test_multidoc2dial_and_shared_task_layouts():
    mdd = load_dialogues(asset_path("multidoc2dial/multidoc2dial_dial_small_train.json"))
    assert len(mdd) == 6 and sum(len(d.turns) for d in mdd) == 73
    ref = mdd[0].turns[1].references[0]
    assert ref == Reference(DMV, "6", "solution")
    assert {d.domain for d in mdd} == {"dmv", "ssa"}
    assert all(d.doc_id is None for d in mdd)  # every one of these dialogues visits several documents

    pub = load_dialogues(asset_path("multidoc2dial/mdd_dev_pub_sample.json"))
    assert [d.doc_id for d in pub][0] == "Pay driver civil penalty#1_0"
    assert all(t.references == [] for d in pub for t in d.turns)
    # The official id of the reply to predict comes back from the context.
    raw = json.loads(asset_path("multidoc2dial/mdd_dev_pub_sample.json").read_text())
    open_contexts = [c for c in turn_contexts(pub, open_end=True) if not c.answer]
    assert [c.id for c in open_contexts] == [r["id"] for r in raw]

    testdev = load_dialogues(asset_path("doc2dial/formats/doc2dial_dial_testdev_sample.json"))
    assert len(testdev) == 1 and testdev[0].doc_id == DMV and testdev[0].turns[0].da == ""


# ------------------------------------------------------------------------------------- grounded samples


def _highlights(prompt):
    return re.findall(r"<h> (.*?) </h>", prompt.split(" <I> ")[0], flags=re.S)


def test_markers_wrap_exactly_the_referenced_spans(docs, train_dialogues):
    samples, report = grounded_samples(train_dialogues, docs)
    assert report.kept == len(samples) == 112
    for s in samples:
        doc = docs[s.doc_id]
        spans = sorted((doc.span(i) for i in s.meta["span_ids"]), key=lambda sp: sp.start_sp)
        # Expected highlights: runs of consecutive referenced spans, each one highlight.
        groups = []
        for sp in spans:
            if groups and groups[-1][-1].end_sp == sp.start_sp:
                groups[-1].append(sp)
            else:
                groups.append([sp])
        expected = ["".join(x.text_sp for x in g).strip() for g in groups]
        assert _highlights(s.prompt) == expected, s.id
        document_part = s.prompt.split(" <I> ")[0]
        assert re.sub(r"\s+", "", document_part.replace("<h>", "").replace("</h>", "")) == re.sub(r"\s+", "", doc.text)


def test_adjacent_spans_merge_and_distant_spans_do_not(docs):
    dmv = docs[DMV]
    assert _highlights(highlight(dmv, ["24", "25", "26"])) == [
        (dmv.span("24").text_sp + dmv.span("25").text_sp + dmv.span("26").text_sp).strip()]
    assert _highlights(highlight(dmv, ["26", "4"])) == [dmv.span("4").text_sp.strip(), dmv.span("26").text_sp.strip()]
    with pytest.raises(KeyError):
        highlight(dmv, ["4", "999"])


def test_prompt_layout_history_and_question(docs):
    turns = [Turn(1, "user", "Hello there"), Turn(2, "agent", "Hi, how can I help?"),
             Turn(3, "user", "I moved."), Turn(4, "user", "What now?"),
             Turn(5, "agent", "Report your new address.", references=[Reference(DMV, "6", "solution")])]
    dialogue = Dialogue("d1", "dmv", DMV, turns)
    (sample,), _ = grounded_samples([dialogue], docs, GroundedConfig(history_turns=1))
    assert sample.prompt.endswith(" <I> agent: Hi, how can I help? </I> <q> I moved. What now? </q>")
    assert sample.answer == "Report your new address." and sample.id == "d1_4" and sample.doc_id == DMV
    (sample,), _ = grounded_samples([dialogue], docs, GroundedConfig(history_turns=5))
    assert "<I> user: Hello there agent: Hi, how can I help? </I>" in sample.prompt
    (sample,), _ = grounded_samples([dialogue], docs, GroundedConfig(history_turns=0, markers=False))
    assert "<h>" not in sample.prompt and "<I> </I> <q> I moved. What now? </q>" in sample.prompt


def test_drops_are_counted_by_reason_never_raised(docs):
    ref = lambda doc, sp: [Reference(doc, sp, "solution")]  # noqa: E731
    long_answer = " ".join(["word"] * 50)
    turns = [
        Turn(1, "agent", "Agent speaks first.", references=ref(DMV, "6")),  # no_question
        Turn(2, "user", "q"), Turn(3, "agent", "No grounding."),  # no_reference
        Turn(4, "user", "q"), Turn(5, "agent", "Two docs.", references=ref(DMV, "6") + ref(SSA, "3")),  # multi_document
        Turn(6, "user", "q"), Turn(7, "agent", "Gone.", references=ref("Unknown doc#1_0", "1")),  # missing_document
        Turn(8, "user", "q"), Turn(9, "agent", "Bad span.", references=ref(DMV, "6") + ref(DMV, "9999")),  # missing_span
        Turn(10, "user", "q"), Turn(11, "agent", long_answer, references=ref(DMV, "6")),  # answer_too_long
        Turn(12, "user", "q"), Turn(13, "agent", "Fine.", references=ref(DMV, "6")),  # kept
    ]
    config = GroundedConfig(max_answer_tokens=20)
    samples, report = grounded_samples([Dialogue("d", "dmv", None, turns)], docs, config, source="synthetic")
    assert [s.answer for s in samples] == ["Fine."]
    assert report.kept == 1 and dict(report.dropped) == {
        "no_question": 1, "no_reference": 1, "multi_document": 1, "missing_document": 1, "missing_span": 1,
        "answer_too_long": 1}
    text = str(report)
    assert text.startswith("synthetic: kept 1 of 7, dropped 6") and "missing_span" in text and "d#9" in text

    # The document limit (whitespace words without a tokenizer): the DMV document has ~790 words.
    samples, report = grounded_samples([Dialogue("d", "dmv", None, turns)], docs,
                                       GroundedConfig(max_document_tokens=200))
    assert samples == [] and report.dropped["document_too_long"] == 2


def test_window_around_span_keeps_the_highlight_within_the_limit(docs, train_dialogues):
    limit = 120
    windowed, report = grounded_samples(train_dialogues, docs,
                                        GroundedConfig(max_document_tokens=limit, window_around_span=True))
    dropped, _ = grounded_samples(train_dialogues, docs, GroundedConfig(max_document_tokens=limit))
    full, _ = grounded_samples(train_dialogues, docs)
    assert dropped == [] and len(windowed) > 90
    expected = {s.id: _highlights(s.prompt) for s in full}
    for s in windowed:
        document_part = s.prompt.split(" <I> ")[0]
        assert len(document_part.split()) <= limit
        assert _highlights(s.prompt) == expected[s.id]
        a, b = s.meta["window"]
        assert re.sub(r"\s+|</?h>", "", document_part) == re.sub(r"\s+", "", docs[s.doc_id].text[a:b])
    assert report.kept + report.dropped["document_too_long"] + report.dropped["no_question"] == 117


def test_limits_use_the_given_tokenizer(docs, train_dialogues):
    tok = word_tokenizer([])  # every word is one <unk> token, and markers are words too
    by_tokens, _ = grounded_samples(train_dialogues, docs, GroundedConfig(max_answer_tokens=10), tokenizer=tok)
    by_words, _ = grounded_samples(train_dialogues, docs, GroundedConfig(max_answer_tokens=10))
    assert [s.id for s in by_tokens] == [s.id for s in by_words]
    assert all(len(s.answer.split()) <= 10 for s in by_tokens)


def test_rag_prompt_uses_passages_without_markers(train_dialogues):
    contexts = [c for c in turn_contexts(train_dialogues[:2]) if c.question][:3]
    passages = [["first passage", "second passage"]] * len(contexts)
    samples = samples_from_passages(contexts, passages, history_turns=2)
    for c, s in zip(contexts, samples):
        assert s.prompt == build_prompt("first passage\nsecond passage", c.history[-2:], c.question)
        assert "<h>" not in s.prompt and s.answer == c.answer and s.id == c.id
    with pytest.raises(ValueError, match="passage lists"):
        samples_from_passages(contexts, passages[:1])


def test_user_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"document": "Doc one.", "history": ["user: hi", "agent: hello", "user: so"], "question": "Why?",
             "answer": "Because."},
            {"document": "Doc two.", "history": "user: earlier", "question": "How?", "answer": "Like this."},
            {"document": "Doc three.", "history": [], "question": "What?", "answer": "  "}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    samples, report = load_jsonl_samples(path, GroundedConfig(history_turns=2))
    assert [s.prompt for s in samples] == ["Doc one. <I> agent: hello user: so </I> <q> Why? </q>",
                                           "Doc two. <I> user: earlier </I> <q> How? </q>"]
    assert report.kept == 2 and report.dropped == {"empty_answer": 1}

    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n{'document': 'single quotes'}\n")
    with pytest.raises(DataError, match=r"mine\.jsonl, line 3: not valid JSON"):
        load_jsonl_samples(path)
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"document": "d", "question": "q"}) + "\n")
    with pytest.raises(DataError, match=r"mine\.jsonl, line 2: missing field\(s\) history, answer"):
        load_jsonl_samples(path)


def test_split_by_dialogue_is_deterministic_and_leak_free(docs, train_dialogues):
    samples, _ = grounded_samples(train_dialogues, docs)
    train, val = split_by_dialogue(samples, 0.25, seed=3)
    assert (train, val) == split_by_dialogue(samples, 0.25, seed=3)
    assert len(train) + len(val) == len(samples) and val
    assert not {s.meta["dial_id"] for s in train} & {s.meta["dial_id"] for s in val}
    assert len({s.meta["dial_id"] for s in val}) == 5  # a quarter of 20 dialogues
    assert split_by_dialogue(samples, 0.25, seed=4) != (train, val)
    dtrain, dval = split_by_dialogue(train_dialogues, 0.25, seed=3)
    assert {d.dial_id for d in dval} == {s.meta["dial_id"] for s in val}


# ----------------------------------------------------------------------------------------- instructions


def test_koalpaca_templates_chosen_by_input():
    samples, report = instruction_samples(asset_path("koalpaca/ko_alpaca_data_first100.json"))
    assert report.kept == 100 and not report.dropped
    records = json.loads(asset_path("koalpaca/ko_alpaca_data_first100.json").read_text())
    with_input = [s for s, r in zip(samples, records) if r["input"].strip()]
    without = [s for s, r in zip(samples, records) if not r["input"].strip()]
    assert with_input and without
    for s in with_input:
        assert s.prompt.startswith("아래는 작업을 설명하는 명령어와 추가적 맥락을 제공하는 입력이 짝을 이루는 예제입니다.")
        assert "### 입력:\n" in s.prompt and s.prompt.endswith("### 응답:\n") and s.meta["has_input"]
    for s in without:
        assert s.prompt.startswith("아래는 작업을 설명하는 명령어입니다. 명령어에 따른 요청을 적절히 완료하는 응답을 작성하세요.")
        assert "### 입력" not in s.prompt and not s.meta["has_input"]
    assert samples[0].answer == records[0]["output"]
    assert split_response(samples[0].prompt + samples[0].answer) == records[0]["output"]


def test_missing_and_empty_records_are_counted(tmp_path):
    records = [{"instruction": "요약하세요", "input": "", "output": "요약"},
               {"instruction": "", "input": "x", "output": "y"},
               {"instruction": "a", "output": "   "},
               {"input": "x", "output": "y"},
               {"instruction": "a", "input": None},
               "not a record",
               {"instruction": "Translate", "input": "안녕", "output": "Hello"}]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(records, ensure_ascii=False))
    samples, report = instruction_samples(path, template="alpaca")
    assert report.kept == 2 and dict(report.dropped) == {
        "empty_instruction": 1, "empty_output": 1, "missing_instruction": 1, "missing_output": 1, "not_an_object": 1}
    assert samples[1].prompt == ALPACA.prompt_input.format(instruction="Translate", input="안녕")
    assert samples[0].prompt == ALPACA.prompt_no_input.format(instruction="요약하세요")
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text(json.dumps(records[0]) + "\n{broken\n")
    with pytest.raises(DataError, match=r"mine\.jsonl, line 2"):
        instruction_samples(jsonl)


def test_yaml_and_chat_templates(tmp_path):
    good = tmp_path / "t.yaml"
    good.write_text('prompt_input: "Q: {instruction}\\nC: {input}\\nA:"\nprompt_no_input: "Q: {instruction}\\nA:"\n'
                    'response_split: "A:"\n')
    template = InstructTemplate.from_yaml(good)
    assert template.prompt("why", "ctx") == "Q: why\nC: ctx\nA:" and template.prompt("why") == "Q: why\nA:"
    samples, _ = instruction_samples([{"instruction": "why", "input": "", "output": "because"}], template=good)
    assert samples[0].prompt == "Q: why\nA:"
    bad = tmp_path / "bad.yaml"
    bad.write_text('prompt_input: "{instruction}"\nprompt_no_input: "{instruction}"\n')
    with pytest.raises(DataError, match="response_split"):
        InstructTemplate.from_yaml(bad)

    tok = word_tokenizer("user: agent: why because".split())
    tok.chat_template = ("{% for m in messages %}<s> {{ m['role'] }}: {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}agent: {% endif %}")
    samples, _ = instruction_samples([{"instruction": "why", "input": "", "output": "because"}], "chat", tokenizer=tok)
    assert samples[0].prompt == "<s> user: why agent: "
    # The template already wrote BOS: encode must not add a second one.
    ids = encode(tok, samples[0])["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    with pytest.raises(ValueError, match="chat template"):
        instruction_samples([], "chat", tokenizer=word_tokenizer([]))
    assert KOALPACA.response_split == "### 응답:"


# --------------------------------------------------------------------------------------------- collate

WORDS = "doc text here <I> </I> <q> why </q> the answer is yes".split()


def test_encode_masks_the_prompt_and_truncates_from_the_left():
    tok = word_tokenizer(WORDS)
    sample = Sample("s", "doc text here <I> </I> <q> why </q>", "the answer is yes")
    out = encode(tok, sample)
    prompt_ids = tok(sample.prompt)["input_ids"]
    answer_ids = tok(sample.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert out["input_ids"] == prompt_ids + answer_ids
    assert out["labels"] == [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    assert out["input_ids"].count(tok.bos_token_id) == 1

    short = encode(tok, sample, max_prompt_tokens=4, max_answer_tokens=2)
    assert short["input_ids"][:4] == [tok.bos_token_id] + tok("<q> why </q>", add_special_tokens=False)["input_ids"]
    assert short["labels"] == [IGNORE_INDEX] * 4 + answer_ids[:2]
    assert encode_prompt(tok, sample.prompt) == prompt_ids  # a bare prompt: the same ids, no answer, no EOS
    assert encode_prompt(tok, sample.prompt, 4) == short["input_ids"][:4]


def test_collator_left_pads_with_positions_and_eos_as_pad():
    tok = word_tokenizer(WORDS, add_bos=False)  # GPT-NeoX-like: no BOS, no pad token
    samples = [Sample("a", "doc text here <q> why </q>", "the answer is yes"), Sample("b", "<q> why </q>", "yes")]
    batch = Collator(tok)(samples)
    assert batch["input_ids"].shape == (2, 11)
    assert batch["input_ids"][1, :6].tolist() == [tok.eos_token_id] * 6  # padded with eos
    assert batch["attention_mask"].tolist() == [[1] * 11, [0] * 6 + [1] * 5]
    assert batch["position_ids"].tolist() == [list(range(11)), [0] * 7 + [1, 2, 3, 4]]
    # Every answer ends at the last position; the prompt and the padding carry no label.
    yes, eos = tok.convert_tokens_to_ids("yes"), tok.eos_token_id
    assert batch["labels"][:, -2:].tolist() == [[yes, eos], [yes, eos]]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 9 + [yes, eos]
    right = Collator(tok, padding_side="right")(samples)
    assert right["attention_mask"][1].tolist() == [1] * 5 + [0] * 6
    assert right["position_ids"][1].tolist() == [0, 1, 2, 3, 4] + [4] * 6
    assert right["labels"][1].tolist() == [IGNORE_INDEX] * 3 + [yes, eos] + [IGNORE_INDEX] * 6


def test_left_padding_gives_the_logits_of_the_unpadded_row():
    from tiny import tiny_model

    model = tiny_model("gpt2")  # absolute positions: a shifted position would change every logit (RoPE would not)
    rows = [{"input_ids": [5, 6, 7, 8, 9, 10], "labels": [IGNORE_INDEX] * 4 + [9, 10]},
            {"input_ids": [11, 12, 13], "labels": [IGNORE_INDEX, 12, 13]}]
    tok = word_tokenizer([], add_bos=False)
    batch = Collator(tok)(rows)
    with torch.no_grad():
        padded = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits
        alone = model(input_ids=torch.tensor([rows[1]["input_ids"]])).logits
    torch.testing.assert_close(padded[1, -3:], alone[0], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- assets


def test_shipped_assets_are_attributed_and_small():
    for name in ("doc2dial", "multidoc2dial", "koalpaca", "nsmc"):
        folder = asset_path(name)
        assert (folder / "SOURCE.md").is_file() and list(folder.glob("*LICENSE*"))
    assert "CC BY-NC 4.0" in (asset_path("koalpaca") / "SOURCE.md").read_text()
    total = sum(f.stat().st_size for n in ("doc2dial", "multidoc2dial", "koalpaca", "nsmc")
                for f in asset_path(n).rglob("*") if f.is_file())
    assert total < 2_000_000
    train = asset_path("nsmc/ratings_train.txt").read_text().splitlines()
    test = asset_path("nsmc/ratings_test_derived_1k.txt").read_text().splitlines()
    assert train[0] == test[0] == "id\tdocument\tlabel" and (len(train), len(test)) == (140, 1001)
    assert sorted(line.rsplit("\t", 1)[1] for line in test[1:]).count("1") == 500
    assert not {line.split("\t")[0] for line in train[1:]} & {line.split("\t")[0] for line in test[1:]}
    with pytest.raises(FileNotFoundError, match="available"):
        asset_path("no-such-asset")


def test_drop_report_prints_nothing_dropped():
    report = DropReport("x")
    report.keep(3)
    assert str(report) == "x: kept 3 of 3, none dropped" and report.as_dict()["kept"] == 3
