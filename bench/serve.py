"""groundtune serve's engine against its targets, side by side in one run on one loaded model, each figure next to
its physical bound.

The bound: on a CPU prefill is compute-bound, so batching cannot speed it up. Perfect batching would spend the
measured single-request prefill cost per token on every prompt token, and one measured batched decoding step
(at the run's client count) per `clients` new tokens: bound tokens/s = new tokens / (prompt tokens x prefill
s/token + new tokens / clients x step s). Both costs are measured here, on this model, before the runs.

1. Realistic load: retrieval on (a BM25 index over the shipped doc2dial documents; each question retrieves its
   own passages, so no shared prefix), 8 streaming chat clients, `--max-tokens` (64) new tokens, arrivals spread
   over 2 s. Targets: tokens/s >= 85% of the bound and >= 2x sequential `model.generate` over the same prompts.
2. No head-of-line blocking: a short request for a LoRA adapter sent while a `--long-tokens` (1000) generation
   streams. Target: it finishes within 2x its latency on an idle server.
3. bf16: prefill tokens/s in bfloat16 against float32 (single requests, the shipped grounded prompts) and the
   greedy answers' agreement (exact, over `--max-tokens` tokens). Target: >= 1.8x, on a CPU with AVX512-BF16/AMX.
4. Mixed adapters: 8 clients on 4 adapters (2 LLaMA-Adapter, 2 LoRA; random, as trained ones cost the same),
   `--max-tokens` new tokens, against the same engine batching one adapter at a time. Target: >= 1.8x.

Time to first token (p50/p95) is printed with every server figure, and the load average beside the timings (the
machine may be shared). The server runs in `--dtype` (auto: the serving default).

    python bench/serve.py [--max-tokens 64] [--long-tokens 1000] [--requests-per-client 2] [--bf16-prompts 8]
                          [--dtype auto]
    python bench/serve.py --smoke   # seconds: a tiny random Llama and tokenizer

JSON keys: model, dtype, loadavg, prefill_s_per_token, decode_step_s_at_8, realistic_tokens_per_s,
realistic_bound_tokens_per_s, realistic_fraction_of_bound, sequential_tokens_per_s, realistic_ratio_vs_sequential,
realistic_ttft_p50_s, realistic_ttft_p95_s, short_idle_s, short_during_long_s, head_of_line_ratio, long_tokens,
bf16_prefill_ratio, bf16_greedy_agreement, fp32_prefill_tokens_per_s, bf16_prefill_tokens_per_s, mixed_tokens_per_s, per_adapter_tokens_per_s, mixed_ratio,
mixed_bound_tokens_per_s, mixed_ttft_p50_s, mixed_ttft_p95_s, per_adapter_ttft_p50_s, errors, smoke, skipped
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ADAPTERS = ("lora-a", "llama-a", "lora-b", "llama-b")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def grounded_prompts(n: int, doc_chars: int = 700) -> list[str]:
    """Grounded prompts of the shipped doc2dial validation dialogues, each on another document."""
    from groundtune.data import asset_path
    from groundtune.data.doc2dial import load_dialogues, load_documents
    from groundtune.data.grounded import build_prompt, turn_contexts

    docs = load_documents(asset_path("doc2dial/doc2dial_doc.json"))
    prompts, seen = [], set()
    for ctx in turn_contexts(load_dialogues(asset_path("doc2dial/doc2dial_dial_validation.json"))):
        if ctx.question and ctx.doc_ids and ctx.doc_ids[0] in docs and ctx.doc_ids[0] not in seen:
            seen.add(ctx.doc_ids[0])
            prompts.append(build_prompt(docs[ctx.doc_ids[0]].text[:doc_chars], ctx.history[-2:], ctx.question))
        if len(prompts) == n:
            break
    return (prompts * n)[:n]


def questions_and_index(n: int, folder: Path, smoke: bool):
    """n distinct doc2dial questions and a BM25 Retriever over the shipped documents' passages."""
    from groundtune.data import asset_path
    from groundtune.data.doc2dial import load_dialogues, load_documents
    from groundtune.data.grounded import turn_contexts
    from groundtune.retrieval.index import Retriever, build_index
    from groundtune.retrieval.passages import document_passages

    docs = load_documents(asset_path("doc2dial/doc2dial_doc.json"))
    questions = []
    for ctx in turn_contexts(load_dialogues(asset_path("doc2dial/doc2dial_dial_validation.json"))):
        if ctx.question and ctx.question not in questions:
            questions.append(ctx.question)
        if len(questions) == n:
            break
    documents = list(docs.values())[:20] if smoke else list(docs.values())
    build_index(document_passages(documents), folder, dense=False, show_progress=False)
    return questions, Retriever.load(folder)


def server_prompt_ids(engine, retriever, question: str) -> list[int]:
    """The prompt ids the server builds for a chat question (the same functions, so the baseline matches)."""
    from groundtune.data.prompt_format import base_format
    from groundtune.data.sample import encode_prompt
    from groundtune.serve.citations import Grounding, build_chat_prompt, split_conversation

    fmt = base_format(engine.tokenizer)
    conversation = split_conversation([{"role": "user", "content": question}])
    citations = Grounding(retriever).passages(conversation.question, conversation.history, int(fmt.get("k", 3)))
    prompt = build_chat_prompt(fmt, engine.tokenizer, conversation, citations)
    return encode_prompt(engine.tokenizer, prompt, fmt.get("max_prompt_tokens"))


def sequential(model, tokenizer, prompts_ids: list[list[int]], max_tokens: int) -> dict:
    """The same requests one at a time through plain `model.generate`."""
    import torch

    eos = tokenizer.eos_token_id
    tokens, start = 0, time.perf_counter()
    with torch.no_grad():
        for ids in prompts_ids:
            x = torch.tensor([ids])
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
            out = out[0, x.shape[1]:].tolist()
            tokens += out.index(eos) if eos in out else len(out)
    wall = time.perf_counter() - start
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def prefill_s_per_token(model, prompts_ids: list[list[int]]) -> float:
    """Single-request prefill, seconds per prompt token (the last position's logits only, as serving does)."""
    import torch

    with torch.no_grad():
        model(input_ids=torch.tensor([prompts_ids[0][:16]]), logits_to_keep=1)  # warm-up
        start = time.perf_counter()
        for ids in prompts_ids:
            model(input_ids=torch.tensor([ids]), logits_to_keep=1)
    return (time.perf_counter() - start) / sum(map(len, prompts_ids))


def decode_step_s(model, tokenizer, prompts_ids: list[list[int]], batch: int, steps: int = 16) -> float:
    """One decoding step of `batch` rows over these prompts' KV cache (left-padded), seconds."""
    import torch

    from groundtune.data.collate import pad_rows, pad_token_id
    from groundtune.kvcache import cache_from, cache_kwargs

    ids, mask = pad_rows((prompts_ids * batch)[:batch], pad_token_id(tokenizer))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        cache, token = cache_from(out), out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(steps):
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            out = model(input_ids=token, attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                        use_cache=True, **cache_kwargs(model, cache))
            cache, token = cache_from(out), out.logits[:, -1].argmax(-1, keepdim=True)
    return (time.perf_counter() - start) / steps


def bound(prompt_tokens: int, new_tokens: int, prefill: float, step: float, clients: int) -> float | None:
    seconds = prompt_tokens * prefill + new_tokens / clients * step
    return round(new_tokens / seconds, 2) if seconds > 0 else None


def random_adapters(model, folder: Path, smoke: bool) -> dict[str, Path]:
    """2 LoRA and 2 LLaMA-Adapter folders with random (non-zero) weights: they cost what trained ones cost."""
    import torch

    import groundtune as gt
    from groundtune.methods import detach, trainable_state_dict

    layers = model.config.num_hidden_layers
    configs = {"lora-a": gt.LoraConfig(r=8, alpha=16), "lora-b": gt.LoraConfig(r=4, alpha=8),
               "llama-a": gt.LlamaAdapterConfig(layers=layers, length=2 if smoke else 10),
               "llama-b": gt.LlamaAdapterConfig(layers=max(1, layers // 2), length=2 if smoke else 10)}
    folders = {}
    for i, (name, config) in enumerate(configs.items()):
        adapted = gt.attach(model, config)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in trainable_state_dict(adapted).values():
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.01)
        folders[name] = gt.save_adapter(adapted, folder / name)
        model = detach(adapted)
    return folders


def head_of_line(url: str, base: str, long_tokens: int, short_prompt: str, long_prompt: str) -> dict:
    """A short request for an adapter, alone and while a long generation on the base streams."""
    import openai

    c = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=3600)

    def short() -> float:
        t0 = time.perf_counter()
        c.completions.create(model="lora-a", prompt=short_prompt, max_tokens=8, temperature=0)
        return time.perf_counter() - t0

    short()  # warm-up
    idle = sorted(short() for _ in range(3))[1]
    streamed, long_done = [0], threading.Event()

    def long() -> None:
        for chunk in c.completions.create(model=base, prompt=long_prompt, max_tokens=long_tokens, temperature=0,
                                          stream=True, stream_options={"include_usage": True}):
            if chunk.usage is not None:
                streamed[0] = chunk.usage.completion_tokens
        long_done.set()

    thread = threading.Thread(target=long, daemon=True)
    thread.start()
    time.sleep(2.0)  # the long one is decoding
    busy = short()
    running = not long_done.is_set()
    thread.join()
    return {"short_idle_s": round(idle, 3), "short_during_long_s": round(busy, 3),
            "head_of_line_ratio": round(busy / idle, 2), "long_tokens": streamed[0], "long_still_running": running}


def bf16_check(model, tokenizer, prompts: list[str], max_tokens: int) -> dict:
    import torch

    from groundtune.config import GenerationConfig
    from groundtune.data.sample import encode_prompt
    from groundtune.generate import generate

    ids = [encode_prompt(tokenizer, p) for p in prompts]
    fp32, bf16 = copy.deepcopy(model).float(), copy.deepcopy(model).to(torch.bfloat16)
    rate = {name: 1 / prefill_s_per_token(m, ids) for name, m in (("fp32", fp32), ("bf16", bf16))}
    gen = GenerationConfig(max_new_tokens=max_tokens, batch_size=1)
    answers = {name: generate(m, tokenizer, prompts, gen, progress=False) for name, m in (("fp32", fp32),
                                                                                          ("bf16", bf16))}
    same = sum(a == b for a, b in zip(answers["fp32"], answers["bf16"]))
    return {"bf16_prefill_ratio": round(rate["bf16"] / rate["fp32"], 2), "bf16_greedy_agreement": f"{same}/{len(prompts)}",
            "fp32_prefill_tokens_per_s": round(rate["fp32"], 1), "bf16_prefill_tokens_per_s": round(rate["bf16"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--long-tokens", type=int, default=1000)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--bf16-prompts", type=int, default=8, help="shipped prompts the bf16 check runs")
    parser.add_argument("--dtype", default="auto", help="what the server runs in: auto, float32 or bfloat16")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if min(args.max_tokens, args.long_tokens, args.requests_per_client, args.bf16_prompts) < 1:
        parser.error("--max-tokens, --long-tokens, --requests-per-client and --bf16-prompts must be >= 1")
    try:
        import openai  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        print(json.dumps({"smoke": args.smoke, "skipped": {"serve": f"not installed: {err.name}"}}))
        return
    from groundtune.models import serving_dtype
    from groundtune.serve import BackgroundServer, build
    from groundtune.serve.loadgen import drive

    clients = 8
    if args.smoke:
        from _smoke import tiny_llama, tiny_tokenizer

        prompts = grounded_prompts(4, doc_chars=200)
        tokenizer = tiny_tokenizer(prompts)
        model, name = tiny_llama(vocab_size=len(tokenizer)), "tiny-llama"
        clients, max_tokens, long_tokens, per_client = 2, 4, 24, 1
    else:
        from groundtune.models import load_model

        model, tokenizer = load_model()
        name, max_tokens, long_tokens, per_client = "smollm2-135m-instruct", args.max_tokens, args.long_tokens, \
            args.requests_per_client
    dtype, why = serving_dtype(args.dtype)
    print(f"serving in {str(dtype).removeprefix('torch.')} ({why}); load average {load()}", file=sys.stderr, flush=True)
    result = {"model": name, "dtype": str(dtype).removeprefix("torch."), "smoke": args.smoke, "skipped": {}}
    float32_model = copy.deepcopy(model).float()  # the bf16 check's reference, run last
    model.to(dtype)
    errors = 0
    with tempfile.TemporaryDirectory() as tmp:
        questions, retriever = questions_and_index(clients * per_client, Path(tmp) / "index", args.smoke)
        folders = random_adapters(model, Path(tmp), args.smoke)
        app, engine = build(model, tokenizer, folders, retriever=retriever, base_name=name)
        try:
            ids = [server_prompt_ids(engine, retriever, q) for q in questions]
            prefill = prefill_s_per_token(engine.model, ids[:2])
            step = decode_step_s(engine.model, tokenizer, ids, clients)
            result.update(prefill_s_per_token=round(prefill, 6), decode_step_s_at_8=round(step, 4))
            print(f"prefill {prefill * 1e3:.2f} ms/token, decode step at {clients} rows {step * 1e3:.1f} ms; "
                  f"load {load()}", file=sys.stderr, flush=True)
            base = sequential(engine.model, tokenizer, ids, max_tokens)
            with BackgroundServer(app) as url:
                drive(url, name, questions[:1], clients=1, max_tokens=2, requests_per_client=1, chat=True)
                run = drive(url, name, questions, clients=clients, max_tokens=max_tokens, chat=True,
                            requests_per_client=per_client, spread_s=0.2 if args.smoke else 2.0)
                errors += run["errors"]
                limit = bound(run["prompt_tokens"], run["completion_tokens"], prefill, step, clients)
                result.update(realistic_tokens_per_s=run["tokens_per_s"], realistic_bound_tokens_per_s=limit,
                              realistic_fraction_of_bound=round(run["tokens_per_s"] / limit, 3) if limit else None,
                              sequential_tokens_per_s=round(base["tokens_per_s"], 2),
                              realistic_ratio_vs_sequential=round(run["tokens_per_s"] / base["tokens_per_s"], 2),
                              realistic_ttft_p50_s=run["ttft_p50_s"], realistic_ttft_p95_s=run["ttft_p95_s"])
                print(f"realistic: {run['tokens_per_s']} tokens/s (bound {limit}, sequential "
                      f"{base['tokens_per_s']:.2f}), prompt tokens {run['prompt_tokens']} (baseline "
                      f"{sum(map(len, ids))}), TTFT p50 {run['ttft_p50_s']} p95 {run['ttft_p95_s']}; load {load()}",
                      file=sys.stderr, flush=True)
                hol = head_of_line(url, name, long_tokens, "Hello, who are you?",
                                   "List the numbers from 1 to 3000, separated by commas: 1, 2, 3, 4, 5,")
                result.update({k: v for k, v in hol.items() if k != "long_still_running"})
                print(f"head of line: {hol}; load {load()}", file=sys.stderr, flush=True)
                mixed_prompts = grounded_prompts(clients * per_client)
                for mode in ("mixed", "per_adapter"):
                    engine.mix_adapters = mode == "mixed"
                    run = drive(url, list(ADAPTERS), mixed_prompts, clients=clients, max_tokens=max_tokens,
                                requests_per_client=per_client)
                    errors += run["errors"]
                    result[f"{mode}_tokens_per_s"] = run["tokens_per_s"]
                    result[f"{mode}_ttft_p50_s"] = run["ttft_p50_s"]
                    if mode == "mixed":
                        result["mixed_ttft_p95_s"] = run["ttft_p95_s"]
                        result["mixed_bound_tokens_per_s"] = bound(run["prompt_tokens"], run["completion_tokens"],
                                                                   prefill, step, clients)
                    print(f"{mode}: {run}; load {load()}", file=sys.stderr, flush=True)
                result["mixed_ratio"] = round(result["mixed_tokens_per_s"] / result["per_adapter_tokens_per_s"], 2) \
                    if result["per_adapter_tokens_per_s"] else None
        finally:
            engine.close()
    from groundtune.models import NO_NATIVE_BF16, bf16_supported

    if bf16_supported() or args.smoke:  # the smoke keeps the check's code path running on its tiny model
        result.update(bf16_check(float32_model, tokenizer, grounded_prompts(2 if args.smoke else args.bf16_prompts),
                                 max_tokens))
        print(f"bf16: {result['bf16_prefill_ratio']}x prefill, agreement {result['bf16_greedy_agreement']}; "
              f"load {load()}", file=sys.stderr, flush=True)
    else:  # the target is for CPUs with native bf16; elsewhere serving is float32 (models.serving_dtype)
        result.update({k: None for k in ("bf16_prefill_ratio", "bf16_greedy_agreement", "fp32_prefill_tokens_per_s",
                                         "bf16_prefill_tokens_per_s")})
        result["skipped"]["bf16"] = NO_NATIVE_BF16
        print(f"bf16: skipped, {NO_NATIVE_BF16}", file=sys.stderr, flush=True)
    result.update(errors=errors, loadavg=load())
    print("targets: realistic >= 85% of bound and >= 2x sequential; head-of-line ratio <= 2; bf16 prefill >= 1.8x; "
          "mixed >= 1.8x per-adapter")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
