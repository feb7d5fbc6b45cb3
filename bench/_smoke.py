"""Shared by the benches' --smoke runs: tiny random models, a tiny tokenizer, peers that may be missing.

Not a bench itself (the leading underscore keeps it out of tests/test_bench_smoke.py's glob). A --smoke run
takes the same code path as the full bench on tiny inputs, so a bench that rots fails in seconds.
"""

from __future__ import annotations

import importlib


def json_keys(doc: str) -> tuple[str, ...]:
    """The keys a bench promises in the `JSON keys: a, b, ...` paragraph of its docstring (what the suite checks)."""
    for paragraph in doc.split("\n\n"):
        text = " ".join(paragraph.split())
        if text.startswith("JSON keys:"):
            return tuple(k.strip() for k in text.removeprefix("JSON keys:").split(","))
    raise ValueError("no `JSON keys:` paragraph in the docstring")

# A tiny Llama: grouped KV heads like SmolLM2 (6 query heads share 2 KV heads), head_dim 8.
TINY_LLAMA = dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=6,
                  num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=True)


def tiny_llama(vocab_size: int = 128, seed: int = 0, **overrides):
    """A random-init LlamaForCausalLM a few hundred kB big, in eval mode (as groundtune.load_model returns)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         **{**TINY_LLAMA, **overrides})
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def tiny_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on `texts` in well under a second: <pad>=0, <s>=1, </s>=2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def peer(module: str, skipped: dict[str, str]):
    """The peer library `module`, or None with the reason recorded in `skipped` (the bench then reports it)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        skipped[module] = f"not installed ({err})"
        return None
