"""Training and evaluation commands: demo, eval, train, sweep. Heavy imports live inside each command so `--help`
answers at once."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from groundtune.cli.common import fail, parse_overrides
from groundtune.cli.options import adapter_option, config_argument, config_option, force_flag, model_option, \
    output_dir_option, overrides_option, overwrite_flag
from groundtune.metrics import METRICS as METRIC_NAMES  # light: the metric objects import their libraries lazily


def demo(
    which: Annotated[Optional[str], typer.Argument(metavar="[en|ko|ko-rag]", help="Same as --lang: `groundtune demo ko`.")]
    = None,
    lang: Annotated[str, typer.Option("--lang", help="en: LLaMA-Adapter on doc2dial turns (SmolLM2); ko: KoAlpaca "
                                      "instruction tuning scored on held-out KoAlpaca records (Gemma 3 270M); ko-rag: a Korean "
                                      "grounded assistant on shipped Korean news (index, synth, train, serve, "
                                      "score).")] = "en",
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps of LLaMA-Adapter training (batch 4); default "
                                                 "60 (en), 30 (ko), 60 (ko-rag).")] = None,
    output_dir: Annotated[Optional[Path], output_dir_option(
        "Where the adapter, loss curve and predictions go; default runs/demo (en), runs/demo-ko (ko), "
        "runs/demo-ko-rag.")] = None,
    model: Annotated[Optional[str], model_option(
        "Model folder, .gguf file, hub id or gemma3-270m; default: the embedded SmolLM2 (en), gemma3-270m (ko, "
        "ko-rag).")]
    = None,
    overwrite: Annotated[bool, overwrite_flag("Replace an earlier demo's output folder.")] = False,
):
    """Train LLaMA-Adapter and score held-out data before and after. en: doc2dial turns, F1, METEOR, ROUGE-L and
    SacreBLEU, on the embedded SmolLM2-135M-Instruct. ko: KoAlpaca records, ROUGE-1/ROUGE-L/F1 on Kiwi morphemes
    and SacreBLEU (ko-mecab), on Gemma 3 270M, with a held-out loss curve. ko-rag: Korean news indexed with Kiwi
    BM25, questions by `synth`, LLaMA-Adapter on grounded answers, held-out questions answered with citations through
    `serve`, before and after. Each runs offline in a few CPU minutes."""
    import shutil

    from groundtune.fileio import guard_output
    from groundtune.tasks.demo import demo_config, korean_demo_config, run_demo, run_korean_demo

    lang = (which or lang).lower()
    if lang not in ("en", "ko", "ko-rag"):
        fail(f"demo language is {lang!r}; choose en, ko or ko-rag (`groundtune demo ko`)")
    if steps is not None and steps < 1:
        fail(f"--steps is {steps}; it must be a whole number in [1, inf)")
    output_dir = output_dir or Path({"ko": "runs/demo-ko", "ko-rag": "runs/demo-ko-rag"}.get(lang, "runs/demo"))
    guard_output(output_dir, command="demo", inputs=[model and Path(model)], overwrite=overwrite)
    if (output_dir / "checkpoint").exists():
        shutil.rmtree(output_dir / "checkpoint")  # the demo always starts afresh (the guard made sure it is ours)
    if lang == "ko-rag":
        from groundtune.tasks.korean_rag import korean_rag_config, run_korean_rag_demo

        run_korean_rag_demo(korean_rag_config(str(output_dir), steps or 60, model))
        return
    if lang == "ko":
        run_korean_demo(korean_demo_config(str(output_dir), steps or 30, model))
        return
    cfg = demo_config(str(output_dir), steps or 60)
    cfg.model = model
    run_demo(cfg)


def eval_(
    predictions: Annotated[Optional[Path], typer.Option(
        "--predictions", exists=True, dir_okay=False, help="JSONL with one record per line: prediction (string), "
        "reference (a string or a list of strings; the best one counts) and an optional id.")] = None,
    config: Annotated[Optional[Path], config_option(
        "Instead of --predictions: a run config YAML; generate for its eval split first (with --adapter attached, or "
        "the bare base model).")] = None,
    adapter: Annotated[Optional[Path], adapter_option(
        "Adapter folder to attach before generating (with --config).")] = None,
    index: Annotated[Optional[Path], typer.Option(
        "--index", exists=True, file_okay=False, help="With --config: retrieve -> generate -> score. Prompts hold the "
        "top-k passages this index (`groundtune index`) returns instead of the gold document (k and pipeline from "
        "the config's data.retrieval, else 3 and the index's default); adds retrieval recall, knowledge-F1 and scores "
        "split by whether the gold passage was retrieved.")] = None,
    lang: Annotated[str, typer.Option("--lang", help="en: the MultiDoc2Dial official scoring; ko: Kiwi morphemes "
                                      "(ko-mecab for SacreBLEU); auto: ko when the references are mostly Hangul.")]
    = "auto",
    metrics: Annotated[Optional[str], typer.Option(
        "--metrics", help=f"Comma-separated subset of {','.join(METRIC_NAMES)} (default: all).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Also write the report (scores, signatures, per-example scores) as JSON.")] = None,
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


def train(
    config: Annotated[Path, config_argument("Run config YAML (see examples/).")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint in output_dir (with the same "
                                         "settings; only logging ones or a longer max_steps / epochs may change).")]
    = False,
    resume_if_possible: Annotated[bool, typer.Option(
        "--resume-if-possible", help="--resume when output_dir holds a checkpoint, else start afresh (plain --resume "
        "without one is an error).")] = False,
    overwrite: Annotated[bool, overwrite_flag(
        "Start afresh in an output_dir an earlier `groundtune train` wrote (a checkpoint included); files it did not "
        "write are never deleted.")] = False,
    force: Annotated[bool, force_flag("Accept a learning rate above the method's sane bound.")] = False,
    set_: Annotated[list[str], overrides_option(
        "Override a config key, e.g. --set lr=3e-4 --set data.history_turns=1.")] = [],
):
    """Train one method on a frozen base model, then score the eval split (if any).

    Writes output_dir/adapter (peft layout), checkpoint/, losses.jsonl, loss.png, predictions.jsonl, results.json.
    For several machines run it under `accelerate launch` (see the README)."""
    from groundtune.config import load_config
    from groundtune.tasks.grounded import train_and_evaluate
    from groundtune.train import CHECKPOINT, check_learning_rate, prepare_output

    cfg = load_config(config, parse_overrides(set_))
    if not cfg.data.train:
        fail(f"{config}: data.train is not set (is the file empty?); give the training data file, e.g. "
             "data: {train: train.jsonl}")
    if resume_if_possible:
        resume = (Path(cfg.output_dir) / CHECKPOINT).exists()
    check_learning_rate(cfg.method.get("method", ""), cfg.lr, force=force, source=str(config))
    prepare_output(cfg, resume=resume, overwrite=overwrite)
    summary = train_and_evaluate(cfg, resume=resume, overwrite=overwrite)
    typer.echo(f"adapter: {summary['adapter']}  ({summary['trainable_params']:,} trainable parameters)")


def sweep(
    config: Annotated[Path, config_argument("Sweep YAML: a base config and runs with grids.")],
    output_dir: Annotated[Optional[Path], output_dir_option(
        "Default: the sweep's output_dir, else runs/<config name>.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the cells a stopped sweep left unfinished, from "
                                         "their checkpoints (their settings must be unchanged).")] = False,
    overwrite: Annotated[bool, overwrite_flag(
        "Start unfinished cells afresh (files the sweep did not write are never deleted).")] = False,
    force: Annotated[bool, force_flag("Accept learning rates above each method's sane bound.")] = False,
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
