"""Retrieval commands: index, retrieve, train-reranker, synth. Heavy imports live inside each command so `--help`
answers at once."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from groundtune.cli.common import check_at_least, fail
from groundtune.retrieval.pipelines import first_stages, usage  # light: the stages import their libraries lazily
from groundtune.cli.options import index_argument, limit_option, model_option, out_option, overwrite_flag, seed_option
from groundtune.errors import GroundtuneError

NO_MATCH = 1  # `retrieve` found no passage (like grep: 1 is "nothing found", 2 is an error)


def index(
    sources: Annotated[list[Path], typer.Argument(
        exists=True, help="doc2dial / MultiDoc2Dial document JSON files, .pdf, .html, .docx, .md or .txt files, or "
        "folders of them (searched recursively).")],
    out: Annotated[Path, out_option("Index folder to write (a new or empty one; see --overwrite).")],
    overwrite: Annotated[bool, overwrite_flag(
        "Replace an index folder `groundtune index` wrote (the old one goes only once the new one is complete; other "
        "files are never deleted).")] = False,
    segmentation: Annotated[str, typer.Option(help="structure: one passage per section, 'titles // text' (markdown: "
                                              "per heading; text: per paragraph); token: 100-word windows.")]
    = "structure",
    words: Annotated[int, typer.Option(help="Words per window ('token' segmentation, and long sections).")] = 100,
    language: Annotated[str, typer.Option(help="BM25 tokenizer: en (words, stemmed when PyStemmer is installed), ko "
                                          "(Kiwi content morphemes), auto (decided per passage).")] = "auto",
    dense: Annotated[Optional[bool], typer.Option(
        "--dense/--no-dense", help="Embed passages for dense and hybrid retrieval. Default: yes, unless the encoder "
        "does not cover the corpus's language (the shipped all-MiniLM-L6-v2 is English-only: Korean gets BM25).")]
    = None,
    encoder: Annotated[Optional[str], typer.Option(help="sentence-transformers model folder for --dense; default: the "
                                                   "shipped all-MiniLM-L6-v2.")] = None,
    encoder_languages: Annotated[Optional[str], typer.Option(
        help="Comma-separated languages the encoder covers (e.g. ko,en or multilingual); default: its model card's "
        "`language:`.")] = None,
    dev: Annotated[list[Path], typer.Option(
        "--dev", exists=True, help="Your own dev questions (dialogue files or reading-comprehension .jsonl) grounded "
        "in these documents: the fusion's dense weight is chosen on them. Without them it is 0.5 (0 when the encoder "
        "does not cover the language). Repeatable.")] = [],
    max_file_mb: Annotated[float, typer.Option(help="Refuse (skip, inside a folder) files larger than this many MB.")]
    = 50,
):
    """Split documents into passages and build a BM25 index (plus dense vectors), saved for memory-mapped loading.
    Files of a folder that cannot be read (encrypted, scanned, corrupt, ...) are skipped and counted by reason."""
    import time

    from groundtune.data import DataError
    from groundtune.fileio import guard_output
    from groundtune.retrieval.index import build_index
    from groundtune.retrieval.passages import IngestReport, load_passages

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
        fail(err)
    typer.echo(f"index: {out}  ({time.perf_counter() - start:.1f}s)")


def retrieve(
    index_dir: Annotated[Path, index_argument("Index folder from `groundtune index`.")],
    query: Annotated[Optional[str], typer.Argument(help="The user's question (omit with --eval).")] = None,
    history: Annotated[list[str], typer.Option(
        "--history", help="An earlier turn as 'role: utterance', oldest first; repeat.")] = [],
    k: Annotated[int, typer.Option("-k", help="Passages to return (with --eval: recall is reported at 1, 5 and "
                                   "10).")] = 5,
    method: Annotated[Optional[str], typer.Option(
        help=f"A first stage: {', '.join(first_stages())} (hybrid: weighted reciprocal rank fusion); default: the "
        "index's (index.json fusion: hybrid, or bm25 when the dense weight is 0, e.g. an English encoder on a "
        "Korean corpus).")] = None,
    reranker: Annotated[Optional[Path], typer.Option(
        help="Reranker folder from `groundtune train-reranker` (or a sentence-transformers CrossEncoder / "
        "MultiVectorEncoder): re-scores the top 20.")] = None,
    eval_: Annotated[list[Path], typer.Option(
        "--eval", exists=True, help="Score retrieval instead: doc2dial / MultiDoc2Dial dialogue files, or "
        "reading-comprehension .jsonl question files; repeatable.")] = [],
    pipelines: Annotated[Optional[str], typer.Option(
        help=f"With --eval: comma-separated pipelines, each {usage()}, e.g. bm25,hybrid,hybrid+rerank (default: the "
        "index's first stages, and +rerank when a reranker is given).")] = None,
    limit: Annotated[Optional[int], limit_option("With --eval: only the first N queries.")] = None,
    out: Annotated[Path, typer.Option(help="With --eval: where the JSON report goes.")] = Path("retrieval-eval.json"),
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON lines instead of a table.")] = False,
):
    """Search an index for one question, or with --eval report recall@1/5/10 and MRR at passage and
    document level for each pipeline. Exit status: 0 passages found, 1 no passage matches, 2 an error."""
    import json

    from groundtune.data import DataError
    from groundtune.retrieval.index import Retriever

    try:
        if k < 1:
            raise GroundtuneError(f"-k is {k}; it must be a whole number in [1, inf)")
        if limit is not None and limit < 1:
            raise GroundtuneError(f"--limit is {limit}; it must be a whole number in [1, inf)")
        if eval_:
            from groundtune.fileio import guard_output

            guard_output(out, command="retrieve", inputs=[index_dir, reranker, *eval_], file=True)
        retriever = Retriever.load(index_dir, reranker=reranker)
        if eval_:
            _retrieval_eval(retriever, eval_, pipelines, limit, out)
            return
        if not query or not query.strip():
            raise GroundtuneError("the QUERY is empty: give a question, or --eval FILE to score retrieval")
        from groundtune.retrieval.queries import build_query

        hits = retriever.search(build_query(query, history), k, method=method)
    except (ValueError, FileNotFoundError, ImportError, DataError) as err:
        fail(err)
    if not hits:
        typer.echo(f"no passage in {index_dir} matches the query (no query word is in the index); exit status 1",
                   err=True)
        raise typer.Exit(NO_MATCH)
    for rank, hit in enumerate(hits, start=1):
        p = hit.passage
        if as_json:
            typer.echo(json.dumps({"rank": rank, "score": hit.score, "passage": hit.index, **p.to_dict()},
                                  ensure_ascii=False))
        else:
            text = p.text if len(p.text) <= 300 else p.text[:297] + "..."
            typer.echo(f"{rank:>2}. [{hit.score:.4f}] {p.doc_id}"
                       + (f"  spans {','.join(p.span_ids)}" if p.span_ids else ""))
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


def train_reranker(
    index_dir: Annotated[Path, index_argument("Index folder whose passages are ranked.")],
    dialogues: Annotated[list[Path], typer.Argument(
        exists=True, help="Training dialogues (doc2dial / MultiDoc2Dial JSON) or reading-comprehension .jsonl "
        "question files, grounded in the index's documents.")],
    out: Annotated[Path, out_option("Folder for the trained reranker (a new or empty one; written atomically).")],
    overwrite: Annotated[bool, overwrite_flag(
        "Replace a folder `groundtune train-reranker` wrote (the old one goes only once the new one is complete).")]
    = False,
    kind: Annotated[str, typer.Option(help="late-interaction (token-level MaxSim over the encoder, learns in minutes "
                                      "on a CPU) or cross-encoder (a new head; needs far more steps).")]
    = "late-interaction",
    negatives: Annotated[Optional[int], typer.Option(
        help="Hard negatives mined per query from the index's default pipeline (default: 7 for late-interaction, "
        "which shows one a step, drawn afresh each epoch, beside the batch's other passages; 3 for "
        "cross-encoder).")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        help="Passes over the training queries (default: 2 for late-interaction, 1 for cross-encoder).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="Questions per optimizer step, each with its positive and negatives (default: 16 for late-interaction, "
        "4 for cross-encoder).")] = None,
    lr: Annotated[Optional[float], typer.Option(
        help="Peak learning rate, linear warm-up over 10%, then linear decay (default: 2e-5 for late-interaction, "
        "1e-4 for cross-encoder).")] = None,
    max_length: Annotated[int, typer.Option(help="Passage tokens (late-interaction) or query + passage tokens "
                                            "(cross-encoder).")] = 256,
    max_query_tokens: Annotated[int, typer.Option(
        help="The query keeps its first N tokens (question, newest turns).")] = 64,
    base: Annotated[Optional[str], typer.Option(
        help="BERT-style or sentence-transformers checkpoint folder to start from; default: the shipped "
        "all-MiniLM-L6-v2 (English only).")] = None,
    limit: Annotated[Optional[int], limit_option("Only the first N queries.")] = None,
    seed: Annotated[int, seed_option("Seed for shuffling (and the cross-encoder's new head).")] = 0,
):
    """Train a reranker from (query, gold passage, hard negatives) built from grounded dialogues; the negatives
    are the best passages of the index's default pipeline that cover none of the gold spans."""
    from groundtune.data import DataError
    from groundtune.fileio import guard_output
    from groundtune.retrieval.index import Retriever
    from groundtune.retrieval.queries import load_queries
    from groundtune.retrieval.pipelines import reranker as reranker_stage
    from groundtune.retrieval.rerank import mine_examples, train_reranker as run_training, trainable_kinds

    if kind not in trainable_kinds():
        fail(f"--kind is {kind!r}; use one of {', '.join(trainable_kinds())}")
    check_at_least(("--negatives", negatives, 1), ("--epochs", epochs, 1), ("--batch-size", batch_size, 1),
                   ("--max-length", max_length, 8), ("--max-query-tokens", max_query_tokens, 1), ("--limit", limit, 1))
    if lr is not None and not lr > 0:
        fail(f"--lr is {lr}; it must be in (0, inf)")
    guard_output(out, command="train-reranker", inputs=[index_dir, *dialogues, base and Path(base)],
                 overwrite=overwrite)
    try:
        retriever = Retriever.load(index_dir)
        _refuse_english_base_on_korean(retriever, base)
        queries, report = load_queries(dialogues)
        typer.echo(str(report))
        queries = queries[:limit] if limit else queries
        examples, dropped = mine_examples(retriever, queries, negatives=negatives or reranker_stage(kind).defaults["negatives"],
                                          method="default")
        typer.echo(f"{len(examples):,} training queries; dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
        run_training(examples, out, kind=kind, base=base, epochs=epochs, batch_size=batch_size, lr=lr,
                     max_length=max_length, max_query_tokens=max_query_tokens, seed=seed)
    except (ValueError, FileNotFoundError, ImportError, DataError) as err:
        fail(err)
    typer.echo(f"reranker: {out}")


def synth(
    index_dir: Annotated[Path, index_argument("Index folder from `groundtune index`.")],
    out: Annotated[Path, out_option(
        "jsonl of kept questions (train-reranker and train read it); an existing one is resumed: passages already "
        "decided are skipped.")],
    model: Annotated[Optional[str], model_option(
        "Teacher model (folder, .gguf or hub id); default: the embedded SmolLM2-135M-Instruct.")] = None,
    teacher_url: Annotated[Optional[str], typer.Option(
        help="Teacher endpoint instead: an OpenAI-compatible /v1/completions or /v1/chat/completions address "
        "(groundtune serve is one).")] = None,
    teacher_model: Annotated[Optional[str], typer.Option(
        help="The `model` field sent to --teacher-url (default: the first one its /v1/models lists).")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="GROUNDTUNE_TEACHER_KEY",
                                                   help="Bearer key for --teacher-url.")] = None,
    answers: Annotated[bool, typer.Option(
        "--answers", help="Also have the teacher answer each kept question (needed for `groundtune train`; "
        "train-reranker needs only questions).")] = False,
    limit: Annotated[Optional[int], limit_option("Only this many passages (drawn at random with --seed).")] = None,
    seed: Annotated[int, seed_option("Order in which passages are drawn.")] = 0,
    round_trip_k: Annotated[int, typer.Option(
        help="Keep a question only if it retrieves its own passage in the top k.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Passages per teacher batch.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Teacher tokens per question or answer.")] = 48,
    timeout: Annotated[float, typer.Option(help="Seconds per --teacher-url request before it counts as failed.")]
    = 60.0,
    retries: Annotated[int, typer.Option(help="Retries per --teacher-url request (then a counted teacher_error).")]
    = 2,
    max_minutes: Annotated[Optional[float], typer.Option(help="Stop after this many minutes (rerun to go on).")]
    = None,
):
    """Generate questions (and answers) from an index's passages with a teacher model, keep those that pass the
    filters (length, verbatim copy, duplicate, round-trip retrieval), and count each drop by reason."""
    import json
    import random

    from groundtune.fileio import guard_output
    from groundtune.retrieval.index import Retriever
    from groundtune.retrieval.synth import EndpointTeacher, LocalTeacher, SynthConfig, done_path, synthesize

    check_at_least(("--limit", limit, 1), ("--round-trip-k", round_trip_k, 1), ("--batch-size", batch_size, 1),
                   ("--max-new-tokens", max_new_tokens, 1), ("--retries", retries, 0))
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
        fail(err)
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
        raise GroundtuneError(f"the reranker's base encoder covers {languages}, not this {language} index; pass --base "
                         "a checkpoint that reads it (a multilingual sentence-transformers "
                         "model, for one)")
