"""A run from its config: samples -> train -> generate -> score -> results.json. Used by the CLI, sweeps and demo."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from groundtune.config import DataConfig, GenerationConfig, TrainConfig
from groundtune.fileio import atomic_write
from groundtune.errors import GroundtuneError


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
            raise GroundtuneError("data.format doc2dial needs data.documents: the doc2dial / MultiDoc2Dial document JSON")
        return grounded_samples(load_dialogues(path), load_documents(data.documents), _grounded_config(data),
                                tokenizer, source=str(path))
    if data.format == "jsonl":
        return load_jsonl_samples(path, _grounded_config(data), tokenizer)
    if data.format == "alpaca":
        return instruction_samples(path, data.template, tokenizer=tokenizer)
    raise GroundtuneError(f"data.format must be doc2dial, jsonl or alpaca, not {data.format!r}")


def load_samples(data: DataConfig, tokenizer, verbose: bool = True) -> tuple[list, list]:
    """(train, eval) samples. Drop reports are printed: nothing is dropped silently."""
    from groundtune.data.grounded import split_by_dialogue

    if not data.train:
        raise GroundtuneError("data.train is not set: give the training data file")
    train, report = _read(data, data.train, tokenizer)
    if verbose:
        print(report)
    if data.eval:
        evaluation, report = _read(data, data.eval, tokenizer)
        if verbose:
            print(report)
        check_overlap(train, evaluation, data)
    elif data.eval_fraction > 0:
        train, evaluation = split_by_dialogue(train, data.eval_fraction)
    else:
        evaluation = []
    return train[: data.max_train_samples], evaluation[: data.max_eval_samples]


def load_eval_samples(data: DataConfig, tokenizer, verbose: bool = True) -> list:
    """The eval samples alone: data.eval, without reading data.train (or, with no eval file, the held-out share
    of data.train that training would leave out)."""
    from groundtune.errors import ConfigError

    if data.eval:
        evaluation, report = _read(data, data.eval, tokenizer)
        if verbose:
            print(report)
        return evaluation[: data.max_eval_samples]
    if data.train and data.eval_fraction > 0:
        return load_samples(data, tokenizer, verbose)[1]
    raise ConfigError("the run config has no eval samples: set data.eval (an evaluation file), or data.train "
                      "with data.eval_fraction")


def _dialogue(sample) -> str | None:
    value = sample.meta.get("dial_id") if isinstance(sample.meta, dict) else None
    return None if value is None else str(value)


def check_overlap(train: list, evaluation: list, data: DataConfig) -> tuple[int, int]:
    """(eval examples whose id is in the train file, eval dialogues also in the train file). Either above zero
    prints a warning naming the counts, or with data.eval_overlap "error" raises DataError before any work."""
    from groundtune.errors import DataError

    train_ids = {s.id for s in train}
    train_dialogues = {d for d in map(_dialogue, train) if d is not None}
    shared_ids = sum(s.id in train_ids for s in evaluation)
    shared_dialogues = len({d for d in map(_dialogue, evaluation) if d is not None} & train_dialogues)
    if shared_ids or shared_dialogues:
        message = (f"data.eval {data.eval} overlaps data.train {data.train}: {shared_ids} of {len(evaluation)} eval "
                   f"example(s) share an id with a training example, and {shared_dialogues} dialogue(s) are on both "
                   "sides, so the scores are not held out")
        if data.eval_overlap == "error":
            raise DataError(f"{message}; split by dialogue (or set data.eval_overlap: warn to go on)")
        print(f"warning: {message} (set data.eval_overlap: error to refuse)", file=sys.stderr)
    return shared_ids, shared_dialogues


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux


def evaluate(model, tokenizer, samples, gen: GenerationConfig | None = None, *, lang: str = "auto",
             metrics: list[str] | None = None, max_prompt_tokens: int = 1024, progress: bool = True):
    """Generate for every sample and score against its answer. Returns (predictions, metrics report)."""
    from groundtune.generate import generate
    from groundtune.metrics import score

    if not samples:
        raise GroundtuneError("no evaluation samples: set data.eval or data.eval_fraction")
    predictions = generate(model, tokenizer, [s.prompt for s in samples], gen, max_prompt_tokens=max_prompt_tokens,
                           progress=progress)
    report = score(predictions, [s.answer for s in samples], lang=lang, metrics=metrics, ids=[s.id for s in samples])
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
    started = time.perf_counter()
    result = train(cfg, train_samples, model=model, tokenizer=tokenizer, resume=resume, overwrite=overwrite,
                   progress=progress)
    out = Path(cfg.output_dir)
    # train_seconds: this process's training (a resumed run counts only the part after the resume)
    summary = {"config": asdict(cfg), "trainable_params": result.trainable_params, "losses": result.losses,
               "adapter": str(result.adapter_dir), "train_samples": len(train_samples),
               "eval_samples": len(eval_samples), "train_seconds": round(time.perf_counter() - started, 1)}

    if not result.main_process:
        # The other processes of a multi-process run: the main one scores the eval split and writes the files.
        return {**summary, "scores": {}, "signatures": []}
    if eval_samples:
        started = time.perf_counter()
        predictions, report = evaluate(result.model, tokenizer, eval_samples, cfg.generation,
                                       max_prompt_tokens=cfg.data.max_prompt_tokens, progress=progress)
        write_predictions(out / "predictions.jsonl", predictions, [s.answer for s in eval_samples],
                          [s.id for s in eval_samples])
        # the full report (intervals, per-example statistics) so that a sweep can test two cells against each other
        summary.update(scores=report.scores, signatures=report.signatures, intervals=report.as_dict()["intervals"],
                       report=report.as_dict(per_example=True),
                       eval_seconds=round(time.perf_counter() - started, 1))
        if progress:
            print(report.table())
    else:
        summary.update(scores={}, signatures=[])
    peak = _peak_rss_mb()
    if peak is not None:  # the process's peak so far (training and scoring): the run's own when it ran alone
        summary["peak_rss_mb"] = peak
    atomic_write(out / "results.json", json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
