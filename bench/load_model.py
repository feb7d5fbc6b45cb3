"""Loading the embedded default: first load (GGUF dequantized, safetensors copy cached) vs the loads after it.

Each load runs in a fresh subprocess against an empty cache folder, so nothing is shared in memory.
The last line is one JSON object with `second_load_speedup` (first / median of the later loads; target >= 5).

    python bench/load_model.py [--repeats 3]
    python bench/load_model.py --smoke   # seconds: a tiny GGUF stand-in written here, 1 cached load

--smoke writes a tiny random Llama in the embedded model's GGUF layout (llama architecture, gpt2 BPE tokenizer,
Q8_0 embeddings, Q4_1 matrices, F32 norms) and times `groundtune.load_model(that .gguf)`: the same resolve,
dequantize-and-cache and cached-load code as the embedded default, on a file of a few hundred kB.

JSON keys: model, first_load_s, cached_load_s, second_load_speedup, smoke, skipped
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# The child loads MODEL: None (the embedded default) or the path of a .gguf file.
CHILD = ("import time; t = time.perf_counter(); import groundtune as gt; gt.load_model(MODEL); "
         "print(time.perf_counter() - t)")


def timed_load(cache: str, model: str | None = None) -> float:
    env = dict(os.environ, GROUNDTUNE_CACHE=cache, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", CHILD.replace("MODEL", repr(model))], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"loading {model or 'the embedded default'} failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A tiny random Llama (hidden 64, 2 layers, 4 query / 2 KV heads) with a byte-level BPE tokenizer, laid out
    as the embedded SmolLM2 GGUF is: Q8_0 token embeddings (tied), Q4_1 matrices, F32 norms, gpt2 tokenizer."""
    import json

    import gguf
    import numpy as np

    from _smoke import tiny_tokenizer

    hidden, ffn, layers, heads, kv_heads = 64, 128, 2, 4, 2
    texts = ["the document says the answer is in the second section of the page",
             "can I renew my license online? yes, you can renew it online or by mail"] * 4
    backend = json.loads(tiny_tokenizer(texts, vocab_size=320).backend_tokenizer.to_str())
    vocab = sorted(backend["model"]["vocab"].items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    tokens = [t for t, _ in vocab]
    special = {"<pad>", "<s>", "</s>"}

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(100000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(False)

    rng = np.random.default_rng(seed)
    Q = gguf.GGMLQuantizationType

    def add(name: str, shape: tuple[int, ...], qtype=Q.Q4_1):
        data = (rng.standard_normal(shape) * (0.02 if len(shape) > 1 else 0.1) + (0 if len(shape) > 1 else 1))
        data = data.astype(np.float32)
        if qtype == Q.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    add("token_embd.weight", (len(tokens), hidden), Q.Q8_0)
    for i in range(layers):
        b = f"blk.{i}."
        add(b + "attn_norm.weight", (hidden,), Q.F32)
        add(b + "ffn_norm.weight", (hidden,), Q.F32)
        add(b + "attn_q.weight", (hidden, hidden))
        add(b + "attn_k.weight", (hidden // heads * kv_heads, hidden))
        add(b + "attn_v.weight", (hidden // heads * kv_heads, hidden))
        add(b + "attn_output.weight", (hidden, hidden))
        add(b + "ffn_gate.weight", (ffn, hidden))
        add(b + "ffn_up.weight", (ffn, hidden))
        add(b + "ffn_down.weight", (hidden, ffn))
    add("output_norm.weight", (hidden,), Q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="cached loads timed after the first")
    ap.add_argument("--smoke", action="store_true", help="seconds-long run on a tiny GGUF stand-in (same code path)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        model = None
        if args.smoke:
            args.repeats = 1
            model = str(write_tiny_gguf(Path(cache) / "tiny-llama.Q4_1.gguf"))
        first = timed_load(cache, model)
        later = [timed_load(cache, model) for _ in range(args.repeats)]
    second = statistics.median(later)
    print(f"first load (dequantize + cache) {first:.1f}s; cached loads {', '.join(f'{s:.1f}s' for s in later)}")
    print(json.dumps({"model": "tiny GGUF stand-in (smoke)" if args.smoke else "embedded SmolLM2-135M-Instruct",
                      "first_load_s": round(first, 2), "cached_load_s": round(second, 2),
                      "second_load_speedup": round(first / second, 1), "smoke": args.smoke, "skipped": {}}))


if __name__ == "__main__":
    main()
