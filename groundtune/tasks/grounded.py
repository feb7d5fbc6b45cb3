"""A run from its config: samples -> train -> generate -> score -> results.json. Used by the CLI, sweeps and demo."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from groundtune.config import DataConfig, GenerationConfig, TrainConfig
from groundtune.fileio import atomic_write


def _grounded_config(data: DataConfig):
    from groundtune.data.grounded import GroundedConfig

    return GroundedConfig(max_document_tokens=data.max_document_tokens, max_answer_tokens=data.max_answer_tokens,
                          history_turns=data.history_turns, window_around_span=data.window_around_span)


def _read(data: DataConfig, path: str, tokenizer):
    from groundtune.data import grounded_samples, instruction_samples, load_dialogues, load_documents, load_jsonl_samples

    if data.format == "doc2dial" and data.retrieval:
        # RAG: the prompt's document is the top-k passages retrieved for the turn (groundtune.retrieval.rag)
        from groundtune.retrieval.rag import rag_samples, retriever_for

        block = data.retrieval
        return rag_samples(load_dialogues(path), retriever_for(block), k=block["k"], pipeline=block["pipeline"],
                           rerank_depth=block["rerank_depth"], history_turns=data.history_turns, source=str(path))
    if data.format == "doc2dial":
        if not data.documents:
            raise ValueError("data.format doc2dial needs data.documents: the doc2dial / MultiDoc2Dial document JSON")
        return grounded_samples(load_dialogues(path), load_documents(data.documents), _grounded_config(data),
                                tokenizer, source=str(path))
    if data.format == "jsonl":
        return load_jsonl_samples(path, _grounded_config(data), tokenizer)
    if data.format == "alpaca":
        return instruction_samples(path, data.template, tokenizer=tokenizer)
    raise ValueError(f"data.format must be doc2dial, jsonl or alpaca, not {data.format!r}")


def load_samples(data: DataConfig, tokenizer, verbose: bool = True) -> tuple[list, list]:
    """(train, eval) samples. Drop reports are printed: nothing is dropped silently."""
    from groundtune.data.grounded import split_by_dialogue

    if not data.train:
        raise ValueError("data.train is not set: give the training data file")
    train, report = _read(data, data.train, tokenizer)
    if verbose:
        print(report)
    if data.eval:
        evaluation, report = _read(data, data.eval, tokenizer)
        if verbose:
            print(report)
    elif data.eval_fraction > 0:
        train, evaluation = split_by_dialogue(train, data.eval_fraction)
    else:
        evaluation = []
    return train[: data.max_train_samples], evaluation[: data.max_eval_samples]


def evaluate(model, tokenizer, samples, gen: GenerationConfig | None = None, *, lang: str = "auto",
             max_prompt_tokens: int = 1024, progress: bool = True):
    """Generate for every sample and score against its answer. Returns (predictions, metrics report)."""
    from groundtune.generate import generate
    from groundtune.metrics import score

    if not samples:
        raise ValueError("no evaluation samples: set data.eval or data.eval_fraction")
    predictions = generate(model, tokenizer, [s.prompt for s in samples], gen, max_prompt_tokens=max_prompt_tokens,
                           progress=progress)
    report = score(predictions, [s.answer for s in samples], lang=lang, ids=[s.id for s in samples])
    return predictions, report


def train_and_evaluate(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
                       model=None, tokenizer=None) -> dict:
    """Train, then score on the eval samples; writes predictions.jsonl and results.json into cfg.output_dir."""
    from groundtune.metrics import write_predictions
    from groundtune.models import load_model
    from groundtune.train import train

    if model is None:
        model, tokenizer = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    train_samples, eval_samples = load_samples(cfg.data, tokenizer)
    result = train(cfg, train_samples, model=model, tokenizer=tokenizer, resume=resume, overwrite=overwrite,
                   progress=progress)
    out = Path(cfg.output_dir)
    summary = {"config": asdict(cfg), "trainable_params": result.trainable_params, "losses": result.losses,
               "adapter": str(result.adapter_dir), "train_samples": len(train_samples),
               "eval_samples": len(eval_samples)}
    if not result.main_process:
        # The other processes of a multi-process run: the main one scores the eval split and writes the files.
        return {**summary, "scores": {}, "signatures": []}
    if eval_samples:
        predictions, report = evaluate(result.model, tokenizer, eval_samples, cfg.generation,
                                       max_prompt_tokens=cfg.data.max_prompt_tokens, progress=progress)
        write_predictions(out / "predictions.jsonl", predictions, [s.answer for s in eval_samples],
                          [s.id for s in eval_samples])
        summary.update(scores=report.scores, signatures=report.signatures)
        if progress:
            print(report.table())
    else:
        summary.update(scores={}, signatures=[])
    atomic_write(out / "results.json", json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
