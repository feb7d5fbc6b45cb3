"""Per-family anatomy of decoder attention: where the key/value projections live and how heads are laid out.

`FAMILIES` has one row per supported `model_type`, each checked against transformers' modeling code: its
attention layout, its projection names (LoRA's default targets), whether its weights are GPT-2's Conv1D, whether
keys go through a per-head `k_norm`, and whether the attention kernel is looked up in transformers'
`AttentionInterface` (LLaMA-Adapter runs there; families that compute attention inline, such as Bloom,
Falcon or XGLM, would silently ignore it). Three layouts cover them:
- separate ``k_proj``/``v_proj`` (llama, mistral, qwen2, gemma, ...), optionally with a per-head ``k_norm``
  (qwen3, gemma3);
- fused ``query_key_value`` with per-head [q|k|v] blocks (gpt_neox / Polyglot-Ko);
- fused ``c_attn`` with [q|k|v] blocks across the full width (gpt2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from groundtune.errors import ConfigError

SEPARATE = "separate"  # q_proj, k_proj, v_proj: [kv_heads * head_dim] each
FUSED_PER_HEAD = "fused_per_head"  # one projection, per head [q | k | v] (GPT-NeoX)
FUSED_FULL_WIDTH = "fused_full_width"  # one projection, [q | k | v] each over the full width (GPT-2)
LAYOUTS = (SEPARATE, FUSED_PER_HEAD, FUSED_FULL_WIDTH)


@dataclass(frozen=True)
class Family:
    """The attention anatomy of one model_type.

    projections: the attention module's projection names, input side first and the output projection last:
    (q, k, v, o) for the separate layout, (qkv, o) for the fused ones. conv1d: weights are GPT-2's Conv1D,
    stored [in, out]. k_norm: keys are normalised per head (`k_norm`) before attention.
    attention_interface: the module calls ALL_ATTENTION_FUNCTIONS[config._attn_implementation].
    """

    model_type: str
    layout: str
    projections: tuple[str, ...]
    conv1d: bool = False
    k_norm: bool = False
    attention_interface: bool = True

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ConfigError(f"{self.model_type}: layout must be one of {LAYOUTS}, not {self.layout!r}")
        if len(self.projections) != (4 if self.layout == SEPARATE else 2):
            raise ConfigError(f"{self.model_type}: {self.layout} attention names (q, k, v, o) or (qkv, o) projections")

    @property
    def key_value(self) -> tuple[str, ...]:
        """The projection(s) the keys and values come from: (k, v), or the fused qkv."""
        return self.projections[1:3] if self.layout == SEPARATE else self.projections[:1]


_QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llama", SEPARATE, _QKVO),
    Family("mistral", SEPARATE, _QKVO),
    Family("qwen2", SEPARATE, _QKVO),
    Family("qwen3", SEPARATE, _QKVO, k_norm=True),
    Family("gemma", SEPARATE, _QKVO),
    Family("gemma2", SEPARATE, _QKVO),
    Family("gemma3_text", SEPARATE, _QKVO, k_norm=True),
    Family("starcoder2", SEPARATE, _QKVO),
    Family("gpt_neox", FUSED_PER_HEAD, ("query_key_value", "dense")),
    Family("gpt2", FUSED_FULL_WIDTH, ("c_attn", "c_proj"), conv1d=True),
)}


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_type(model) -> str:
    return _text_config(model).model_type


def lookup(model) -> Family | None:
    """The model's row in FAMILIES, or None."""
    return FAMILIES.get(model_type(model))


def family(model, purpose: str = "groundtune", attention_interface: bool = False) -> Family:
    """The model's row, or a ValueError that names its family and the supported ones.

    attention_interface: also require that the family dispatches through transformers' AttentionInterface.
    """
    row = lookup(model)
    if row is not None and (row.attention_interface or not attention_interface):
        return row
    name = model_type(model)
    supported = ", ".join(f.model_type for f in FAMILIES.values() if f.attention_interface or not attention_interface)
    why = (" (it computes attention inline, without transformers' AttentionInterface)" if row is not None
           else " (its attention anatomy is not in groundtune.arch.FAMILIES)")
    raise ConfigError(f"{purpose} does not support model family {name!r} ({type(model).__name__}){why}; "
                     f"supported families: {supported}")


def weight_is_transposed(model, module: nn.Module) -> bool:
    """Whether `module` stores its weight [in, out] (GPT-2's Conv1D) rather than nn.Linear's [out, in]."""
    row = lookup(model)
    return bool(row is not None and row.conv1d) and not isinstance(module, nn.Linear)


@dataclass
class AttentionSpec:
    """One self-attention module and the numbers needed to address its heads."""

    module: nn.Module
    layer_idx: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    family: Family


def _is_self_attention(module: nn.Module, row: Family) -> bool:
    if not isinstance(getattr(module, "layer_idx", None), int) or getattr(module, "is_cross_attention", False):
        return False
    return all(isinstance(getattr(module, name, None), nn.Module) for name in row.projections)


def attention_layers(model: nn.Module, purpose: str = "groundtune") -> list[AttentionSpec]:
    """All self-attention modules of a decoder, ordered from the bottom layer to the top.

    Raises ValueError for a family outside FAMILIES (purpose names the method in the message).
    """
    row = family(model, purpose)
    config = _text_config(model)
    heads = config.num_attention_heads
    kv_heads = heads if row.layout != SEPARATE else getattr(config, "num_key_value_heads", None) or heads
    specs = []
    for module in model.modules():
        if _is_self_attention(module, row):
            head_dim = getattr(module, "head_dim", None) or getattr(module, "head_size", None)
            head_dim = head_dim or config.hidden_size // heads
            specs.append(AttentionSpec(module, module.layer_idx, heads, kv_heads, head_dim, row))
    if not specs:
        raise ConfigError(
            f"no self-attention modules with {'/'.join(row.projections)} found in {type(model).__name__} "
            f"({row.model_type})"
        )
    return sorted(specs, key=lambda s: s.layer_idx)


def project_kv(spec: AttentionSpec, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of `x` [n, hidden] through the layer's own projections, as [kv_heads, n, head_dim].

    No rotary embedding is applied: adaption prompts have no position.
    """
    m, n, d, row = spec.module, x.shape[0], spec.head_dim, spec.family

    def projection(name):
        # the frozen base projection, also when LoRA wraps it (a batch mixing LoRA and LLaMA-Adapter rows)
        layer = getattr(m, name)
        return layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer

    if row.layout == SEPARATE:
        k_name, v_name = row.key_value
        k = projection(k_name)(x).view(n, -1, d)
        v = projection(v_name)(x).view(n, -1, d)
        if row.k_norm:
            k = m.k_norm(k)
    elif row.layout == FUSED_PER_HEAD:
        # GPT-NeoX interleaves per head: [..., heads, 3*head_dim] -> q | k | v.
        _, k, v = projection(row.key_value[0])(x).view(n, -1, 3 * d).chunk(3, dim=-1)
    else:
        # GPT-2: three full-width blocks q | k | v.
        _, k, v = projection(row.key_value[0])(x).split(spec.num_heads * d, dim=-1)
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
