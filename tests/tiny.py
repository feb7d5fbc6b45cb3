"""Tiny random-init configs of every decoder family groundtune supports (unit tests only)."""

import torch
from transformers import AutoModelForCausalLM, AutoConfig

VOCAB = 97
_COMMON = dict(vocab_size=VOCAB, max_position_embeddings=128)

TINY = {
    # grouped KV heads (6 query heads share 2 KV heads)
    "llama": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2),
    "mistral": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3),
    # biases on q/k/v
    "qwen2": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    # head_dim 16 while hidden / heads = 12
    "gemma": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16),
    # per-head k_norm (and q_norm) on the keys
    "qwen3": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=12),
    # sliding-window and global layers (a window of 16: prompt + padding + text of the prompt tests fit in it;
    # test_arch drives 40 tokens through it), logit softcapping, query_pre_attn_scalar
    "gemma2": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=16, query_pre_attn_scalar=16, sliding_window=16),
    # two sliding-window layers (window 16) then a global one, head_dim 16 != 48 / 4, one KV head, per-head q/k norms
    "gemma3_text": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                        head_dim=16, query_pre_attn_scalar=24, sliding_window=16,
                        layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
    # biases everywhere, layer norms
    "starcoder2": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    # fused per-head qkv and partial rotary (Polyglot-Ko's family)
    "gpt_neox": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, rotary_pct=0.5),
    # fused full-width qkv (Conv1D), absolute positions
    "gpt2": dict(n_embd=48, n_layer=3, n_head=4, n_positions=128, vocab_size=VOCAB),
}
FAMILIES = list(TINY)
# transformers refuses sdpa for these (Gemma2: sdpa cannot softcap the attention logits); they load with eager
EAGER_ONLY = {"gemma2"}


def tiny_model(family: str, seed: int = 0, attn_implementation: str = "sdpa"):
    torch.manual_seed(seed)
    kwargs = dict(TINY[family])
    if family != "gpt2":
        kwargs = {**_COMMON, **kwargs}
    config = AutoConfig.for_model(family, **kwargs)
    config.pad_token_id = 0
    if family in EAGER_ONLY:
        attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.eval()


def tiny_tokenizer():
    """A word-level tokenizer over VOCAB ids: <pad>=0, </s>=1, then w2 … w96 (whitespace-separated)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


def tiny_samples(n: int = 24, seed: int = 0):
    """Synthetic grounded-style samples: the answer is the marked stretch of the prompt, always opening with
    w4 w5 (a pattern a few adapter steps can learn)."""
    import random

    from groundtune.data import Sample

    rng = random.Random(seed)
    samples = []
    for i in range(n):
        words = [f"w{rng.randrange(10, VOCAB)}" for _ in range(rng.randrange(12, 30))]
        start = rng.randrange(0, len(words) - 4)
        answer = ["w4", "w5"] + words[start:start + rng.randrange(1, 3)]
        prompt = " ".join(words[:start] + ["w2"] + answer + ["w3"] + words[start + len(answer):])
        samples.append(Sample(f"s{i}", prompt, " ".join(answer)))
    return samples


def serving_model(context: int = 256):
    """The tiny Qwen2 the serving tests serve (sdpa, eval mode, pad id 0), the same weights at every call."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("qwen2", vocab_size=97, max_position_embeddings=context, **TINY["qwen2"])
    config.pad_token_id = 0
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def random_adapters(root, methods: dict, base) -> dict:
    """One saved adapter folder per {name: config} under `root`, its trainable tensors drawn non-zero (seeded by
    position), so that every adapter changes what the model says. `base()` makes a fresh base model."""
    import groundtune as gt
    from groundtune.methods import trainable_state_dict

    folders = {}
    for i, (name, config) in enumerate(methods.items()):
        model = gt.attach(base(), config)
        g = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for p in trainable_state_dict(model).values():
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
        folders[name] = gt.save_adapter(model, root / name)
    return folders


def randomise(model, seed: int = 0, scale: float = 0.5):
    """Draw every trainable parameter from N(0, scale²), seeded: non-zero everywhere (gates, DePT's B and ACCEPT's
    SCAP codebook start at zero), so that every part of an adapter shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def tiny_run_folder(root, n_train: int, n_eval: int, history: list[str]):
    """A folder a run config can point at: model/ (tiny Llama + tokenizer), train.jsonl and eval.jsonl of
    grounded records ({document, history, question, answer}). Returns `root`."""
    import json
    from pathlib import Path

    root = Path(root)
    tiny_model("llama").save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    for split, seed, n in (("train", 0, n_train), ("eval", 1, n_eval)):
        lines = [json.dumps({"document": s.prompt, "history": history, "question": "w10 w11", "answer": s.answer})
                 for s in tiny_samples(n, seed)]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def greedy_without_cache(model, ids, mask, steps: int):
    """The reference for generate(): `steps` greedy tokens, each from a full forward pass with no KV cache."""
    seq, seq_mask = ids, mask
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(input_ids=seq, attention_mask=seq_mask, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq, seq_mask = torch.cat([seq, nxt], 1), torch.cat([seq_mask, torch.ones_like(nxt)], 1)
    return seq
