"""Shared by the training benches: this machine's matmul peaks, counted FLOPs of a training step, the padding share.

Not a bench itself (the leading underscore keeps it out of tests/test_bench_smoke.py's glob).

The FLOP count is the *useful* work of one training step on a frozen base, the same for every side it is
compared across, so that achieved GFLOP/s divided by the measured peak says how close a loop runs to the bound:
- every linear layer of the body (every nn.Linear but the LM head), per real (unpadded) token: 2 x params
  forward + 2 x params for the input gradient (frozen weights get no weight gradient), so 4 x params;
- causal attention scores and values, per layer and sequence of n real tokens: 2 x n^2 x width forward (QK^T and
  AV, half of each above the diagonal), twice that backward: 6 x n^2 x width;
- the LM head on supervised positions only: 4 x vocab x hidden per supervised token. Logits a loop computes
  elsewhere (HF Trainer computes them at every position) are waste, not work, and so are padded positions.
Trainable adapters add a few thousand parameters, which the count leaves out.
"""

from __future__ import annotations

import os
import time


def load_average() -> str:
    """The 1/5/15-minute load averages, printed beside every timing (the machine may be shared)."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def matmul_peak(dtype_name: str, n: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of an n x n x n matmul repeated for `seconds` on this machine's threads (after 3 warm-up runs)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * n ** 3 * runs / (time.perf_counter() - start) / 1e9


def matmul_peaks(seconds: float = 1.0, n: int = 1024) -> dict[str, float]:
    """The measured bf16 and fp32 matmul peaks (GFLOP/s): the roofline the training figures are held against."""
    return {name: matmul_peak(name, n, seconds) for name in ("bf16", "fp32")}


def model_shape(model) -> dict:
    """What the FLOP count needs: body linear parameters, layers, attention width, vocabulary and hidden size."""
    from torch import nn

    head = model.get_output_embeddings()
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m is not head)
    return {"linear_params": linear, "layers": config.num_hidden_layers, "attention_width": heads * head_dim,
            "vocab": head.weight.shape[0], "hidden": head.weight.shape[1]}


def step_flops(shape: dict, lengths: list[int], supervised: int) -> float:
    """Useful FLOPs of one training forward + backward over rows of `lengths` real tokens (see the docstring)."""
    tokens = sum(lengths)
    return (4 * shape["linear_params"] * tokens
            + 6 * shape["layers"] * shape["attention_width"] * sum(n * n for n in lengths)
            + 4 * shape["vocab"] * shape["hidden"] * supervised)


def padding_share(lengths: list[int], width: int) -> float:
    """The share of a [rows, width] batch that is padding."""
    return 1 - sum(lengths) / (len(lengths) * width) if lengths else 0.0
