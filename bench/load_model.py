"""Loading the embedded default: first load (GGUF dequantized, safetensors copy cached) vs the loads after it.

Each load runs in a fresh subprocess against an empty cache folder, so nothing is shared in memory.
The last line is one JSON object with `second_load_speedup` (first / median of the later loads; target >= 5).

    python bench/load_model.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = ("import time; t = time.perf_counter(); import groundtune as gt; gt.load_model(); "
         "print(time.perf_counter() - t)")


def timed_load(cache: str) -> float:
    env = dict(os.environ, GROUNDTUNE_CACHE=cache, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="cached loads timed after the first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        first = timed_load(cache)
        later = [timed_load(cache) for _ in range(args.repeats)]
    second = statistics.median(later)
    print(f"first load (dequantize + cache) {first:.1f}s; cached loads {', '.join(f'{s:.1f}s' for s in later)}")
    print(json.dumps({"first_load_s": round(first, 2), "cached_load_s": round(second, 2),
                      "second_load_speedup": round(first / second, 1)}))


if __name__ == "__main__":
    main()
