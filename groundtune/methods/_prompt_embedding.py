"""What the prompt family shares: prompt tuning, DePT and ACCEPT are one transform of the input embeddings.

All three change only what enters the first layer:

    embeds = embed(text) + U[position]        (the added part: DePT's A·B, ACCEPT's SCAP; positions < max_length)
    embeds = [P ; embeds]                      (the prompt: m trained vectors put before the text)

- Prompt tuning (Lester et al., 2021): P is an m × hidden table.
- DePT (Shi & Lipani, 2024): P plus U = A·B with A [max_length, rank] and B [rank, hidden].
- ACCEPT (Lin et al., 2024): hidden = K·t. Each of the K subspaces has a codebook of r codewords of t dims,
  shared by all rows; row i's k-th sub-vector is the soft combination Σ_j w[i,k,j] · c[k,j] (no argmax).
  SCPP builds P this way (m·K·r + r·hidden parameters), SCAP builds U this way (ℓ·K'·r' + r'·hidden); without
  SCAP the added part is DePT's A·B. Prompt and added part train at two learning rates.

peft has prompt tuning but neither DePT nor ACCEPT, and the three differ only in how P and U are built (each in
its own file: prompt_tuning.py, dept.py, accept.py), so one transform serves them all, on decoders and encoders
alike: a forward pre-hook on the top-level model turns
`input_ids` into `inputs_embeds` and fixes up what the longer sequence needs.

Decoders (causal LMs, for training and `generate()` with a KV cache, left or right padding): the prompt goes
first, after any left padding. Masks, positions and labels are given in the text's coordinates and the hook shifts them: ones are put
before the attention mask, -100 before the labels, and the text's positions (counted over its attention mask,
so that a left-padded row sees exactly what it sees unpadded) move up by m, the prompt taking 0..m-1. On
decoding steps (a non-empty cache) only the mask and positions change. The logits come back for the text's
positions only, aligned with `input_ids` (peft returns the prompt positions too).

Encoders (BERT-like sequence classifiers): the prompt goes right after the first token ([CLS]), which is the
token the classifier reads. Positions follow the practice of DePT/ACCEPT's T5 code and of peft on BERT: the
prompted sequence is numbered from 0, so the prompt takes positions 1..m and the text after [CLS] moves up by m
(T5's relative positions see the same shift). The added part is indexed by the text's own positions, [CLS] = 0.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from groundtune.kvcache import cache_from, past_length
from groundtune.methods import Method
from groundtune.methods._in_place import head_parameters, restore_in_place, task_head, train_in_place
from groundtune.errors import ConfigError

MODULE = "groundtune_prompt"  # the transform's attribute on the model: parameter names start with it
_HOOKS = "_groundtune_prompt_hooks"
INITS = ("text", "vocab", "random")


def check_prompt(config) -> None:
    name = type(config).__name__
    if config.length < 1:
        raise ConfigError(f"{name}: length must be >= 1, got {config.length}")
    if config.init not in INITS:
        raise ConfigError(f"{name}: init must be one of {', '.join(INITS)}, not {config.init!r}")
    if config.init == "text" and not config.init_text:
        raise ConfigError(f"{name}: init='text' needs init_text (e.g. 'Classify if the sentences are paraphrases:')")



# ---- the ways to build a table of n vectors ----

class DenseTable(nn.Module):
    """n vectors stored as they are (prompt tuning): n·hidden parameters."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(init.detach().clone().float())

    def forward(self) -> torch.Tensor:
        return self.weight


class LowRankTable(nn.Module):
    """A [n, rank] · B [rank, hidden] (DePT): A Kaiming-uniform, B zero, so training starts from the base model."""

    def __init__(self, n: int, rank: int, hidden: int):
        super().__init__()
        self.a = nn.Parameter(torch.empty(n, rank))
        self.b = nn.Parameter(torch.zeros(rank, hidden))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))

    def forward(self) -> torch.Tensor:
        return self.a @ self.b


class CodebookTable(nn.Module):
    """ACCEPT's product-quantised table: weights [n, K, r], codebook [K, r, t]; row i = concat_k Σ_j w[i,k,j] c[k,j].

    n·K·r + K·r·t = n·K·r + r·hidden parameters. Both are Kaiming-uniform (a=√5) as in the paper's code; with
    zero_codebook the codebook starts at zero instead, so that an added part starts from the base model.
    """

    def __init__(self, n: int, subspaces: int, codewords: int, hidden: int, zero_codebook: bool = False):
        super().__init__()
        if hidden % subspaces:
            raise ConfigError(f"ACCEPT: {subspaces} subspaces do not divide the hidden size {hidden}; pick a divisor")
        self.weights = nn.Parameter(torch.empty(n, subspaces, codewords))
        self.codebook = nn.Parameter(torch.empty(subspaces, codewords, hidden // subspaces))
        nn.init.kaiming_uniform_(self.weights, a=math.sqrt(5))
        if zero_codebook:
            nn.init.zeros_(self.codebook)
        else:
            nn.init.kaiming_uniform_(self.codebook, a=math.sqrt(5))

    def forward(self) -> torch.Tensor:
        n, k, _ = self.weights.shape
        return torch.einsum("nkr,krt->nkt", self.weights, self.codebook).reshape(n, -1)


class PromptTransform(nn.Module):
    """The prompt P (put before the text) and the added part U (added to the first max_length text positions)."""

    def __init__(self, prompt: nn.Module | None, update: nn.Module | None):
        super().__init__()
        self.prompt = prompt
        self.update = update

    def prompt_vectors(self) -> torch.Tensor | None:
        return None if self.prompt is None else self.prompt()

    def added(self, positions: torch.Tensor) -> torch.Tensor | None:
        """U at each position [B, T] -> [B, T, hidden]; zero at positions outside 0..max_length-1."""
        if self.update is None:
            return None
        table = self.update()
        n = table.shape[0]
        table = torch.cat([table, table.new_zeros(1, table.shape[1])])
        index = torch.where((positions >= 0) & (positions < n), positions, n)
        return table[index]


# ---- what the tables start from ----

def hidden_size(model) -> int:
    return model.get_input_embeddings().weight.shape[1]

def initial_prompt(model, config) -> torch.Tensor:
    embedding = model.get_input_embeddings()
    weight = embedding.weight
    m = config.length
    if config.init == "random":
        w = weight.detach().float()
        return torch.randn(m, w.shape[1], device=w.device) * w.std() + w.mean()
    if config.init == "vocab":
        ids = torch.randint(0, weight.shape[0], (m,), device=weight.device)
    else:
        ids = torch.tensor(_text_ids(model, config), device=weight.device)
        ids = ids.repeat(math.ceil(m / len(ids)))[:m]  # peft's way: repeat the text until it fills the prompt
    with torch.no_grad():
        return embedding(ids).float()  # through the module, so scaled embeddings (Gemma) come out scaled


def _text_ids(model, config) -> list[int]:
    from transformers import AutoTokenizer

    source = config.tokenizer or getattr(model.config, "name_or_path", None)
    if not source:
        raise ConfigError(
            f"{type(config).__name__}(init='text') needs a tokenizer: set tokenizer= to the model's folder or hub id "
            "(this model does not say where it was loaded from), or use init='vocab'"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{type(config).__name__}(init='text'): could not load a tokenizer from {source!r} ({type(err).__name__}); "
            "set tokenizer= to a local tokenizer folder, or use init='vocab'"
        ) from None
    ids = tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"init_text {config.init_text!r} gives no tokens")
    return ids

# ---- the hook ----

def is_bidirectional(model) -> bool:
    """True for encoders (BERT-like): their self-attention modules say is_causal=False."""
    for module in model.modules():
        causal = getattr(module, "is_causal", None)
        if isinstance(causal, bool) and not getattr(module, "is_cross_attention", False):
            return not causal
    return not model.can_generate()


def _text_positions(kwargs, batch: int, length: int, past: int, device) -> torch.Tensor:
    """Each token's position in the text alone: the caller's position_ids, else counted over the attention mask."""
    if kwargs.get("position_ids") is not None:
        return kwargs["position_ids"].to(device).expand(batch, -1)
    mask = kwargs.get("attention_mask")
    if mask is not None:
        return (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:].to(device)
    return torch.arange(past, past + length, device=device).expand(batch, -1)


def _leading_padding(mask, batch: int, device) -> torch.Tensor:
    """How many padding columns open each row (0 without a mask, or for right padding)."""
    if mask is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    return (mask.to(device).long().cumsum(-1) == 0).sum(-1)


def _prompt_after_padding(lead: torch.Tensor, m: int, n: int, device) -> torch.Tensor:
    """Gather index [B, m + n] from [P (m) ; text (n)] to [pad (lead) ; P ; rest of the text]."""
    pos = torch.arange(m + n, device=device).expand(len(lead), -1)
    lead = lead[:, None]
    return torch.where(pos < lead, pos + m, torch.where(pos < lead + m, pos - lead, pos))


def _place(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    index = order if x.dim() == 2 else order[..., None].expand(-1, -1, x.shape[-1])
    return x.gather(1, index.to(x.device))


def _decoder_inputs(model, transform, kwargs, embeds):
    B, T = embeds.shape[:2]
    prompt = transform.prompt_vectors()
    m = 0 if prompt is None else prompt.shape[0]
    past = past_length(cache_from(kwargs))
    prefill = past == 0
    text_past = past - m if not prefill else 0  # the cache holds the prompt too
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() != 2:
        raise ConfigError(f"prompt methods need a 2-D attention mask [batch, tokens], got {mask.dim()}-D")
    if mask is not None and mask.shape[1] != text_past + T:
        raise ConfigError(
            f"attention_mask has {mask.shape[1]} columns, expected {text_past + T} (the text so far): give masks "
            "for the text only; the prompt's positions are added by the prompt method"
        )
    positions = _text_positions(kwargs, B, T, text_past, embeds.device)
    added = transform.added(positions)
    if added is not None:
        if mask is not None:
            added = added * mask[:, -T:, None].to(added.dtype)  # padding stays exactly as it was
        embeds = embeds + added.to(embeds.dtype)
    if m:
        # The prompt goes right after each row's left padding, next to the text: [pad…, P, text]. Put before the
        # padding, a sliding-window layer would see it farther away the more a row is padded, and a row's output
        # would depend on what it is batched with. Every tensor is laid out by the same index, prefill or decode.
        lead = _leading_padding(mask, B, embeds.device)
        order = _prompt_after_padding(lead, m, mask.shape[1] if mask is not None else T, embeds.device)
        if mask is not None:
            kwargs["attention_mask"] = _place(torch.cat([mask.new_ones(B, m), mask], dim=1), order)
        if prefill:
            embeds = _place(torch.cat([prompt.to(embeds.dtype).expand(B, -1, -1), embeds], dim=1), order)
            positions = _place(torch.cat([torch.arange(m, device=embeds.device).expand(B, -1), positions + m], 1), order)
            labels = kwargs.get("labels")
            if labels is not None and labels.dim() == 2 and labels.shape[1] == T:
                kwargs["labels"] = _place(torch.cat([labels.new_full((B, m), -100), labels], dim=1), order)
            if kwargs.get("token_type_ids") is not None:
                tt = kwargs["token_type_ids"]
                kwargs["token_type_ids"] = _place(torch.cat([tt.new_zeros(B, m), tt], dim=1), order)
            text = torch.arange(T, device=embeds.device)
            model._groundtune_text_index = text + m * (text >= lead[:, None])  # where each text token now sits
        else:
            positions = positions + m
    if "position_ids" in model._groundtune_forward_args:
        kwargs["position_ids"] = positions
    return embeds, m if prefill else 0


def _encoder_inputs(model, transform, kwargs, embeds):
    B, T = embeds.shape[:2]
    prompt = transform.prompt_vectors()
    m = 0 if prompt is None else prompt.shape[0]
    mask = kwargs.get("attention_mask")
    if mask is not None and m and not bool(mask[:, 0].all()):
        raise ConfigError("encoder inputs must be right-padded: the prompt goes after the first ([CLS]) token")
    positions = kwargs.get("position_ids")
    text_positions = positions.expand(B, -1) if positions is not None else torch.arange(T, device=embeds.device).expand(B, -1)
    added = transform.added(text_positions)
    if added is not None:
        if mask is not None:
            added = added * mask[:, :, None].to(added.dtype)
        embeds = embeds + added.to(embeds.dtype)
    if not m:
        return embeds, 0
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and T + m > limit:
        raise ConfigError(f"{T} tokens + a prompt of {m} exceed the model's {limit} positions: truncate inputs to "
                         f"{limit - m} tokens")

    def insert(x, filler):  # after the first token
        return torch.cat([x[:, :1], filler, x[:, 1:]], dim=1)

    embeds = insert(embeds, prompt.to(embeds.dtype).expand(B, -1, -1))
    if mask is not None:
        kwargs["attention_mask"] = insert(mask, mask.new_ones(B, m))
    if kwargs.get("token_type_ids") is not None:
        kwargs["token_type_ids"] = insert(kwargs["token_type_ids"], kwargs["token_type_ids"].new_zeros(B, m))
    if positions is not None:
        positions = positions.expand(B, -1)
        prompt_positions = positions[:, :1] + 1 + torch.arange(m, device=positions.device)
        kwargs["position_ids"] = torch.cat([positions[:, :1], prompt_positions, positions[:, 1:] + m], dim=1)
    return embeds, 0


def _pre_hook(model, args, kwargs):
    names = model._groundtune_forward_args
    if len(args) > len(names):
        raise TypeError(f"{type(model).__name__} got {len(args)} positional arguments; pass them by name")
    kwargs = {**dict(zip(names, args)), **kwargs}
    transform = getattr(model, MODULE)
    model._groundtune_text_index = None
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        if kwargs.get("input_ids") is None:
            raise ConfigError("a prompt method needs input_ids or inputs_embeds")
        embeds = model.get_input_embeddings()(kwargs["input_ids"])
    if model._groundtune_bidirectional:
        embeds, added = _encoder_inputs(model, transform, kwargs, embeds)
    else:
        embeds, added = _decoder_inputs(model, transform, kwargs, embeds)
    kwargs["input_ids"], kwargs["inputs_embeds"] = None, embeds
    model._groundtune_trim = embeds.shape[1] - added if added else None
    model._groundtune_length = embeds.shape[1]
    return (), kwargs


def _post_hook(model, args, kwargs, output):
    keep = model._groundtune_trim
    index, model._groundtune_text_index = model._groundtune_text_index, None
    logits = getattr(output, "logits", None)
    if keep is not None and logits is not None and logits.dim() == 3 and logits.shape[1] > keep:
        if index is not None and logits.shape[1] == model._groundtune_length:
            # every position came back: take each text token's own, wherever its row's prompt sits
            output.logits = logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]).to(logits.device))
        else:
            output.logits = logits[:, -keep:]  # logits_to_keep: the last positions are the text's, as before
    return output

# ---- the method contract ----

def attach_transform(model, transform: PromptTransform):
    """Put `transform` before the model's first layer (the shared attach of the three methods)."""
    transform = transform.to(model.get_input_embeddings().weight.device)
    setattr(model, MODULE, transform)
    model._groundtune_forward_args = list(inspect.signature(type(model).forward).parameters)[1:]
    model._groundtune_bidirectional = is_bidirectional(model)
    model._groundtune_trim = model._groundtune_text_index = model._groundtune_length = None
    setattr(model, _HOOKS, [model.register_forward_pre_hook(_pre_hook, with_kwargs=True),
                            model.register_forward_hook(_post_hook, with_kwargs=True)])
    train_in_place(model, task_head(model))  # an encoder's classifier trains alongside
    return model


def detach(model):
    for handle in getattr(model, _HOOKS, []):
        handle.remove()
    for name in (MODULE, _HOOKS, "_groundtune_forward_args", "_groundtune_bidirectional", "_groundtune_trim",
                 "_groundtune_text_index", "_groundtune_length"):
        if hasattr(model, name):
            delattr(model, name)
    restore_in_place(model)
    return model


def optimizer_groups(model, config, lr: float) -> list[dict]:
    """The prompt (and an encoder's task head) at lr; the added part at config.update_lr (DePT, ACCEPT)."""
    update = getattr(model, MODULE).update
    update_params = set() if update is None else {id(p) for p in update.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in update_params]
    groups = [{"params": rest, "lr": lr, "name": "prompt"}]
    if update is not None:
        groups.append({"params": list(update.parameters()), "lr": getattr(config, "update_lr", None) or lr,
                       "name": "update"})
    return groups


def prompt_method(config: type, build, describe, parameter_count) -> Method:
    """The registry entry of a prompt-family method: `build(model, config)` makes its PromptTransform;
    `parameter_count(config, hidden)` counts the transform's parameters (the task head is added here)."""
    return Method(config, lambda model, c: attach_transform(model, build(model, c)), detach,
                  optimizer_groups=optimizer_groups, describe=describe,
                  # the prompt vectors come first, so a shared text prefix is not a shared prefix of the input.
                  # Not mixable yet: each row's vectors could be its own, but rows whose prompts differ in length
                  # need a per-row cache layout the engine does not have, so each adapter gets its own batches.
                  virtual_tokens=lambda c: c.length,
                  parameter_count=lambda model, c: parameter_count(c, hidden_size(model)) + head_parameters(model))
