"""Per-family anatomy of decoder attention: where the key/value projections live and how heads are laid out.

Three layouts cover the families groundtune supports:
- separate ``k_proj``/``v_proj`` (llama, mistral, qwen2, gemma, and most newer families), optionally with a
  per-head ``k_norm`` (qwen3, gemma3);
- fused ``query_key_value`` with per-head [q|k|v] blocks (gpt_neox / Polyglot-Ko);
- fused ``c_attn`` with [q|k|v] blocks across the full width (gpt2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AttentionSpec:
    """One self-attention module and the numbers needed to address its heads."""

    module: nn.Module
    layer_idx: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


def _is_self_attention(module: nn.Module) -> bool:
    if not isinstance(getattr(module, "layer_idx", None), int) or getattr(module, "is_cross_attention", False):
        return False
    return (hasattr(module, "k_proj") and hasattr(module, "v_proj")) or hasattr(module, "query_key_value") or hasattr(
        module, "c_attn"
    )


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_layers(model: nn.Module) -> list[AttentionSpec]:
    """All self-attention modules of a decoder, ordered from the bottom layer to the top."""
    config = _text_config(model)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    specs = []
    for module in model.modules():
        if _is_self_attention(module):
            head_dim = getattr(module, "head_dim", None) or getattr(module, "head_size", None)
            head_dim = head_dim or config.hidden_size // heads
            fused = hasattr(module, "query_key_value") or hasattr(module, "c_attn")
            specs.append(AttentionSpec(module, module.layer_idx, heads, heads if fused else kv_heads, head_dim))
    if not specs:
        raise ValueError(
            f"no self-attention modules found in {type(model).__name__}: groundtune knows modules with "
            "k_proj/v_proj, query_key_value (GPT-NeoX) or c_attn (GPT-2)"
        )
    return sorted(specs, key=lambda s: s.layer_idx)


def project_kv(spec: AttentionSpec, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of `x` [n, hidden] through the layer's own projections, as [kv_heads, n, head_dim].

    No rotary embedding is applied: adaption prompts have no position.
    """
    m, n, d = spec.module, x.shape[0], spec.head_dim
    if hasattr(m, "k_proj"):
        k = m.k_proj(x).view(n, -1, d)
        v = m.v_proj(x).view(n, -1, d)
        if hasattr(m, "k_norm"):
            k = m.k_norm(k)
    elif hasattr(m, "query_key_value"):
        # GPT-NeoX interleaves per head: [..., heads, 3*head_dim] -> q | k | v.
        _, k, v = m.query_key_value(x).view(n, -1, 3 * d).chunk(3, dim=-1)
    else:
        # GPT-2: three full-width blocks q | k | v.
        _, k, v = m.c_attn(x).split(spec.num_heads * d, dim=-1)
        k, v = k.view(n, -1, d), v.view(n, -1, d)
    return k.transpose(0, 1), v.transpose(0, 1)


def model_shape(model: nn.Module) -> dict:
    """What an adapter depends on; recorded in adapter folders and compared on load."""
    config = _text_config(model)
    return {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "num_layers": getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None),
        "vocab_size": config.vocab_size,
    }
