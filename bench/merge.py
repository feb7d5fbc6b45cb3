"""Chat Vector merge: groundtune against mergekit's task_arithmetic, on synthetic Llama-shaped checkpoints.

Builds three sharded checkpoints (base, chat, cp) of at least --size-gb each in a temporary folder, then runs,
each in its own subprocess so peak RSS is clean:
- an IO floor: plain file copies that read all three models and write one (buffered reads and writes, no
  kernel copy shortcuts);
- groundtune: cp + w (chat − base);
- mergekit task_arithmetic with base_model = base, models = [cp weight 1, chat weight w], normalize false:
  base + 1 (cp − base) + w (chat − base), the same arithmetic.
Times are of the merge call inside each subprocess (imports excluded); peak RSS is the subprocess's VmHWM.
The outputs are compared tensor by tensor, and everything is deleted at the end. Last line: one JSON object.

    pip install mergekit   # or: pip install -e .[bench]
    python bench/merge.py [--size-gb 3 --dtype float32 --ratio 0.5 --workdir /var/tmp]
    python bench/merge.py --smoke   # seconds: 3 x ~1 MB checkpoints (hidden 64, vocab 512), 200 kB shards

With --dtype bfloat16 the two results may differ by one bfloat16 step where float32 rounding of the two
formulas lands on either side of a bfloat16 boundary; float32 checkpoints compare the arithmetic itself.
Without mergekit its figures are null and `skipped` says why (ours and the IO floor still run).

JSON keys: time_ratio_vs_mergekit, peak_rss_ratio_vs_mergekit, time_ratio_vs_io_floor, max_abs_diff_vs_mergekit,
ours_s, mergekit_s, io_floor_s, ours_peak_rss_mb, mergekit_peak_rss_mb, io_floor_peak_rss_mb, rss_bound_mb,
largest_tensor_mb, model_gb, dtype, ratio, smoke, skipped
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

# Llama-shaped tensors: (hidden, intermediate, vocab, heads); 3B-class for the bench, a few kB each for --smoke.
FULL_SHAPE = dict(hidden=2048, intermediate=5504, vocab=32000, heads=16)
SMOKE_SHAPE = dict(hidden=64, intermediate=96, vocab=512, heads=4)
HIDDEN, INTERMEDIATE, VOCAB, HEADS = FULL_SHAPE.values()


def set_shape(hidden: int, intermediate: int, vocab: int, heads: int) -> None:
    global HIDDEN, INTERMEDIATE, VOCAB, HEADS
    HIDDEN, INTERMEDIATE, VOCAB, HEADS = hidden, intermediate, vocab, heads


def llama_specs(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    specs = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        specs += [(p + "input_layernorm.weight", (HIDDEN,)), (p + "post_attention_layernorm.weight", (HIDDEN,))]
        specs += [(p + f"self_attn.{n}_proj.weight", (HIDDEN, HIDDEN)) for n in "qkvo"]
        specs += [(p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)), (p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
                  (p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE))]
    return specs + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def build_models(root: Path, size_gb: float, dtype: torch.dtype, shard_size: str) -> dict[str, Path]:
    """base, chat = base + noise, cp = base + other noise; written with groundtune's streaming shard writer."""
    from groundtune.merge.checkpoint import DTYPE_CODES
    from groundtune.merge.writer import ShardWriter, TensorSpec, parse_size, plan_shards, shard_names, write_index

    item = dtype.itemsize
    per_layer = (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN) * item
    layers = max(1, math.ceil((size_gb * 1e9 - (2 * VOCAB + 1) * HIDDEN * item) / per_layer))
    specs = [TensorSpec(n, DTYPE_CODES[dtype], s) for n, s in llama_specs(layers)]
    shards = plan_shards(specs, parse_size(shard_size))
    names = shard_names("model", len(shards))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
              "intermediate_size": INTERMEDIATE, "num_hidden_layers": layers, "num_attention_heads": HEADS,
              "num_key_value_heads": HEADS, "vocab_size": VOCAB, "max_position_embeddings": 4096,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "dtype": str(dtype).removeprefix("torch.")}
    folders = {k: root / k for k in ("base", "chat", "cp")}
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        write_index(folder, "model", shards, names)
    gen = torch.Generator().manual_seed(0)
    for shard, name in zip(shards, names):
        writers = {k: ShardWriter(f / name, shard) for k, f in folders.items()}
        for spec in shard:
            base = torch.randn(spec.shape, generator=gen).mul_(0.02)
            for key, scale in (("base", 0.0), ("chat", 0.002), ("cp", 0.002)):
                t = base if key == "base" else base + torch.randn(spec.shape, generator=gen).mul_(scale)
                writers[key].write(t.to(dtype).flatten())
        for w in writers.values():
            w.close()
    print(f"built 3 x {layers}-layer Llama-shaped checkpoints, {sum(s.nbytes for s in specs) / 1e9:.2f} GB each, "
          f"{len(shards)} shards, largest tensor {max(s.nbytes for s in specs) / 1e6:.0f} MB", file=sys.stderr)
    return folders


# Each runner is a script for a fresh interpreter: it prints {"seconds", "peak_rss_mb"} as its last line. Peak RSS
# is VmHWM, the high-water mark of this process's own memory map: ru_maxrss would also count the parent's RSS at
# fork time, which exec carries over.
_REPORT = """
import json, re
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": hwm}))
"""

IO_FLOOR = """
import os, time
from pathlib import Path
base, chat, cp, out = (Path(p) for p in ARGS)
buf = bytearray(64 << 20)
view = memoryview(buf)
start = time.perf_counter()
out.mkdir()
for folder in (base, chat, cp):
    for path in sorted(folder.iterdir()):
        dest = open(out / path.name, "wb") if folder == cp else None
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                if dest:
                    dest.write(view[:n])
        if dest:
            dest.close()
seconds = time.perf_counter() - start
"""

OURS = """
import time
from groundtune.merge import chat_vector
base, chat, cp, out = ARGS
start = time.perf_counter()
chat_vector(base, chat, cp, out, ratio=RATIO, max_shard_size="5GB", progress=False)
seconds = time.perf_counter() - start
"""

MERGEKIT = """
import time, yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
base, chat, cp, out = ARGS
config = MergeConfiguration.model_validate(yaml.safe_load(CONFIG))
options = MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, out_shard_size=5 * 10**9)
start = time.perf_counter()
run_merge(config, out, options)
seconds = time.perf_counter() - start
"""


def mergekit_config(folders: dict[str, Path], ratio: float, dtype: str) -> str:
    return textwrap.dedent(f"""\
        merge_method: task_arithmetic
        base_model: {folders['base']}
        models:
          - model: {folders['cp']}
            parameters: {{weight: 1.0}}
          - model: {folders['chat']}
            parameters: {{weight: {ratio}}}
        parameters: {{normalize: false}}
        dtype: float32
        out_dtype: {dtype}
    """)


def run(script: str, args: list[str], **consts) -> dict:
    code = script.replace("ARGS", repr(args))
    for key, value in consts.items():
        code = code.replace(key, repr(value))
    os.sync()  # the previous run's dirty pages are written back before this one starts the clock
    proc = subprocess.run([sys.executable, "-c", code + _REPORT], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"runner failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def max_abs_diff(ours: Path, theirs: Path) -> float:
    from safetensors import safe_open

    def locate(folder: Path) -> dict[str, Path]:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        with safe_open(folder / "model.safetensors", "pt") as f:
            return {k: folder / "model.safetensors" for k in f.keys()}

    a, b = locate(ours), locate(theirs)
    if set(a) != set(b):
        raise RuntimeError(f"the outputs hold different tensors: {sorted(set(a) ^ set(b))[:5]}")
    worst = 0.0
    for name in a:
        with safe_open(a[name], "pt") as fa, safe_open(b[name], "pt") as fb:
            x, y = fa.get_tensor(name), fb.get_tensor(name)
            if x.dtype != y.dtype:
                raise RuntimeError(f"{name}: {x.dtype} in ours, {y.dtype} in mergekit's")
            worst = max(worst, (x.double() - y.double()).abs().max().item())
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=3.0, help="size of each synthetic checkpoint")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--ratio", type=float, default=0.5, help="chat vector weight w")
    parser.add_argument("--shard-size", default="2GB", help="shard size of the synthetic inputs")
    parser.add_argument("--workdir", default=None, help="folder for the temporary checkpoints (on disk, not tmpfs)")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run on ~1 MB checkpoints (same code path)")
    args = parser.parse_args()
    if args.smoke:
        set_shape(**SMOKE_SHAPE)
        args.size_gb, args.shard_size = 0.001, "200KB"
    skipped: dict[str, str] = {}
    # find_spec, not import: mergekit takes seconds to import and runs in its own subprocess anyway
    has_mergekit = importlib.util.find_spec("mergekit") is not None
    if not has_mergekit:
        skipped["mergekit"] = "not installed (`pip install mergekit` or `pip install -e .[bench]`)"
        print("mergekit is not installed: timing ours and the IO floor only", file=sys.stderr)

    root = Path(tempfile.mkdtemp(prefix="groundtune-merge-bench-", dir=args.workdir))
    try:
        folders = build_models(root, args.size_gb, getattr(torch, args.dtype), args.shard_size)
        inputs = [str(folders[k]) for k in ("base", "chat", "cp")]
        floor = run(IO_FLOOR, inputs + [str(root / "floor")])
        shutil.rmtree(root / "floor")
        ours = run(OURS, inputs + [str(root / "ours")], RATIO=args.ratio)
        theirs, diff = None, None
        if has_mergekit:
            theirs = run(MERGEKIT, inputs + [str(root / "mergekit")],
                         CONFIG=mergekit_config(folders, args.ratio, args.dtype))
            diff = max_abs_diff(root / "ours", root / "mergekit")
        model_bytes = sum(p.stat().st_size for p in folders["cp"].glob("*.safetensors"))
        largest = VOCAB * HIDDEN * getattr(torch, args.dtype).itemsize
    finally:
        shutil.rmtree(root, ignore_errors=True)
    def vs(key: str):
        return round(ours[key] / theirs[key], 3) if theirs else None

    result = {
        "time_ratio_vs_mergekit": vs("seconds"),
        "peak_rss_ratio_vs_mergekit": vs("peak_rss_mb"),
        "time_ratio_vs_io_floor": round(ours["seconds"] / floor["seconds"], 3),
        "max_abs_diff_vs_mergekit": diff,
        "ours_s": round(ours["seconds"], 2), "mergekit_s": round(theirs["seconds"], 2) if theirs else None,
        "io_floor_s": round(floor["seconds"], 2),
        "ours_peak_rss_mb": round(ours["peak_rss_mb"]),
        "mergekit_peak_rss_mb": round(theirs["peak_rss_mb"]) if theirs else None,
        "io_floor_peak_rss_mb": round(floor["peak_rss_mb"]),
        "rss_bound_mb": round(2 * largest / 2**20 + 500), "largest_tensor_mb": round(largest / 2**20),
        "model_gb": round(model_bytes / 1e9, 2), "dtype": args.dtype, "ratio": args.ratio,
        "smoke": args.smoke, "skipped": skipped,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
