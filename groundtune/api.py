"""groundtune's public Python API: every `groundtune` command is a few lines of argument parsing over these.

    from groundtune import api
    model, tokenizer = api.load_model()                      # embedded default, a folder, a .gguf, "gemma3-270m"
    model = api.attach(model, api.LoraConfig())             # or api.load_adapter(model, "runs/x/adapter")
    result = api.train_and_evaluate(api.load_config("run.yaml"))
    report = api.score(predictions, references, lang="auto")
    report, rag, written = api.evaluate_config(cfg, adapter="runs/x/adapter")

Everything is imported on first use, so `import groundtune.api` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path

from groundtune._lazy import lazy_getattr

_EXPORTS = {
    # models and methods
    "load_model": "groundtune.models",
    "attach": "groundtune.methods",
    "detach": "groundtune.methods",
    "save_adapter": "groundtune.methods.io",
    "load_adapter": "groundtune.methods.io",
    "merge_and_unload": "groundtune.methods.lora",
    # configs and samples
    "load_config": "groundtune.config",
    "load_samples": "groundtune.tasks.grounded",
    "encode_prompt": "groundtune.data.sample",
    # train, generate, evaluate
    "train": "groundtune.train",
    "fit": "groundtune.train",
    "train_and_evaluate": "groundtune.tasks.grounded",
    "generate": "groundtune.generate",
    "evaluate": "groundtune.tasks.grounded",
    "score": "groundtune.metrics",
    "read_predictions": "groundtune.metrics",
    # retrieval and merging
    "build_index": "groundtune.retrieval",
    "Retriever": "groundtune.retrieval",
    "chat_vector": "groundtune.merge",
}

__getattr__ = lazy_getattr(__name__, _EXPORTS)
__all__ = sorted([*_EXPORTS, "evaluate_config", "model_with_adapter", "report_json"])


def model_with_adapter(model: str | os.PathLike | None = None, adapter: str | os.PathLike | None = None,
                       dtype=None):
    """(model, tokenizer): `model` loaded (None: the embedded default) with the adapter folder attached, if any."""
    from groundtune.methods.io import load_adapter
    from groundtune.models import load_model

    base, tokenizer = load_model(model, dtype=dtype)
    return (load_adapter(base, adapter) if adapter else base), tokenizer


def evaluate_config(cfg, *, adapter: str | os.PathLike | None = None, index: str | os.PathLike | None = None,
                    lang: str = "auto", metrics: list[str] | None = None, progress: bool = True):
    """Generate for a run config's eval split (with `adapter` attached, or the bare base) and score it.

    With `index` (or the config's data.retrieval), prompts hold the retrieved passages instead of the gold
    document, and the second value is the RAG report (recall, knowledge-F1, scores split by whether the gold
    passage was retrieved); else it is None. The predictions are written to cfg.output_dir/eval_predictions.jsonl,
    the third value. Returns (report, rag report or None, predictions path).
    """
    from groundtune.errors import DataError
    from groundtune.metrics import write_predictions
    from groundtune.tasks.grounded import evaluate, load_eval_samples

    if index is not None:
        from groundtune.retrieval.pipelines import check_retrieval

        cfg.data.retrieval = check_retrieval({**(cfg.data.retrieval or {}), "index": str(index)},
                                             "--index / data.retrieval", cfg.data.format)
    model, tokenizer = model_with_adapter(cfg.model, adapter)
    samples = load_eval_samples(cfg.data, tokenizer)  # the train file is not read (nor needed)
    if not samples:
        raise DataError(f"data.eval {cfg.data.eval}: no eval samples left (see the drop report above)")
    predictions, report = evaluate(model, tokenizer, samples, cfg.generation, lang=lang, metrics=metrics,
                                   max_prompt_tokens=cfg.data.max_prompt_tokens, progress=progress)
    references, ids = [s.answer for s in samples], [s.id for s in samples]
    written = write_predictions(Path(cfg.output_dir) / "eval_predictions.jsonl", predictions, references, ids)
    rag = None
    if cfg.data.retrieval:
        from groundtune.retrieval.rag import rag_report

        rag = rag_report(samples, predictions, lang=lang, metrics=metrics)
    return report, rag, written


def report_json(report, rag: dict | None = None) -> str:
    """The JSON a report is written as (scores, signatures, per-example scores; the RAG report beside them)."""
    import json

    data = json.loads(report.to_json(per_example=True))
    if rag is not None:
        data["rag"] = rag
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
