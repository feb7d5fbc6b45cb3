"""groundtune serve under 1, 4 and 8 concurrent streaming clients (the official openai client, 127.0.0.1) against
the same requests sent one at a time through plain `model.generate`, in the same run on the same loaded model.

Requests: grounded prompts (document start, last two turns, question: `build_prompt`) from the shipped doc2dial
validation dialogues, greedy, `--max-tokens` new tokens each, through /v1/completions with stream=true. Tokens are
the server's usage counts (and, for the baseline, the tokens generate returned up to EOS). Each client count
sends `--requests` requests in all (spread over the clients). The ratio is aggregate tokens/s of the server at 8
clients over tokens/s of the one-at-a-time baseline: what dynamic batching earns, minus HTTP and streaming
overhead. Target >= 2.0. The engine prefills a prompt prefix that a whole batch shares once (these prompts
share their document start): `prefix_tokens_shared` counts the prompt tokens that saved (`--no-shared-prefix`
turns it off).

    python bench/serve.py [--requests 16] [--max-tokens 32]
    python bench/serve.py --smoke   # seconds: a tiny random Llama and tokenizer, 4 requests

JSON keys: model, requests, max_tokens, sequential_tokens_per_s, tokens_per_s_at_1, tokens_per_s_at_4, tokens_per_s_at_8, tokens_per_s_ratio_vs_sequential_at_8, p50_ttft_s_at_8, p95_ttft_s_at_8, errors, batch_sizes, prefix_tokens_shared, smoke, skipped
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def grounded_prompts(n: int, doc_chars: int = 700) -> list[str]:
    from groundtune.data import asset_path
    from groundtune.data.doc2dial import load_dialogues, load_documents
    from groundtune.data.grounded import build_prompt, turn_contexts

    docs = load_documents(asset_path("doc2dial/doc2dial_doc.json"))
    prompts = []
    for ctx in turn_contexts(load_dialogues(asset_path("doc2dial/doc2dial_dial_validation.json"))):
        if ctx.question and ctx.doc_ids and ctx.doc_ids[0] in docs:
            prompts.append(build_prompt(docs[ctx.doc_ids[0]].text[:doc_chars], ctx.history[-2:], ctx.question))
        if len(prompts) == n:
            break
    while len(prompts) < n:
        prompts += prompts[: n - len(prompts)]
    return prompts


def sequential(model, tokenizer, prompts: list[str], max_tokens: int) -> dict:
    import torch

    from groundtune.data.sample import encode_prompt

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    tokens, start = 0, time.perf_counter()
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([encode_prompt(tokenizer, p)])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=eos)[0, ids.shape[1]:].tolist()
            tokens += out.index(eos) if eos in out else len(out)
    wall = time.perf_counter() - start
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16, help="requests per client count")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-shared-prefix", action="store_true", help="batch without prefilling a shared prefix once")
    args = parser.parse_args()
    if args.requests < 1 or args.max_tokens < 1:
        parser.error("--requests and --max-tokens must be >= 1")
    skipped = {}
    try:
        import openai  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        print(json.dumps({"smoke": args.smoke, "skipped": {"serve": f"not installed: {err.name}"}}))
        return

    from groundtune.serve import BackgroundServer, build
    from groundtune.serve.loadgen import drive

    if args.smoke:
        from _smoke import tiny_llama, tiny_tokenizer

        prompts = [f"question {i}: how do I renew my licence online?" for i in range(4)]
        tokenizer = tiny_tokenizer(prompts * 4)
        model, name, n_requests, max_tokens = tiny_llama(vocab_size=len(tokenizer)), "tiny-llama", 4, 4
    else:
        from groundtune.models import load_model

        model, tokenizer = load_model()
        name, n_requests, max_tokens = "smollm2-135m-instruct", args.requests, args.max_tokens
        prompts = grounded_prompts(n_requests)
    prompts = (prompts * n_requests)[:n_requests]
    # warm-up, then the baseline: the same requests one at a time through plain generate
    sequential(model, tokenizer, prompts[:1], 2)
    base = sequential(model, tokenizer, prompts, max_tokens)
    print(f"sequential generate: {base['tokens']} tokens in {base['wall_s']:.2f} s", file=sys.stderr, flush=True)
    app, engine = build(model, tokenizer, {}, base_name=name, max_batch=8, max_queue=64)
    if args.no_shared_prefix:
        engine.min_shared_prefix = 0
    runs = {}
    try:
        with BackgroundServer(app) as url:
            drive(url, name, prompts[:1], clients=1, max_tokens=2, requests_per_client=1)  # warm-up
            for clients in (1, 4, 8):
                per_client = -(-n_requests // clients)
                runs[clients] = drive(url, name, prompts, clients=clients, max_tokens=max_tokens,
                                      requests_per_client=per_client)
                print(f"{clients} client(s): {runs[clients]['tokens_per_s']} tokens/s", file=sys.stderr, flush=True)
    finally:
        engine.close()
    errors = sum(r["errors"] for r in runs.values())
    at8 = runs[8]
    result = {
        "model": name, "requests": n_requests, "max_tokens": max_tokens,
        "sequential_tokens_per_s": round(base["tokens_per_s"], 2),
        **{f"tokens_per_s_at_{c}": r["tokens_per_s"] for c, r in runs.items()},
        "tokens_per_s_ratio_vs_sequential_at_8": round(at8["tokens_per_s"] / base["tokens_per_s"], 3)
        if at8["tokens_per_s"] and base["tokens_per_s"] else None,
        "p50_ttft_s_at_8": at8["ttft_p50_s"], "p95_ttft_s_at_8": at8["ttft_p95_s"],
        "errors": errors, "batch_sizes": {str(k): v for k, v in sorted(engine.stats["batch_sizes"].items())},
        "prefix_tokens_shared": engine.stats["prefix_tokens_shared"],
        "smoke": args.smoke, "skipped": skipped,
    }
    if errors:
        result["error_messages"] = [m for r in runs.values() for m in r["error_messages"]][:5]
    for c, r in runs.items():
        print(f"{c} client(s): {r['requests']} requests, {r['completion_tokens']} tokens in {r['wall_s']} s = "
              f"{r['tokens_per_s']} tokens/s, TTFT p50 {r['ttft_p50_s']} s p95 {r['ttft_p95_s']} s, errors {r['errors']}")
    print(f"sequential generate: {base['tokens']} tokens in {base['wall_s']:.2f} s = {base['tokens_per_s']:.2f} tokens/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
