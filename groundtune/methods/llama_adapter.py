"""LLaMA-Adapter (Zhang et al., 2023): zero-initialised, gated adaption prompts on the top L layers.

On each adapted layer a learnable prompt P [K, hidden] is projected by the layer's own frozen key/value
projections (no rotary embedding). Every query attends to those K keys with a softmax of its own, separate
from the ordinary attention; the result, scaled by a gate per head that starts at zero, is added to the
attention output before the output projection:

    out = attention(q, k, v) + gate ⊙ softmax(q · k_Pᵀ · scaling) · v_P

Rather than re-running q/k/v projections as peft's AdaptionPrompt does, we register an attention function
with transformers' AttentionInterface: it receives the query after RoPE, runs the model's own kernel (sdpa or
eager) and adds the adapter term. Within one decoding run with grad off, k_P and gate·v_P are computed once and
reused, so decoding costs one small extra sdpa call per adapted layer; nothing cached outlives the run.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from groundtune.arch import AttentionSpec, attention_layers, family, project_kv
from groundtune.kvcache import cache_from
from groundtune.methods import Method, register
from groundtune.ranges import COUNT, ranged
from groundtune.errors import ConfigError

PREFIX = "groundtune_adapter_"  # attention implementation names: groundtune_adapter_sdpa, ..._eager


@dataclass
class LlamaAdapterConfig:
    """layers: how many top layers get a prompt (L); length: prompt tokens per layer (K);
    gate: one gate per head ("per_head") or one per layer ("scalar"); tanh_gate: gate through tanh."""

    method = "llama_adapter"
    layers: int = ranged(30, COUNT)
    length: int = ranged(10, COUNT)
    gate: str = "per_head"
    tanh_gate: bool = False

    def __post_init__(self):
        if self.gate not in ("per_head", "scalar"):
            raise ConfigError(f"gate must be 'per_head' or 'scalar', not {self.gate!r}")
        if self.layers < 1 or self.length < 1:
            raise ConfigError(f"layers and length must be >= 1 (got layers={self.layers}, length={self.length})")


class _DecodeScope:
    """Which decoding run, if any, the current forward pass belongs to.

    Within one decoding run (a `generate()` call, or any loop that hands the same KV cache object back step after
    step) the parameters do not change, so k_P and gate·v_P are computed once, at its first step, and reused. A
    forward pre-hook on the model records the run's KV cache object here, and only while grad is off; a pass with
    grad on, or without a cache, records nothing and recomputes. The adapter's copy is keyed on that object by weak
    reference, so a new run (a new cache object) always recomputes. Unlike a key on parameter versions this also
    sees `.data` edits, replaced Parameter objects, `load_state_dict(assign=True)`, dtype and device moves.
    """

    def __init__(self):
        self.kv_cache = None
        self.rows: dict[str, torch.Tensor] = {}  # a mixed batch: each adapter's rows (see select_rows)

    def enter(self, model, args, kwargs):
        self.kv_cache = None if torch.is_grad_enabled() else cache_from(kwargs)

    def leave(self, model, args, kwargs, output):
        self.kv_cache = None


def _install_scope(model) -> _DecodeScope:
    scope = _DecodeScope()
    model._groundtune_adapter_hooks = [model.register_forward_pre_hook(scope.enter, with_kwargs=True),
                                       model.register_forward_hook(scope.leave, with_kwargs=True)]
    return scope


def _remove_scope(model) -> None:
    for handle in getattr(model, "_groundtune_adapter_hooks", []):
        handle.remove()
    if hasattr(model, "_groundtune_adapter_hooks"):
        del model._groundtune_adapter_hooks


class AdaptionPrompt(nn.Module):
    """The trainable part of one layer: a prompt and a zero-initialised gate."""

    def __init__(self, spec: AttentionSpec, hidden_size: int, config: LlamaAdapterConfig, scope: "_DecodeScope"):
        super().__init__()
        self.spec = spec
        self.tanh_gate = config.tanh_gate
        # N(0, 1), as the reference implementation's nn.Embedding: the scale of RMS-normalised hidden states.
        self.prompt = nn.Parameter(torch.randn(config.length, hidden_size))
        self.gate = nn.Parameter(torch.zeros(spec.num_heads if config.gate == "per_head" else 1))
        self.scope = scope
        self._cache = None  # (weakref to the KV cache of the decoding run, dtype, (k_P, gate·v_P))

    def keys_values(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """k_P and gate·v_P as [1, heads, K, head_dim]. The gate is folded into v: softmax(..)·(g v) = g (softmax(..)·v).

        Reused only within one decoding run (see _DecodeScope) and only while grad is off; everywhere else they
        are recomputed, which costs K rows through one projection per layer.
        """
        owner = self.scope.kv_cache
        if owner is not None and self._cache is not None and self._cache[0]() is owner and self._cache[1] == dtype:
            return self._cache[2]
        weight = next(self.spec.module.parameters())
        k, v = project_kv(self.spec, self.prompt.to(weight.dtype))
        repeat = self.spec.num_heads // k.shape[0]  # grouped KV heads share their keys
        k, v = k.repeat_interleave(repeat, dim=0), v.repeat_interleave(repeat, dim=0)
        gate = torch.tanh(self.gate) if self.tanh_gate else self.gate
        v = v * gate.view(-1, 1, 1).to(v.dtype)
        kv = (k.unsqueeze(0).to(dtype), v.unsqueeze(0).to(dtype))
        self._cache = None if owner is None else (weakref.ref(owner), dtype, kv)
        return kv

    def attend(self, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """query [B, heads, T, head_dim] -> adapter output [B, T, heads, head_dim] (the layout attention returns)."""
        k, v = self.keys_values(query.dtype)
        out = F.scaled_dot_product_attention(query, k.expand(query.shape[0], -1, -1, -1),
                                             v.expand(query.shape[0], -1, -1, -1), scale=scaling)
        return out.transpose(1, 2)


@functools.lru_cache(maxsize=None)
def _eager_kernel(attention_class: type):
    # Eager attention is not in AttentionInterface: each modeling file defines its own (softcapping, upcasts...)
    # as the module-level `eager_attention_forward` its attention modules fall back to.
    kernel = getattr(inspect.getmodule(attention_class), "eager_attention_forward", None)
    if kernel is None:
        raise ConfigError(f"{attention_class.__name__}'s modeling file has no eager_attention_forward; "
                         "load the model with attn_implementation='sdpa' for LLaMA-Adapter")
    return kernel


def _adapted_attention(base: str):
    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        kernel = _eager_kernel(type(module)) if base == "eager" else ALL_ATTENTION_FUNCTIONS[base]
        out, weights = kernel(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        adapter = getattr(module, "adaption_prompt", None)
        if adapter is not None:
            # attend() rather than __call__: skips nn.Module hook dispatch on every decoded token
            out = out + adapter.attend(query, scale).to(out.dtype)
        mixed = getattr(module, "adaption_prompts", None)
        if mixed is not None:  # a mixed batch: each adapter's term on its own rows only
            for name, rows in next(iter(mixed.values())).scope.rows.items():
                if name in mixed:
                    out = out.index_add(0, rows, mixed[name].attend(query[rows], scale).to(out.dtype))
        return out, weights

    return attention


for _base in ("sdpa", "eager"):
    AttentionInterface.register(PREFIX + _base, _adapted_attention(_base))
    AttentionMaskInterface.register(PREFIX + _base, ALL_MASK_ATTENTION_FUNCTIONS[_base])


def attach(model, config: LlamaAdapterConfig):
    # Only families that look their kernel up in AttentionInterface run the adapter term; others would ignore it.
    family(model, "LLaMA-Adapter", attention_interface=True)
    specs = attention_layers(model, "LLaMA-Adapter")
    if config.layers > len(specs):
        from groundtune.errors import ConfigError

        raise ConfigError(f"method.layers is {config.layers}, but {type(model).__name__} has {len(specs)} layers; "
                          f"set method.layers <= {len(specs)}")
    current = model.config._attn_implementation or "eager"
    base = current.removeprefix(PREFIX)
    if base not in ("sdpa", "eager"):
        raise ConfigError(f"LLaMA-Adapter runs on the sdpa or eager attention kernels, not {current!r}")
    if base == "eager":
        for spec in specs:
            _eager_kernel(type(spec.module))  # refuse now rather than at the first forward
    hidden = model.config.get_text_config().hidden_size
    weight = next(model.parameters())
    scope = _install_scope(model)
    for spec in specs[-config.layers:]:
        adapter = AdaptionPrompt(spec, hidden, config, scope).to(weight.device)
        spec.module.adaption_prompt = adapter
    model.groundtune_base_attention = base
    model.set_attn_implementation(PREFIX + base)  # registered with AttentionInterface when this file loads
    return model


def attach_mixed(model, adapters: list):
    """Several LLaMA-Adapters on one model, each under its name (`adaption_prompts[name]` on its layers); before a
    forward, `select_rows` says which rows each one serves. `tensors` are named as a plain attach names them."""
    from groundtune.methods import attach as attach_one, detach as detach_one

    paths = {module: path for path, module in model.named_modules()}
    held = []
    for name, config, tensors in adapters:
        model = attach_one(model, config)  # checks the family and the layers, installs the kernel
        with torch.no_grad():
            for spec in attention_layers(model)[-config.layers:]:
                prompt = spec.module.adaption_prompt
                for part in ("prompt", "gate"):
                    getattr(prompt, part).copy_(tensors[f"{paths[spec.module]}.adaption_prompt.{part}"])
        held += [(name, spec.module, spec.module.adaption_prompt) for spec in attention_layers(model)[-config.layers:]]
        model = detach_one(model)  # its prompts are kept in `held`
    scope = _install_scope(model)  # one decoding scope for them all
    for name, module, prompt in held:
        if not hasattr(module, "adaption_prompts"):
            module.adaption_prompts = nn.ModuleDict()
        prompt.scope = scope
        prompt.requires_grad_(False)
        module.adaption_prompts[name] = prompt
    model.groundtune_adapter_scope = scope
    model.groundtune_base_attention = (model.config._attn_implementation or "eager").removeprefix(PREFIX)
    model.set_attn_implementation(PREFIX + model.groundtune_base_attention)
    return model


def select_rows(model, names: list) -> dict:
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name is not None:
            rows.setdefault(name, []).append(i)
    model.groundtune_adapter_scope.rows = {name: torch.tensor(index) for name, index in rows.items()}
    return {}


def detach_mixed(model):
    for spec in attention_layers(model):
        if hasattr(spec.module, "adaption_prompts"):
            del spec.module.adaption_prompts
    if hasattr(model, "groundtune_adapter_scope"):
        del model.groundtune_adapter_scope
    return detach(model)


def detach(model):
    _remove_scope(model)
    for spec in attention_layers(model):
        if hasattr(spec.module, "adaption_prompt"):
            del spec.module.adaption_prompt
    model.set_attn_implementation(getattr(model, "groundtune_base_attention", "sdpa"))
    if hasattr(model, "groundtune_base_attention"):
        del model.groundtune_base_attention
    return model


def parameter_count(model, config: LlamaAdapterConfig) -> int:
    """A prompt [length, hidden] and a gate (one per head, or one) on each of the top `layers` layers."""
    specs = attention_layers(model, "LLaMA-Adapter")[-config.layers:]
    hidden = model.config.get_text_config().hidden_size
    return sum(config.length * hidden + (spec.num_heads if config.gate == "per_head" else 1) for spec in specs)


register(Method(LlamaAdapterConfig, attach, detach, describe=lambda config: {"layer": config.layers,
                                                                              "length": config.length},
                parameter_count=parameter_count, mixable=True, attach_mixed=attach_mixed, detach_mixed=detach_mixed,
                select_rows=select_rows))
