"""Batched greedy or beam generation with whatever adapter is attached; prompts encoded as in training."""

from __future__ import annotations

import torch

from groundtune.config import GenerationConfig


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], gen: GenerationConfig | None = None, *,
             max_prompt_tokens: int = 1024, progress: bool = True) -> list[str]:
    """Continue each prompt; returns only the new text, stripped. Prompts are left-padded in length-sorted
    batches (less padding), and the outputs come back in the input order."""
    from tqdm.auto import tqdm

    from groundtune.data.collate import pad_rows, pad_token_id
    from groundtune.data.sample import encode_prompt
    from groundtune.models import contiguous_lm_head

    contiguous_lm_head(model)  # a frozen 262k-vocabulary head otherwise runs as a per-row batched matmul
    gen = gen or GenerationConfig()
    # the same prompt ids as in training
    encoded = [encode_prompt(tokenizer, p, max_prompt_tokens) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    pad = pad_token_id(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(order), gen.batch_size), disable=not progress, desc="generate", unit="batch"):
        idx = order[start:start + gen.batch_size]
        ids, mask = pad_rows([encoded[i] for i in idx], pad)
        width = ids.shape[1]
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=gen.max_new_tokens,
                             num_beams=gen.num_beams, do_sample=False, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(idx):
            outputs[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
    model.train(was_training)
    return outputs
