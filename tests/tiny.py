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
    # fused per-head qkv and partial rotary (Polyglot-Ko's family)
    "gpt_neox": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, rotary_pct=0.5),
    # fused full-width qkv (Conv1D), absolute positions
    "gpt2": dict(n_embd=48, n_layer=3, n_head=4, n_positions=128, vocab_size=VOCAB),
}
FAMILIES = list(TINY)


def tiny_model(family: str, seed: int = 0, attn_implementation: str = "sdpa"):
    torch.manual_seed(seed)
    kwargs = dict(TINY[family])
    if family != "gpt2":
        kwargs = {**_COMMON, **kwargs}
    config = AutoConfig.for_model(family, **kwargs)
    config.pad_token_id = 0
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.eval()
