import json

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

import groundtune as gt
from groundtune.methods import config_from_dict, count_trainable, optimizer_groups, trainable_state_dict
from groundtune.methods import accept, dept, prompt_tuning
from groundtune.methods._prompt_embedding import CodebookTable
from groundtune.methods.accept import default_subspaces

BUILDERS = {"accept": accept.build, "dept": dept.build, "prompt_tuning": prompt_tuning.build}
from tiny import FAMILIES, VOCAB, greedy_without_cache, randomise, tiny_model

PROMPT_CONFIGS = {
    "prompt_tuning": gt.PromptTuningConfig(length=5),
    "dept": gt.DeptConfig(length=4, rank=3, max_length=6),
    "accept": gt.AcceptConfig(length=4, subspaces=4, codewords=3, scap_subspaces=2, scap_codewords=2, max_length=6),
}


def _left_padded(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 8), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate([3, 0, 5]):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def _tiny_bert(num_labels=2, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, num_labels=num_labels)
    return BertForSequenceClassification(config).eval()


class _Embedder(nn.Module):
    """Just an input embedding of a given width: parameter counts depend on nothing else."""

    def __init__(self, hidden):
        super().__init__()
        self.embed = nn.Embedding(10, hidden)

    def get_input_embeddings(self):
        return self.embed


def _count(config, hidden):
    return sum(p.numel() for p in BUILDERS[config.method](_Embedder(hidden), config).parameters())


# ---- parameter counts ----

def test_accept_counts_follow_the_paper():
    m, K, r, ell, K2, r2, hidden = 60, 24, 20, 256, 3, 30, 768
    scpp = m * K * r + r * hidden
    scap = ell * K2 * r2 + r2 * hidden
    assert _count(gt.AcceptConfig(length=m, subspaces=K, codewords=r, scap=False), hidden) == scpp
    full = gt.AcceptConfig(length=m, subspaces=K, codewords=r, scap_subspaces=K2, scap_codewords=r2, max_length=ell)
    assert _count(full, hidden) == scpp + scap


def test_accept_t5_base_glue_setting_counts_74880():
    # The paper's T5-base GLUE count: SCPP with m=60, K=24 subspaces of t=32 (24·32 = 768), r=20 codewords
    # (60·24·20 + 20·768 = 28,800 + 15,360 = 44,160) plus a DePT-style A·B of rank 30 over l=256 positions on
    # the added side (256·30 + 30·768 = 7,680 + 23,040 = 30,720): 44,160 + 30,720 = 74,880.
    config = gt.AcceptConfig(length=60, subspaces=24, codewords=20, scap=False, rank=30, max_length=256)
    assert _count(config, hidden=768) == 74_880


def test_prompt_tuning_and_dept_counts():
    assert _count(gt.PromptTuningConfig(length=7), 48) == 7 * 48
    assert _count(gt.DeptConfig(length=7, rank=3, max_length=11), 48) == 7 * 48 + 11 * 3 + 3 * 48


def test_accept_prompt_is_a_soft_combination_of_shared_codewords():
    table = CodebookTable(n=5, subspaces=3, codewords=4, hidden=12)
    out = table()
    w, c = table.weights, table.codebook
    for i in range(5):
        for k in range(3):
            expected = sum(w[i, k, j] * c[k, j] for j in range(4))  # every codeword weighs in, no argmax
            torch.testing.assert_close(out[i, 4 * k:4 * (k + 1)], expected)


def test_default_subspaces_divide_the_hidden_size():
    assert default_subspaces(768, 32) == 24 and default_subspaces(768, 256) == 3
    assert default_subspaces(896, 256) == 2  # 896 / 3 is not whole
    assert default_subspaces(48, 256) == 1


def test_subspaces_that_do_not_divide_are_refused():
    with pytest.raises(ValueError, match="do not divide the hidden size"):
        gt.attach(tiny_model("llama"), gt.AcceptConfig(length=4, subspaces=5))


# ---- decoders ----

# ACCEPT (a prompt and an added part) on every family; the other two on a RoPE and an absolute-position family.
CASES = [(f, "accept") for f in FAMILIES] + [(f, m) for f in ("llama", "gpt2") for m in ("prompt_tuning", "dept")]


@pytest.mark.parametrize("family,method", CASES)
def test_left_padded_rows_see_what_they_see_unpadded(family, method):
    model = gt.attach(tiny_model(family), PROMPT_CONFIGS[method])
    randomise(model)
    ids, mask = _left_padded()
    logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape[:2] == ids.shape  # the logits line up with input_ids, not with the prompt
    for row, pad in enumerate([3, 0, 5]):
        alone = model(input_ids=ids[row:row + 1, pad:]).logits[0]
        torch.testing.assert_close(logits[row, pad:], alone, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_sliding_window_layers_see_the_prompt_whatever_the_padding(family):
    # A window that holds the prompt and the longest text, but not the padding too: had the prompt gone before
    # the padding, the most padded row would lose sight of it and differ from its unpadded self.
    config = PROMPT_CONFIGS["prompt_tuning"]
    model = tiny_model(family)
    model.config.sliding_window = config.length + 8
    model = gt.attach(model, config)
    randomise(model)
    model.generation_config.eos_token_id = None  # run every step: finished rows would be padded otherwise
    ids, mask = _left_padded()
    pads = [3, 0, 5]
    wide_ids = torch.cat([torch.zeros(3, 6, dtype=ids.dtype), ids], 1)  # 6 more pads on every row
    wide_mask = torch.cat([torch.zeros(3, 6, dtype=mask.dtype), mask], 1)
    logits = model(input_ids=wide_ids, attention_mask=wide_mask).logits
    for row, pad in enumerate(pads):
        alone = model(input_ids=ids[row:row + 1, pad:]).logits[0]
        torch.testing.assert_close(logits[row, 6 + pad:], alone, atol=2e-5, rtol=1e-4)
    out = model.generate(input_ids=wide_ids, attention_mask=wide_mask, max_new_tokens=4, do_sample=False,
                         pad_token_id=0)
    for row, pad in enumerate(pads):
        alone = model.generate(input_ids=ids[row:row + 1, pad:], max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert torch.equal(out[row, -4:], alone[0, -4:])


@pytest.mark.parametrize("method", list(PROMPT_CONFIGS))
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_right_padding_and_labels(family, method):
    model = gt.attach(tiny_model(family), PROMPT_CONFIGS[method])
    randomise(model)
    ids, _ = _left_padded()
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, 0] = -100  # (the prompt's last position predicts the first token, as in peft; not checked here)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    alone = model(input_ids=ids[:1, :6]).logits[0]
    torch.testing.assert_close(out.logits[0, :6], alone, atol=2e-5, rtol=1e-4)
    # the model's own loss (labels shifted by the prompt's -100s) equals the loss on the text's logits
    logits, targets = out.logits[:, :-1], labels[:, 1:]
    expected = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("family,method", CASES)
def test_generate_with_cache_equals_a_greedy_loop_without(family, method):
    model = gt.attach(tiny_model(family), PROMPT_CONFIGS[method])
    randomise(model)
    model.generation_config.eos_token_id = None  # run every step: finished rows would be padded otherwise
    ids, mask = _left_padded()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(out, greedy_without_cache(model, ids, mask, 6))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_beam_search_scores_match_a_plain_forward(family):
    model = gt.attach(tiny_model(family), PROMPT_CONFIGS["accept"])
    randomise(model)
    model.generation_config.eos_token_id = None
    ids, mask = _left_padded()
    new = 5
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, num_beams=3, do_sample=False,
                         pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    seq, width = out.sequences, ids.shape[1]
    full_mask = torch.cat([mask, torch.ones(len(ids), new, dtype=mask.dtype)], 1)
    logprobs = model(input_ids=seq, attention_mask=full_mask).logits.log_softmax(-1)
    total = sum(logprobs[:, width + i - 1].gather(1, seq[:, width + i, None])[:, 0] for i in range(new))
    torch.testing.assert_close(out.sequences_scores * new, total, atol=1e-4, rtol=1e-5)


def test_the_prompt_changes_the_output_and_detach_restores_the_base():
    x, _ = _left_padded()
    base = tiny_model("qwen2")
    expected = base(x).logits
    model = gt.attach(base, PROMPT_CONFIGS["dept"])
    assert not torch.allclose(model(x).logits, expected)  # B = 0, but the prompt is there from the start
    bare = gt.detach(model)
    assert torch.equal(bare(x).logits, expected)
    assert not any("groundtune" in n for n, _ in bare.named_parameters())


def test_the_added_part_starts_at_zero():
    model = gt.attach(tiny_model("llama"), gt.AcceptConfig(length=3, subspaces=4, codewords=2, max_length=6))
    assert torch.count_nonzero(model.groundtune_prompt.update()) == 0


def test_gradients_reach_every_trainable_part_and_nothing_else():
    model = gt.attach(tiny_model("gemma"), PROMPT_CONFIGS["accept"])
    randomise(model)
    ids, mask = _left_padded()
    model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad, name
    assert all(n.startswith("groundtune_prompt.") for n in trainable_state_dict(model))


def test_two_learning_rates():
    model = gt.attach(tiny_model("llama"), gt.AcceptConfig(length=3, subspaces=4, codewords=2, update_lr=1e-3))
    groups = optimizer_groups(model, 0.3)
    assert [(g["name"], g["lr"]) for g in groups] == [("prompt", 0.3), ("update", 1e-3)]
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups[1]["params"]} == {"groundtune_prompt.update.weights",
                                                          "groundtune_prompt.update.codebook"}
    assert sum(p.numel() for g in groups for p in g["params"]) == count_trainable(model)


def test_prompt_initialisations():
    model = tiny_model("llama")
    table = model.get_input_embeddings().weight
    torch.manual_seed(0)
    vocab = gt.attach(model, gt.PromptTuningConfig(length=6, init="vocab")).groundtune_prompt.prompt.weight
    assert all(any(torch.equal(row, t) for t in table) for row in vocab)  # rows of the embedding table
    gt.detach(model)
    rand = gt.attach(model, gt.PromptTuningConfig(length=500, init="random")).groundtune_prompt.prompt.weight
    assert abs(rand.std().item() - table.std().item()) < 0.2 * table.std().item()
    gt.detach(model)
    with pytest.raises(ValueError, match="init_text"):
        gt.PromptTuningConfig(init="text")
    with pytest.raises(ValueError, match="tokenizer"):
        gt.attach(model, gt.PromptTuningConfig(length=3, init="text", init_text="hello"))


def test_text_initialisation_uses_the_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path)
    model = tiny_model("mistral")
    config = gt.PromptTuningConfig(length=5, init="text", init_text="w7 w3", tokenizer=str(tmp_path))
    prompt = gt.attach(model, config).groundtune_prompt.prompt.weight
    table = model.get_input_embeddings().weight
    torch.testing.assert_close(prompt, table[[7, 3, 7, 3, 7]])  # repeated to fill the prompt


def test_loading_a_text_initialised_adapter_never_opens_its_tokenizer(tmp_path):
    """The saved weights replace the initial values: a folder whose config names a tokenizer that is not there (or
    one an uploader chose) loads without reading it, and gives the saved prompt."""
    model = tiny_model("mistral")
    config = gt.PromptTuningConfig(length=3, init="vocab")
    adapted = gt.attach(model, config)
    randomise(adapted)
    gt.save_adapter(adapted, tmp_path / "adapter")
    meta_path = tmp_path / "adapter" / "adapter_config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"].update(init="text", init_text="w7 w3", tokenizer=str(tmp_path / "no-such-tokenizer"))
    meta_path.write_text(json.dumps(meta))
    saved = adapted.groundtune_prompt.prompt.weight.detach().clone()
    loaded = gt.load_adapter(gt.detach(adapted), tmp_path / "adapter")
    torch.testing.assert_close(loaded.groundtune_prompt.prompt.weight, saved)


# ---- encoders ----

@pytest.mark.parametrize("method", [*PROMPT_CONFIGS, "bitfit"])
def test_encoder_classifier_trains_with_its_head(method):
    config = PROMPT_CONFIGS.get(method) or gt.BitFitConfig()
    model = gt.attach(_tiny_bert(), config)
    randomise(model)
    names = list(trainable_state_dict(model))
    assert "classifier.weight" in names and "classifier.bias" in names
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=torch.tensor([0, 1, 1]))
    assert out.logits.shape == (3, 2)
    out.loss.backward()
    assert all(p.grad is not None for p in trainable_state_dict(model).values())
    alone = model(input_ids=ids[1:2, :6], token_type_ids=types[1:2, :6]).logits  # right padding changes nothing
    torch.testing.assert_close(out.logits[1:2], alone, atol=2e-5, rtol=1e-4)


def test_encoder_prompt_goes_after_cls_and_shifts_positions():
    model = gt.attach(_tiny_bert(), gt.PromptTuningConfig(length=4))
    seen = {}
    hook = model.bert.embeddings.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    ids = torch.randint(5, VOCAB, (2, 7))
    model(input_ids=ids)
    hook.remove()
    embeds = seen["inputs_embeds"]
    assert embeds.shape[1] == 11
    word = model.get_input_embeddings()
    torch.testing.assert_close(embeds[:, 0], word(ids[:, 0]))  # [CLS] stays first: the classifier reads it
    torch.testing.assert_close(embeds[0, 1:5], model.groundtune_prompt.prompt.weight)
    torch.testing.assert_close(embeds[:, 5:], word(ids[:, 1:]))


def test_encoder_inputs_longer_than_the_positions_are_a_clear_error():
    model = gt.attach(_tiny_bert(), gt.PromptTuningConfig(length=10))
    with pytest.raises(ValueError, match="exceed the model's 40 positions"):
        model(input_ids=torch.randint(5, VOCAB, (1, 35)))


def test_regression_head():
    model = gt.attach(_tiny_bert(num_labels=1), PROMPT_CONFIGS["accept"])
    out = model(input_ids=torch.randint(5, VOCAB, (2, 6)), labels=torch.tensor([0.5, 4.0]))
    assert out.logits.shape == (2, 1) and out.loss.item() > 0


# ---- adapter folders ----

@pytest.mark.parametrize("method", [*PROMPT_CONFIGS, "bitfit"])
def test_save_and_load_give_identical_outputs(tmp_path, method):
    config = PROMPT_CONFIGS.get(method) or gt.BitFitConfig()
    make = (lambda: _tiny_bert(seed=0)) if method == "bitfit" else (lambda: tiny_model("qwen2"))
    model = gt.attach(make(), config)
    randomise(model)
    ids, mask = _left_padded()
    if method == "bitfit":
        mask = torch.ones_like(mask)
    expected = model(input_ids=ids, attention_mask=mask).logits
    gt.save_adapter(model, tmp_path / "a")
    fresh = gt.load_adapter(make(), tmp_path / "a")
    assert torch.equal(fresh(input_ids=ids, attention_mask=mask).logits, expected)
    assert sorted(trainable_state_dict(fresh)) == sorted(trainable_state_dict(model))


def test_encoder_adapter_folder_holds_the_head(tmp_path):
    model = gt.attach(_tiny_bert(), PROMPT_CONFIGS["accept"])
    randomise(model)
    ids = torch.randint(5, VOCAB, (2, 6))
    expected = model(input_ids=ids).logits
    gt.save_adapter(model, tmp_path / "a")
    other = _tiny_bert()
    torch.nn.init.normal_(other.classifier.weight)  # another head: the saved one must win
    fresh = gt.load_adapter(other, tmp_path / "a")
    assert torch.equal(fresh(input_ids=ids).logits, expected)


def test_configs_round_trip_through_dicts():
    for config in [*PROMPT_CONFIGS.values(), gt.BitFitConfig()]:
        from groundtune.methods import config_to_dict

        assert config_from_dict(config_to_dict(config)) == config


# ---- BitFit ----

def test_bitfit_trains_biases_and_detach_puts_them_back():
    base = tiny_model("gpt2")
    x, _ = _left_padded()
    expected = base(x).logits
    model = gt.attach(base, gt.BitFitConfig())
    names = list(trainable_state_dict(model))
    assert names and all(n.endswith("bias") for n in names)
    assert count_trainable(model) == sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    randomise(model)
    assert not torch.allclose(model(x).logits, expected)
    assert torch.equal(gt.detach(model)(x).logits, expected)
    assert not any(p.requires_grad for p in base.parameters())


def test_bitfit_on_qwen2_trains_its_qkv_biases():
    model = gt.attach(tiny_model("qwen2"), gt.BitFitConfig())
    assert {n.rsplit(".", 2)[-2] for n in trainable_state_dict(model)} == {"q_proj", "k_proj", "v_proj"}


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma"])
def test_bitfit_on_a_model_without_biases_says_so(family):
    base = tiny_model(family)
    with pytest.raises(ValueError, match="has no bias terms"):
        gt.attach(base, gt.BitFitConfig())


# ---- with the decoder trainer's loss ----

def test_the_trainers_answer_loss_trains_the_prompt():
    from groundtune.train import answer_loss

    torch.manual_seed(0)
    model = gt.attach(tiny_model("llama"), gt.AcceptConfig(length=4, subspaces=4, codewords=3, max_length=8,
                                                          update_lr=1e-2))
    ids, mask = _left_padded()
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]  # answer tokens at the end, as the trainer's left-padded batches have them
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
             "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
    optimizer = torch.optim.AdamW(optimizer_groups(model, 3e-2))
    first = answer_loss(model, batch).item()
    for _ in range(15):
        answer_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert answer_loss(model, batch).item() < first - 0.5
