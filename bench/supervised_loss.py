"""The answer-only loss on Gemma 3 270M: LM head on supervised positions only vs every row from the first answer on.

Gemma 3's vocabulary has 262,144 tokens, so the LM head and its softmax are a large share of a training step.
groundtune's loss (groundtune.train.answer_loss_sum) gathers the hidden states of the supervised positions
before the head; the earlier loss (kept here as `tail_loss_sum`, the reference) asked the model for the logits of
every position from the earliest answer in the batch onward (`logits_to_keep`). Both train LLaMA-Adapter (all
18 layers, K=10, as the Korean demo does) on the shipped KoAlpaca records, batch 4, the same batches, with the
base in the Korean demo's dtype (auto: bf16 where the CPU runs it natively, else fp32), interleaved step by step (tail, ours, tail, ours, ...). Each figure
is a median; the load average is printed beside it. The last line is one JSON object.

    python bench/supervised_loss.py [--steps 6 --batch 4]
    python bench/supervised_loss.py --smoke   # seconds: a tiny random Gemma 3 with a 4k vocabulary

JSON keys: model, method, batch, steps, step_s, speedup, head_rows, losses_equal, load_average, smoke, skipped
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F


def tail_loss_sum(model, batch):
    """The earlier answer-only loss: logits of every position from the earliest answer in the batch onward."""
    labels = batch["labels"]
    supervised = labels != -100
    T = labels.shape[1]
    first = int(supervised.float().argmax(dim=1)[supervised.any(dim=1)].min()) if supervised.any() else T - 1
    keep = min(T - first + 1, T)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch.get("position_ids"), logits_to_keep=torch.arange(-keep, 0), use_cache=False)
    logits = out.logits[:, :-1].float()
    targets = labels[:, T - logits.shape[1]:]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                            reduction="sum")
    return total, (targets != -100).sum(), logits.shape[0] * logits.shape[1]  # rows the head ran on (less one each)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per loss (after one warm-up each)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--smoke", action="store_true", help="seconds-long run on a tiny random Gemma 3")
    args = ap.parse_args()
    if args.smoke:
        args.steps = 1

    import groundtune as gt
    from groundtune.data import asset_path, instruction_samples
    from groundtune.data.collate import Collator, encode
    from groundtune.train import answer_loss_sum

    torch.manual_seed(0)
    if args.smoke:
        from transformers import AutoConfig, AutoModelForCausalLM

        from _smoke import tiny_tokenizer

        records = asset_path("koalpaca/ko_alpaca_data_first100.json")
        tok = tiny_tokenizer(records.read_text(encoding="utf-8").splitlines(), vocab_size=4096)
        config = AutoConfig.for_model("gemma3_text", vocab_size=len(tok), hidden_size=48, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                      pad_token_id=0)
        model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16).eval()
        layers = 2
    else:
        model, tok = gt.load_model("gemma3-270m", dtype="auto")  # as the Korean demo loads it
        layers = model.config.num_hidden_layers
    samples, _ = instruction_samples(asset_path("koalpaca/ko_alpaca_data_first100.json"), "koalpaca", tokenizer=tok)
    collate = Collator(tok)
    batches = [collate([encode(tok, s, 1024, 64) for s in samples[i * args.batch:(i + 1) * args.batch]])
               for i in range(args.steps + 1)]
    model = gt.attach(model, gt.LlamaAdapterConfig(layers=layers, length=10))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ours = lambda m, b: (*answer_loss_sum(m, b), int(b["labels"][:, 1:].ne(-100).sum()))  # noqa: E731
    losses = {"tail": tail_loss_sum, "ours": ours}
    times = {k: [] for k in losses}
    rows, values = {}, {k: [] for k in losses}
    for i, batch in enumerate(batches):
        for name, fn in losses.items():
            start = time.perf_counter()
            total, count, rows[name] = fn(model, batch)
            (total / count).backward()
            opt.zero_grad(set_to_none=True)  # no step: both losses see the same weights on the same batch
            if i:
                times[name].append(time.perf_counter() - start)
            values[name].append(total.item())
    med = {k: statistics.median(v) for k, v in times.items()}
    equal = all(abs(a - b) <= 1e-2 * max(1.0, abs(a)) for a, b in zip(values["tail"], values["ours"]))
    load = os.getloadavg()
    print(f"train step (forward + backward, batch {args.batch}): every row from the first answer "
          f"{med['tail']:.2f}s, supervised positions {med['ours']:.2f}s: {med['tail'] / med['ours']:.2f}x "
          f"(head rows {rows['tail']} -> {rows['ours']}; load average {' '.join(f'{x:.2f}' for x in load)})")
    print(json.dumps({"model": "tiny gemma3_text" if args.smoke else f"gemma3-270m ({str(next(model.parameters()).dtype).removeprefix('torch.')})",
                      "method": f"llama_adapter L={layers} K=10", "batch": args.batch, "steps": args.steps,
                      "step_s": med, "speedup": med["tail"] / med["ours"], "head_rows": rows, "losses_equal": equal,
                      "load_average": load, "smoke": args.smoke, "skipped": {}}))


if __name__ == "__main__":
    main()
