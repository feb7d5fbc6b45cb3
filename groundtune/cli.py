"""The `groundtune` command. Heavy imports live inside each command so `--help` answers at once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from groundtune.errors import GroundtuneError
from groundtune.metrics import METRICS as METRIC_NAMES  # light: the metric objects import their libraries lazily


def _user_error(err: BaseException) -> bool:
    """Bad input or a refused action (as opposed to a bug): printed as one line, never as a traceback."""
    return isinstance(err, GroundtuneError)


def fail(err: BaseException | str):
    """The one way a command ends on bad input: `error: <message>` on stderr, exit status 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


class _Commands(TyperGroup):
    """Every command (merge's included) runs inside this: a groundtune error becomes `error: <message>`, exit 2."""

    def invoke(self, ctx):
        from groundtune import fileio

        fileio.begin_run()  # the outputs this command approves start from none
        try:
            return super().invoke(ctx)
        except Exception as err:
            if not _user_error(err):
                raise
            fail(err)


app = typer.Typer(
    cls=_Commands,
    help="groundtune: adapt a frozen LLM to document-grounded dialogue and Korean instructions, cheaply, "
    "and measure the result honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- core commands (demo) ---


@app.command()
def demo(
    which: Optional[str] = typer.Argument(None, metavar="[en|ko]", help="Same as --lang: `groundtune demo ko`."),
    lang: str = typer.Option("en", "--lang", help="en: LLaMA-Adapter on doc2dial turns (SmolLM2); ko: KoAlpaca "
                             "instruction tuning scored on held-out KoAlpaca records (Gemma 3 270M)."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps of LLaMA-Adapter training (batch 4); default 60 "
                                                   "(en), 30 (ko)."),
    output_dir: Optional[Path] = typer.Option(None, help="Where the adapter, loss curve and predictions go; default "
                                                         "runs/demo (en), runs/demo-ko (ko)."),
    model: Optional[str] = typer.Option(None, help="Model folder, .gguf file, hub id or gemma3-270m; default: the "
                                                   "embedded SmolLM2 (en), gemma3-270m (ko)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo's output folder."),
):
    """Train LLaMA-Adapter and score held-out data before and after. en: doc2dial turns, F1, METEOR, ROUGE-L and
    SacreBLEU, on the embedded SmolLM2-135M-Instruct. ko: KoAlpaca records, ROUGE-1/ROUGE-L/F1 on Kiwi morphemes
    and SacreBLEU (ko-mecab), on Gemma 3 270M, with a held-out loss curve. Each runs offline in a few CPU minutes."""
    import shutil

    from groundtune.fileio import guard_output
    from groundtune.tasks.demo import demo_config, korean_demo_config, run_demo, run_korean_demo

    lang = (which or lang).lower()
    if lang not in ("en", "ko"):
        fail(f"demo language is {lang!r}; choose en or ko (`groundtune demo ko`)")
    if steps is not None and steps < 1:
        fail(f"--steps is {steps}; it must be a whole number in [1, inf)")
    output_dir = output_dir or Path("runs/demo-ko" if lang == "ko" else "runs/demo")
    guard_output(output_dir, command="demo", inputs=[model and Path(model)], overwrite=overwrite)
    if (output_dir / "checkpoint").exists():
        shutil.rmtree(output_dir / "checkpoint")  # the demo always starts afresh (the guard made sure it is ours)
    if lang == "ko":
        run_korean_demo(korean_demo_config(str(output_dir), steps or 30, model))
        return
    cfg = demo_config(str(output_dir), steps or 60)
    cfg.model = model
    run_demo(cfg)

# --- training and evaluation commands (train, eval, sweep) ---


@app.command("eval")
def eval_(
    predictions: Optional[Path] = typer.Option(None, "--predictions", exists=True, dir_okay=False,
                                     help="JSONL with one record per line: prediction (string), reference (a string or a list of "
                                     "strings; the best one counts) and an optional id."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="Instead of --predictions: a run config YAML; generate for its eval split "
                                          "first (with --adapter attached, or the bare base model)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", exists=True, file_okay=False,
                                           help="Adapter folder to attach before generating (with --config)."),
    index: Optional[Path] = typer.Option(None, "--index", exists=True, file_okay=False,
                                         help="With --config: retrieve -> generate -> score. Prompts hold the top-k "
                                         "passages this index (`groundtune index`) returns instead of the gold document "
                                         "(k and pipeline from the config's data.retrieval, else 3 and the index's "
                                         "default); adds retrieval recall, knowledge-F1 and scores split by whether "
                                         "the gold passage was retrieved."),
    lang: str = typer.Option("auto", "--lang", help="en: the MultiDoc2Dial official scoring; ko: Kiwi morphemes "
                             "(ko-mecab for SacreBLEU); auto: ko when the references are mostly Hangul."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help=f"Comma-separated subset of {','.join(METRIC_NAMES)} (default: all)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the report (scores, signatures, per-example scores) as JSON."),
):
    """Score predictions: F1, SacreBLEU, METEOR, ROUGE-L and ROUGE-1, each x100, with the signature of each
    metric's settings. Either score a predictions file, or generate them from a config's eval split first."""
    from groundtune import api
    from groundtune.fileio import atomic_write, guard_output

    if (predictions is None) == (config is None):
        fail("give either --predictions FILE or --config RUN.yaml")
    chosen = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    inputs = [predictions, config, adapter, index]
    if out is not None:
        guard_output(out, command="eval", inputs=inputs, file=True)
    try:
        if config is not None:
            run = api.load_config(config)
            written = Path(run.output_dir) / "eval_predictions.jsonl"
            guard_output(written, command="eval", inputs=[*inputs, out, run.data.train, run.data.eval], file=True)
            report, rag, written = api.evaluate_config(run, adapter=adapter, index=index, lang=lang, metrics=chosen)
            typer.echo(f"predictions: {written}")
        else:
            records = api.read_predictions(predictions)
            report, rag = api.score(records.predictions, records.references, lang=lang, metrics=chosen,
                                    ids=records.ids), None
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    typer.echo(report.table(), nl=False)
    if rag is not None:
        from groundtune.retrieval.rag import format_rag_report

        typer.echo(format_rag_report(rag), nl=False)
    if out is not None:
        atomic_write(out, api.report_json(report, rag))
        typer.echo(f"report: {out}")


def _overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r}: write overrides as key=value, e.g. lr=3e-4 or data.history_turns=1")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


@app.command()
def train(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Run config YAML (see examples/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in output_dir (with the same "
                                "settings; only logging ones or a longer max_steps / epochs may change)."),
    resume_if_possible: bool = typer.Option(False, "--resume-if-possible", help="--resume when output_dir holds a "
                                            "checkpoint, else start afresh (plain --resume without one is an error)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh in an output_dir an earlier `groundtune "
                                   "train` wrote (a checkpoint included); files it did not write are never deleted."),
    force: bool = typer.Option(False, "--force", help="Accept a learning rate above the method's sane bound."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set lr=3e-4 --set data.history_turns=1."),
):
    """Train one method on a frozen base model, then score the eval split (if any).

    Writes output_dir/adapter (peft layout), checkpoint/, losses.jsonl, loss.png, predictions.jsonl, results.json.
    For several machines run it under `accelerate launch` (see the README)."""
    from groundtune.config import load_config
    from groundtune.tasks.grounded import train_and_evaluate
    from groundtune.train import prepare_output

    from groundtune.train import CHECKPOINT, check_learning_rate

    cfg = load_config(config, _overrides(set_))
    if not cfg.data.train:
        fail(f"{config}: data.train is not set (is the file empty?); give the training data file, e.g. "
             "data: {train: train.jsonl}")
    if resume_if_possible:
        resume = (Path(cfg.output_dir) / CHECKPOINT).exists()
    check_learning_rate(cfg.method.get("method", ""), cfg.lr, force=force, source=str(config))
    prepare_output(cfg, resume=resume, overwrite=overwrite)
    summary = train_and_evaluate(cfg, resume=resume, overwrite=overwrite)
    typer.echo(f"adapter: {summary['adapter']}  ({summary['trainable_params']:,} trainable parameters)")


@app.command()
def sweep(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Sweep YAML: a base config and runs with grids."),
    output_dir: Optional[Path] = typer.Option(None, help="Default: the sweep's output_dir, else runs/<config name>."),
    resume: bool = typer.Option(False, "--resume", help="Continue the cells a stopped sweep left unfinished, from "
                                "their checkpoints (their settings must be unchanged)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start unfinished cells afresh (files the sweep did "
                                   "not write are never deleted)."),
    force: bool = typer.Option(False, "--force", help="Accept learning rates above each method's sane bound."),
):
    """Run a grid (method x layers x length x learning rate) and write the paper's Table 2 layout as results.md
    and results.csv, a layers x length heatmap (heatmap.png) and loss curves (loss_curves.png). Each cell is keyed
    on its full resolved config: finished cells with the same config are reused, changed ones are trained again,
    and --resume continues a stopped sweep. Every score has its 95% bootstrap interval, each row a paired test
    against the best row; a cell that fails is listed with its error while the others run (exit status 1)."""
    from groundtune.tasks.sweep import markdown_table, run_sweep

    rows = run_sweep(config, output_dir, resume=resume, overwrite=overwrite, force=force)
    typer.echo(markdown_table(rows))
    if any(r.get("failed") for r in rows):
        raise typer.Exit(1)  # the other cells ran; the failed ones are listed with their errors

# --- prompt-family commands (glue) ---


@app.command()
def glue(
    task: Optional[str] = typer.Option(None, help="mrpc, stsb or sst2."),
    method: Optional[str] = typer.Option(
        None, help="accept, dept, prompt_tuning, bitfit, lora, llama_adapter, or full (every weight trains)."),
    train: Optional[Path] = typer.Option(None, help="The task's GLUE train.tsv."),
    dev: Optional[Path] = typer.Option(None, help="The task's GLUE dev.tsv; default: a seeded share of train."),
    model: Optional[str] = typer.Option(None, help="Sequence-classifier folder or hub id; default: the embedded "
                                                     "all-MiniLM-L6-v2."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds, one result row each (default 42)."),
    output_dir: Optional[Path] = typer.Option(None, help="Where results.md/.csv/.jsonl and adapters go (runs/glue)."),
    config: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                          help="GLUE run YAML (task, method block, data, schedule); options win over it."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting, e.g. --set lr=1e-2 --set method.length=40 "
                                                      "--set epochs=5."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier `groundtune glue` output folder."),
    force: bool = typer.Option(False, "--force", help="Accept a learning rate above the method's sane bound."),
):
    """Train one method on a GLUE task (encoders; the task head trains too) and report accuracy and F1 (MRPC,
    SST-2) or Pearson and Spearman (STS-B), with the seed and the trainable-parameter count on each row."""
    from groundtune.tasks.glue import load_glue_config, markdown_table, run

    overrides = _overrides(set_)
    for key, value in {"task": task, "train": train and str(train), "dev": dev and str(dev), "model": model,
                       "output_dir": output_dir and str(output_dir)}.items():
        if value is not None:
            overrides[key] = value
    if method is not None:
        overrides["method.method"] = method
    if seeds is not None:
        try:
            overrides["seeds"] = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise typer.BadParameter(f"--seeds {seeds!r}: write whole numbers separated by commas, e.g. 1,2,3") from None
    from groundtune.fileio import guard_output
    from groundtune.train import check_learning_rate

    cfg = load_glue_config(config, overrides)
    if not cfg.train:
        fail(f"no training file for {cfg.task}: pass --train (the task's train.tsv in GLUE's layout) or set train in "
             "--config")
    check_learning_rate(cfg.method.get("method", ""), cfg.lr, force=force, source=str(config or "glue options"))
    guard_output(cfg.output_dir, command="glue", inputs=[cfg.train, cfg.dev, config], overwrite=overwrite)
    rows = run(cfg, log=lambda line: typer.echo(line, err=True))
    typer.echo(markdown_table(rows))
    typer.echo(f"written to {cfg.output_dir}/results.md, results.csv and results.jsonl", err=True)


# --- retrieval commands (index, retrieve, train-reranker) ---


NO_MATCH = 1  # `retrieve` found no passage (like grep: 1 is "nothing found", 2 is an error)


def _retrieval_error(command: str, err: Exception):
    fail(err)


@app.command()
def index(
    sources: list[Path] = typer.Argument(..., exists=True, help="doc2dial / MultiDoc2Dial document JSON files, .pdf, "
                                         ".html, .docx, .md or .txt files, or folders of them (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder to write (a new or empty one; see --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an index folder `groundtune index` wrote (the "
                                   "old one goes only once the new one is complete; other files are never deleted)."),
    segmentation: str = typer.Option("structure", help="structure: one passage per section, 'titles // text' "
                                     "(markdown: per heading; text: per paragraph); token: 100-word windows."),
    words: int = typer.Option(100, help="Words per window ('token' segmentation, and long sections)."),
    language: str = typer.Option("auto", help="BM25 tokenizer: en (words, stemmed when PyStemmer is installed), "
                                 "ko (Kiwi content morphemes), auto (decided per passage)."),
    dense: Optional[bool] = typer.Option(None, "--dense/--no-dense", help="Embed passages for dense and hybrid "
                                         "retrieval. Default: yes, unless the encoder does not cover the corpus's "
                                         "language (the shipped all-MiniLM-L6-v2 is English-only: Korean gets BM25)."),
    encoder: Optional[str] = typer.Option(None, help="sentence-transformers model folder for --dense; default: "
                                          "the shipped all-MiniLM-L6-v2."),
    encoder_languages: Optional[str] = typer.Option(None, help="Comma-separated languages the encoder covers (e.g. "
                                                    "ko,en or multilingual); default: its model card's `language:`."),
    dev: list[Path] = typer.Option([], "--dev", exists=True, help="Your own dev questions (dialogue files or "
                                   "reading-comprehension .jsonl) grounded in these documents: the fusion's dense weight "
                                   "is chosen on them. Without them it is 0.5 (0 when the encoder does not cover the "
                                   "language). Repeatable."),
    max_file_mb: float = typer.Option(50, help="Refuse (skip, inside a folder) files larger than this many MB."),
):
    """Split documents into passages and build a BM25 index (plus dense vectors), saved for memory-mapped loading.
    Files of a folder that cannot be read (encrypted, scanned, corrupt, ...) are skipped and counted by reason."""
    import time

    from groundtune.data import DataError
    from groundtune.retrieval.index import build_index
    from groundtune.retrieval.passages import IngestReport, load_passages

    from groundtune.fileio import guard_output

    if words < 1:
        fail(f"--words is {words}; it must be a whole number in [1, inf) (words per passage window)")
    guard_output(out, command="index", inputs=[*sources, *dev, encoder and Path(encoder)], overwrite=overwrite)
    start = time.perf_counter()
    ingest = IngestReport()
    try:
        passages = load_passages(sources, segmentation, words, max_file_mb=max_file_mb, report=ingest)
        typer.echo(f"{len(passages):,} passages from {len({p.doc_id for p in passages}):,} documents ({segmentation})")
        if ingest.read or ingest.skipped:  # users' files (doc2dial JSON is counted above)
            typer.echo(ingest.summary())
        for messages in ingest.skipped.values():
            for message in messages:
                typer.echo(f"  skipped {message}")
        dev_queries = None
        if dev:
            from groundtune.retrieval.queries import load_queries

            dev_queries, report = load_queries(dev)
            typer.echo(f"dev questions: {report}")
        languages = [x.strip().lower() for x in encoder_languages.split(",") if x.strip()] if encoder_languages else None
        build_index(passages, out, language=language, dense=dense, encoder=encoder, encoder_languages=languages,
                    segmentation=segmentation, dev_queries=dev_queries)
    except (ValueError, FileNotFoundError, ImportError, DataError) as err:
        _retrieval_error("index", err)
    typer.echo(f"index: {out}  ({time.perf_counter() - start:.1f}s)")


@app.command()
def retrieve(
    index_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Index folder from `groundtune index`."),
    query: Optional[str] = typer.Argument(None, help="The user's question (omit with --eval)."),
    history: list[str] = typer.Option([], "--history", help="An earlier turn as 'role: utterance', oldest first; repeat."),
    k: int = typer.Option(5, "-k", help="Passages to return (with --eval: recall is reported at 1, 5 and 10)."),
    method: Optional[str] = typer.Option(None, help="bm25, dense or hybrid (weighted reciprocal rank fusion); "
                                         "default: the index's (index.json fusion: hybrid, or bm25 when the dense "
                                         "weight is 0, e.g. an English encoder on a Korean corpus)."),
    reranker: Optional[Path] = typer.Option(None, help="Reranker folder from `groundtune train-reranker` (or a "
                                            "sentence-transformers CrossEncoder / MultiVectorEncoder): re-scores the top 20."),
    eval_: list[Path] = typer.Option([], "--eval", exists=True, help="Score retrieval instead: doc2dial / MultiDoc2Dial "
                                     "dialogue files, or reading-comprehension .jsonl question files; repeatable."),
    pipelines: Optional[str] = typer.Option(None, help="With --eval: comma-separated pipelines, e.g. "
                                            "bm25,dense,hybrid,hybrid+rerank,hybrid+upr (default: every one the index allows but UPR, which is slow)."),
    limit: Optional[int] = typer.Option(None, help="With --eval: only the first N queries."),
    out: Path = typer.Option(Path("retrieval-eval.json"), help="With --eval: where the JSON report goes."),
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON lines instead of a table."),
):
    """Search an index for one question, or with --eval report recall@1/5/10 and MRR at passage and
    document level for each pipeline. Exit status: 0 passages found, 1 no passage matches, 2 an error."""
    import json

    from groundtune.data import DataError
    from groundtune.retrieval.index import Retriever

    try:
        if k < 1:
            raise ValueError(f"-k is {k}; it must be a whole number in [1, inf)")
        if limit is not None and limit < 1:
            raise ValueError(f"--limit is {limit}; it must be a whole number in [1, inf)")
        if eval_:
            from groundtune.fileio import guard_output

            guard_output(out, command="retrieve", inputs=[index_dir, reranker, *eval_], file=True)
        retriever = Retriever.load(index_dir, reranker=reranker)
        if eval_:
            _retrieval_eval(retriever, eval_, pipelines, limit, out)
            return
        if not query or not query.strip():
            raise ValueError("the QUERY is empty: give a question, or --eval FILE to score retrieval")
        from groundtune.retrieval.queries import build_query

        hits = retriever.search(build_query(query, history), k, method=method)
    except (ValueError, FileNotFoundError, ImportError, DataError) as err:
        _retrieval_error("retrieve", err)
    if not hits:
        typer.echo(f"no passage in {index_dir} matches the query (no query word is in the index); exit status 1",
                   err=True)
        raise typer.Exit(NO_MATCH)
    for rank, hit in enumerate(hits, start=1):
        p = hit.passage
        if as_json:
            typer.echo(json.dumps({"rank": rank, "score": hit.score, "passage": hit.index, **p.to_dict()}, ensure_ascii=False))
        else:
            text = p.text if len(p.text) <= 300 else p.text[:297] + "..."
            typer.echo(f"{rank:>2}. [{hit.score:.4f}] {p.doc_id}" + (f"  spans {','.join(p.span_ids)}" if p.span_ids else ""))
            typer.echo(f"    {text}")


def _retrieval_eval(retriever, files, pipelines, limit, out):
    import json

    from groundtune.fileio import atomic_write
    from groundtune.retrieval.evaluate import evaluate_question_files, format_table

    names = [p.strip() for p in pipelines.split(",") if p.strip()] if pipelines else None
    report, n, results = evaluate_question_files(retriever, files, names, limit)
    typer.echo(str(report))
    typer.echo(format_table(results))
    payload = {"index": retriever.meta, "queries": n, "dropped": report.as_dict()["dropped"], "results": results}
    atomic_write(out, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    typer.echo(f"report: {out}")


@app.command("train-reranker")
def train_reranker_cmd(
    index_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Index folder whose passages are ranked."),
    dialogues: list[Path] = typer.Argument(..., exists=True, help="Training dialogues (doc2dial / MultiDoc2Dial JSON) "
                                           "or reading-comprehension .jsonl question files, grounded in the index's documents."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the trained reranker (a new or empty one; "
                             "written atomically)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a folder `groundtune train-reranker` wrote "
                                   "(the old one goes only once the new one is complete)."),
    kind: str = typer.Option("late-interaction", help="late-interaction (token-level MaxSim over the encoder, "
                             "learns in minutes on a CPU) or cross-encoder (a new head; needs far more steps)."),
    negatives: Optional[int] = typer.Option(None, help="Hard negatives mined per query from the index's default "
                                            "pipeline (default: 7 for late-interaction, which shows one a step, drawn "
                                            "afresh each epoch, beside the batch's other passages; 3 for cross-encoder)."),
    epochs: Optional[int] = typer.Option(None, help="Passes over the training queries (default: 2 for "
                                         "late-interaction, 1 for cross-encoder)."),
    batch_size: Optional[int] = typer.Option(None, help="Questions per optimizer step, each with its positive and "
                                             "negatives (default: 16 for late-interaction, 4 for cross-encoder)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate, linear warm-up over 10%, then linear decay "
                                       "(default: 2e-5 for late-interaction, 1e-4 for cross-encoder)."),
    max_length: int = typer.Option(256, help="Passage tokens (late-interaction) or query + passage tokens "
                                   "(cross-encoder)."),
    max_query_tokens: int = typer.Option(64, help="The query keeps its first N tokens (question, newest turns)."),
    base: Optional[str] = typer.Option(None, help="BERT-style or sentence-transformers checkpoint folder to start "
                                       "from; default: the shipped all-MiniLM-L6-v2 (English only)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N queries."),
    seed: int = typer.Option(0, help="Seed for shuffling (and the cross-encoder's new head)."),
):
    """Train a reranker from (query, gold passage, hard negatives) built from grounded dialogues; the negatives
    are the best passages of the index's default pipeline that cover none of the gold spans."""
    from groundtune.data import DataError
    from groundtune.retrieval.index import Retriever
    from groundtune.retrieval.queries import load_queries
    from groundtune.fileio import guard_output
    from groundtune.retrieval.rerank import DEFAULTS, KINDS, mine_examples, train_reranker

    if kind not in KINDS:
        fail(f"--kind is {kind!r}; use one of {', '.join(KINDS)}")
    for name, value, least in (("--negatives", negatives, 1), ("--epochs", epochs, 1), ("--batch-size", batch_size, 1),
                               ("--max-length", max_length, 8), ("--max-query-tokens", max_query_tokens, 1),
                               ("--limit", limit, 1)):
        if value is not None and value < least:
            fail(f"{name} is {value}; it must be a whole number in [{least}, inf)")
    if lr is not None and not lr > 0:
        fail(f"--lr is {lr}; it must be in (0, inf)")
    guard_output(out, command="train-reranker", inputs=[index_dir, *dialogues, base and Path(base)], overwrite=overwrite)
    try:
        retriever = Retriever.load(index_dir)
        _refuse_english_base_on_korean(retriever, base)
        queries, report = load_queries(dialogues)
        typer.echo(str(report))
        queries = queries[:limit] if limit else queries
        examples, dropped = mine_examples(retriever, queries, negatives=negatives or DEFAULTS[kind]["negatives"],
                                          method="default")
        typer.echo(f"{len(examples):,} training queries; dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
        train_reranker(examples, out, kind=kind, base=base, epochs=epochs, batch_size=batch_size, lr=lr,
                       max_length=max_length, max_query_tokens=max_query_tokens, seed=seed)
    except (ValueError, FileNotFoundError, ImportError, DataError) as err:
        _retrieval_error("train-reranker", err)
    typer.echo(f"reranker: {out}")


@app.command()
def synth(
    index_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Index folder from `groundtune index`."),
    out: Path = typer.Option(..., "--out", "-o", help="jsonl of kept questions (train-reranker and train read it); "
                             "an existing one is resumed: passages already decided are skipped."),
    model: Optional[str] = typer.Option(None, help="Teacher model (folder, .gguf or hub id); default: the embedded "
                                        "SmolLM2-135M-Instruct."),
    teacher_url: Optional[str] = typer.Option(None, help="Teacher endpoint instead: an OpenAI-compatible "
                                              "/v1/completions or /v1/chat/completions address (groundtune serve is one)."),
    teacher_model: Optional[str] = typer.Option(None, help="The `model` field sent to --teacher-url (default: the first "
                                                "one its /v1/models lists)."),
    api_key: Optional[str] = typer.Option(None, envvar="GROUNDTUNE_TEACHER_KEY", help="Bearer key for --teacher-url."),
    answers: bool = typer.Option(False, "--answers", help="Also have the teacher answer each kept question (needed "
                                 "for `groundtune train`; train-reranker needs only questions)."),
    limit: Optional[int] = typer.Option(None, help="Only this many passages (drawn at random with --seed)."),
    seed: int = typer.Option(0, help="Order in which passages are drawn."),
    round_trip_k: int = typer.Option(5, help="Keep a question only if it retrieves its own passage in the top k."),
    batch_size: int = typer.Option(8, help="Passages per teacher batch."),
    max_new_tokens: int = typer.Option(48, help="Teacher tokens per question or answer."),
    timeout: float = typer.Option(60.0, help="Seconds per --teacher-url request before it counts as failed."),
    retries: int = typer.Option(2, help="Retries per --teacher-url request (then a counted teacher_error)."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop after this many minutes (rerun to go on)."),
):
    """Generate questions (and answers) from an index's passages with a teacher model, keep those that pass the
    filters (length, verbatim copy, duplicate, round-trip retrieval), and count each drop by reason."""
    import random

    from groundtune.retrieval.index import Retriever
    from groundtune.fileio import guard_output
    from groundtune.retrieval.synth import EndpointTeacher, LocalTeacher, SynthConfig, done_path, synthesize

    for name, value, least in (("--limit", limit, 1), ("--round-trip-k", round_trip_k, 1),
                               ("--batch-size", batch_size, 1), ("--max-new-tokens", max_new_tokens, 1),
                               ("--retries", retries, 0)):
        if value is not None and value < least:
            fail(f"{name} is {value}; it must be a whole number in [{least}, inf)")
    if model and teacher_url:
        fail("give --model or --teacher-url, not both")
    for path in (out, done_path(out)):  # the questions and the record of passages done, which a rerun goes on from
        guard_output(path, command="synth", inputs=[index_dir], file=True)
    try:
        retriever = Retriever.load(index_dir)
        ids = list(range(len(retriever.passages)))
        random.Random(seed).shuffle(ids)
        teacher = (EndpointTeacher(teacher_url, model=teacher_model, api_key=api_key, timeout=timeout, retries=retries,
                                   max_new_tokens=max_new_tokens) if teacher_url
                   else LocalTeacher.load(model, max_new_tokens=max_new_tokens, batch_size=batch_size))
        report = synthesize(retriever, teacher, out, passage_ids=ids[:limit] if limit else ids,
                            config=SynthConfig(round_trip_k=round_trip_k, answers=answers, batch_size=batch_size),
                            max_seconds=max_minutes * 60 if max_minutes else None)
    except (ValueError, FileNotFoundError, ImportError) as err:
        _retrieval_error("synth", err)
    import json

    typer.echo(report.summary())
    typer.echo(json.dumps(report.to_dict()))
    typer.echo(f"questions: {out}")


def _refuse_english_base_on_korean(retriever, base: Optional[str]) -> None:
    """The default base encoder is English-only: on a Korean index it would learn from word pieces that mean
    nothing (the same reason `index` builds no dense vectors there)."""
    from groundtune.retrieval.dense import encoder_languages
    from groundtune.retrieval.index import covers

    language = retriever.meta.get("language", "en")
    languages = encoder_languages(base)
    if not covers(languages, language):
        raise ValueError(f"the reranker's base encoder covers {languages}, not this {language} index; pass --base "
                         "a checkpoint that reads it (a multilingual sentence-transformers "
                         "model, for one)")

# --- chat vector commands (merge) ---

merge_app = typer.Typer(
    help="Chat Vector: give a continually pre-trained model chat ability without training, "
    "θ_target + Σ w (θ_chat − θ_base), streamed over safetensors in bounded memory.",
    no_args_is_help=True,
)
app.add_typer(merge_app, name="merge")

_SKIP_HELP = "Glob pattern of tensors the target keeps unchanged, e.g. '*norm*'; repeat for several."
_TOKEN_MAP_HELP = ("Target token id -> chat token id, for embedding and LM-head rows when vocabularies differ: a JSON "
                   "file ({\"32000\": 2}) or 32000:2,32001:32002. Only mapped rows get the vector.")
_TEMPLATE_HELP = ("Where the chat template and eos token come from: a model folder, or 'target' to keep the "
                  "target's. Default: the first chat model (or saved vector).")
_SHARD_HELP = "Largest output shard, e.g. 5GB or 500MB."
_OVERWRITE_HELP = ("Replace an output folder an earlier merge wrote (the old one goes only once the new one is "
                   "complete; a folder holding other files is refused).")


def _merge_report(step, *args, **kwargs):
    """Run a merge step and print its summary (bad input ends in the app's one error handler)."""
    typer.echo(step(*args, **kwargs).summary())


def _merge_recipe(config, chat, base, ratio) -> dict:
    """Keyword arguments for merge() from --config and the vector flags (--chat replaces the config's vectors,
    --ratio alone re-weights them)."""
    from groundtune.merge import Vector, load_merge_config

    recipe = load_merge_config(config) if config else {}
    if chat:
        if base is None:
            raise typer.BadParameter("--chat needs --base (the model the chat model was tuned from)")
        recipe["vectors"] = [Vector(r, chat=c, base=base) for c, r in zip(chat, _pair_ratios(chat, ratio, "--chat"))]
    elif base is not None:
        raise typer.BadParameter("--base goes with --chat")
    elif ratio:
        vectors = recipe.get("vectors") or []
        for vector, r in zip(vectors, _pair_ratios(vectors, ratio, "config vector")):
            vector.ratio = r
    return recipe


def _pair_ratios(paths: list, ratios: list[float], what: str) -> list[float]:
    if not ratios:
        return [1.0] * len(paths)
    if len(ratios) != len(paths):
        raise typer.BadParameter(f"give one --ratio per {what}: {len(paths)} {what}, {len(ratios)} --ratio")
    return ratios


@merge_app.command("chat-vector")
def merge_chat_vector(
    target: Optional[Path] = typer.Option(None, "--target", help="The continually pre-trained model (e.g. a Korean CP) "
                                          "that receives the vector(s); its config and tokenizer are kept."),
    chat: list[Path] = typer.Option([], "--chat", help="Chat / instruction-tuned model; repeat for several vectors."),
    base: Optional[Path] = typer.Option(None, "--base", help="The base model the chat model(s) were tuned from."),
    ratio: list[float] = typer.Option([], "--ratio", help="Weight w of each chat vector, one per --chat (default 1.0)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder; written to a temporary sibling and renamed "
                                       "into place only when complete."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="YAML recipe: target, out, base, vectors ([{chat, ratio} or {vector, "
                                          "ratio}]), skip, token_map, template_from, max_shard_size. Flags given on "
                                          "the command line win over it."),
    skip: list[str] = typer.Option([], "--skip", help=_SKIP_HELP),
    token_map: Optional[str] = typer.Option(None, "--token-map", help=_TOKEN_MAP_HELP),
    template_from: Optional[str] = typer.Option(None, "--template-from", help=_TEMPLATE_HELP),
    max_shard_size: Optional[str] = typer.Option(None, "--max-shard-size", help=_SHARD_HELP + " Default 5GB."),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
):
    """Merge in one pass: out = target + Σ ratio_i (chat_i − base). Tensors stream a chunk at a time, so memory
    stays flat whatever the model size. Embeddings and LM head stay the target's when vocabularies differ (or
    get only --token-map rows); the chat template and eos come from the chat model."""
    from groundtune.merge import merge

    recipe = _merge_recipe(config, chat, base, ratio)
    flags = {"target": target, "out": out, "token_map": token_map, "template_from": template_from,
             "max_shard_size": max_shard_size}
    recipe.update({k: v for k, v in flags.items() if v is not None})
    if skip:
        recipe["skip"] = skip
    recipe["overwrite"] = overwrite or recipe.get("overwrite", False)
    for key, flag in (("target", "--target"), ("out", "--out"), ("vectors", "--chat")):
        if not recipe.get(key):
            raise typer.BadParameter(f"{flag} is required (or give it in --config)")
    _merge_report(merge, recipe.pop("target"), recipe.pop("vectors"), recipe.pop("out"), **recipe)


@merge_app.command("extract")
def merge_extract(
    base: Path = typer.Option(..., "--base", help="The base model the chat model was tuned from."),
    chat: Path = typer.Option(..., "--chat", help="The chat / instruction-tuned model."),
    out: Path = typer.Option(..., "--out", help="Folder for the vector (vector*.safetensors, chat_vector.json and "
                             "the chat model's tokenizer files)."),
    skip: list[str] = typer.Option([], "--skip", help="Glob pattern of tensors to leave out of the vector; repeatable."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 (applying it equals the one-shot merge bit for "
                              "bit), or bfloat16 / float16 for half the size."),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help=_SHARD_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
):
    """Save the chat vector θ_chat − θ_base, to add to one or more targets later with `groundtune merge apply`."""
    from groundtune.merge import extract_vector

    _merge_report(extract_vector, base, chat, out, skip=skip, dtype=dtype, max_shard_size=max_shard_size,
                  overwrite=overwrite)


@merge_app.command("apply")
def merge_apply(
    target: Path = typer.Option(..., "--target", help="The model that receives the vector(s)."),
    vector: list[Path] = typer.Option(..., "--vector", help="A folder written by `groundtune merge extract`; "
                                      "repeat for several."),
    ratio: list[float] = typer.Option([], "--ratio", help="Weight of each vector, one per --vector (default 1.0)."),
    out: Path = typer.Option(..., "--out", help="Output folder (renamed into place only when complete)."),
    skip: list[str] = typer.Option([], "--skip", help=_SKIP_HELP),
    token_map: Optional[str] = typer.Option(None, "--token-map", help=_TOKEN_MAP_HELP),
    template_from: Optional[str] = typer.Option(None, "--template-from", help=_TEMPLATE_HELP),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help=_SHARD_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
):
    """Add saved vectors to a target: out = target + Σ ratio_i vector_i, with the same rules as chat-vector."""
    from groundtune.merge import Vector, merge

    ratios = _pair_ratios(vector, ratio, "--vector")
    _merge_report(lambda: merge(target, [Vector(r, saved=v) for v, r in zip(vector, ratios)], out, skip=skip,
                                token_map=token_map, template_from=template_from, max_shard_size=max_shard_size,
                                overwrite=overwrite))


# --- Korean instruction commands (classify) ---


@app.command()
def classify(
    data: Optional[Path] = typer.Argument(None, exists=True, dir_okay=False,
                                          help="Rows to classify (TSV with header, JSONL or JSON). Default: the shipped "
                                               "1k NSMC-derived test reviews."),
    pool: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                        help="Labelled rows the k-shot examples are drawn from. Default: the shipped "
                                             "139 genuine NSMC train rows."),
    shots: int = typer.Option(1, min=0, help="Examples per prompt (0 = zero-shot), balanced over the labels."),
    task: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                        help="Task YAML: template, labels, separator, text_field, label_field. "
                                             "Default: NSMC sentiment with the seed prompt."),
    model: Optional[str] = typer.Option(None, help="Model folder, .gguf file, hub id or smollm2-135m; default: "
                                                   "gemma3-270m (Gemma 3 270M, which reads Korean)."),
    adapter: Optional[Path] = typer.Option(None, exists=True, file_okay=False,
                                           help="Adapter folder to attach (any method), e.g. runs/x/adapter."),
    limit: Optional[int] = typer.Option(None, min=1, help="Classify only the first N rows."),
    seed: int = typer.Option(0, help="Seed of the k-shot example selection."),
    batch_size: int = typer.Option(8, min=1, help="Prompts per forward pass."),
    max_prompt_tokens: int = typer.Option(1024, min=8, help="Longer prompts lose tokens from their left."),
    dtype: Optional[str] = typer.Option(None, help="Weights dtype: float32 (default) or bfloat16 (about half the "
                                                   "CPU time)."),
    output: Optional[Path] = typer.Option(None, help="Write the report (and every prediction) as JSON here."),
    calibrate: Optional[str] = typer.Option(None, "--calibrate", help="Remove the prompt's bias towards one label: "
                                            "'contextual' (Zhao et al., 2021) divides the label probabilities by "
                                            "those of content-free inputs written with the same examples; 'batch' "
                                            "(Zhou et al., 2024) by their mean over the rows classified."),
    content_free: Optional[list[str]] = typer.Option(None, "--content-free", help="A content-free input for "
                                                     "--calibrate contextual (repeat it); default: 'N/A', '' and "
                                                     "'[MASK]'."),
):
    """In-context classification, NSMC-style: each label word (긍정 / 부정) is scored by its log-likelihood after
    the prompt (summed over its tokens) and the likelier one wins. Prints accuracy, macro-F1 and the confusion."""
    import json

    from groundtune import api
    from groundtune.tasks.classify import (CALIBRATIONS, CONTENT_FREE, ClassifyTask, classify as run_classify,
                                           load_labelled)
    from groundtune.data import asset_path
    from groundtune.fileio import atomic_write, guard_output
    from groundtune.models import check_dtype

    if calibrate is not None and calibrate not in CALIBRATIONS:
        fail(f"--calibrate {calibrate!r} is not a calibration: use one of {', '.join(CALIBRATIONS)}")
    if content_free and calibrate != "contextual":
        fail("--content-free is used only with --calibrate contextual: add it, or drop --content-free")
    if output:
        guard_output(output, command="classify", inputs=[data, pool, task, adapter], file=True)
    check_dtype(dtype)
    spec = ClassifyTask.from_yaml(task) if task else ClassifyTask()
    rows, report = load_labelled(data or asset_path("nsmc/ratings_test_derived_1k.txt"), spec)
    typer.echo(str(report), err=True)
    if not rows:
        fail(f"{report.source}: no rows to classify (see the drop report above); give a TSV with a header, JSONL or "
             f"JSON with the fields {spec.text_field!r} and {spec.label_field!r}")
    examples = []
    if shots:
        examples, pool_report = load_labelled(pool or asset_path("nsmc/ratings_train.txt"), spec)
        typer.echo(str(pool_report), err=True)
    net, tokenizer = api.model_with_adapter(model or "gemma3-270m", adapter, dtype)
    result = run_classify(net, tokenizer, rows[:limit], spec, shots=shots, pool=examples, seed=seed,
                          batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
                          calibration=calibrate, content_free=content_free or CONTENT_FREE)
    typer.echo(result.table())
    if output:
        summary = {"model": model or "gemma3-270m", "adapter": str(adapter) if adapter else None, "data": str(report.source),
                   **result.as_dict(predictions=True)}
        atomic_write(output, json.dumps(summary, ensure_ascii=False, indent=2) + "\n")


@app.command("summarize-eval")
def summarize_eval(
    data: Optional[Path] = typer.Argument(None, exists=True,
                                          help="Article/summary pairs: JSON, JSONL or a folder of JSON files. Default: "
                                               "five shipped sci-news-sum-kr-50 articles."),
    model: Optional[str] = typer.Option(None, help="Model folder, .gguf file, hub id or smollm2-135m; default: "
                                                   "gemma3-270m (Gemma 3 270M, which reads Korean)."),
    adapter: Optional[Path] = typer.Option(None, exists=True, file_okay=False, help="Adapter folder to attach."),
    template: Optional[str] = typer.Option(None, help="Wrap the seed prompt in an instruction template (koalpaca, "
                                                      "alpaca, chat or a YAML file), as the adapter was trained."),
    max_document_tokens: int = typer.Option(512, min=1, help="Articles are cut at their end beyond this."),
    max_new_tokens: int = typer.Option(128, min=1, help="Longest summary generated."),
    batch_size: int = typer.Option(4, min=1, help="Articles per generation batch."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate only the first N pairs."),
    dtype: Optional[str] = typer.Option(None, help="Weights dtype: float32 (default) or bfloat16."),
    output_dir: Optional[Path] = typer.Option(None, help="Write results.json and predictions.jsonl here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier `groundtune summarize-eval` output "
                                   "folder."),
):
    """Summarize each article with the seed prompt '주어진 기사를 요약하세요 기사: (문서)' and score against the
    reference with ROUGE-1, ROUGE-L, F1, SacreBLEU and METEOR on Kiwi morphemes."""
    import json

    from groundtune import api
    from groundtune.config import GenerationConfig
    from groundtune.data import asset_path
    from groundtune.fileio import atomic_write
    from groundtune.metrics import write_predictions
    from groundtune.fileio import guard_output
    from groundtune.models import check_dtype
    from groundtune.data.instruct import get_template
    from groundtune.tasks.summarize import evaluate_summaries, load_summaries

    if output_dir:
        guard_output(output_dir, command="summarize-eval", inputs=[data, adapter], overwrite=overwrite)
    check_dtype(dtype)
    if template is not None:
        get_template(template)
    pairs, report = load_summaries(data or asset_path("ko_summarization/sci-news-sum-kr-50"))
    typer.echo(str(report), err=True)
    if not pairs:
        fail(f"{data}: no article/summary pairs (see the drop report above); give JSON, JSONL or a folder of JSON "
             "files whose records hold an article and a summary")
    net, tokenizer = api.model_with_adapter(model or "gemma3-270m", adapter, dtype)
    gen = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    samples, predictions, scores, cut = evaluate_summaries(net, tokenizer, pairs[:limit], gen, template=template,
                                                           max_document_tokens=max_document_tokens)
    typer.echo(scores.table() + (f"note: {cut} articles cut to {max_document_tokens} tokens\n" if cut else ""))
    if output_dir:
        write_predictions(output_dir / "predictions.jsonl", predictions, [s.answer for s in samples],
                          [s.id for s in samples])
        summary = {"model": model or "gemma3-270m", "adapter": str(adapter) if adapter else None, "data": report.as_dict(),
                   "articles_cut": cut, **scores.as_dict()}
        atomic_write(output_dir / "results.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")



@app.command()
def serve(
    model: Optional[str] = typer.Option(None, help="Base model: folder, .gguf, hub id; default the embedded SmolLM2-135M-Instruct."),
    adapter: list[str] = typer.Option([], "--adapter", help="NAME=FOLDER of an adapter to serve as model NAME (repeatable)."),
    index: Optional[str] = typer.Option(None, help="Index folder (`groundtune index`): chat answers retrieve and cite passages."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs --api-key."),
    port: int = typer.Option(8000, help="Port."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="GROUNDTUNE_API_KEY",
                                          help="Clients must send 'Authorization: Bearer KEY' (16 characters at least); enables /admin."),
    max_batch: int = typer.Option(8, help="Most requests of one adapter generated together."),
    max_queue: int = typer.Option(64, help="Most waiting requests; beyond it the server answers 503 + Retry-After."),
    adapter_dir: Optional[str] = typer.Option(None, help="Folder where adapters uploaded to /admin are kept; a restart serves them again."),
    max_upload_mb: int = typer.Option(256, help="Largest adapter upload accepted, in MiB."),
    dtype: str = typer.Option("auto", help="auto (bfloat16 where the CPU has AVX512-BF16/AMX or the GPU supports it, "
                                           "else float32), float32 or bfloat16."),
):
    """Serve an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) and a chat page at /,
    each request's `model` picking one of the adapters, hot-swapped on one loaded base."""
    from groundtune.serve import serve as run_server

    run_server(model, adapter, index=index, host=host, port=port, api_key=api_key, max_batch=max_batch,
               max_queue=max_queue, adapter_dir=adapter_dir, max_upload_mb=max_upload_mb, dtype=dtype)

if __name__ == "__main__":
    app()
