"""Task commands beyond grounded dialogue: glue (encoders on GLUE), and the Korean ones, classify (NSMC-style
in-context classification) and summarize-eval. Heavy imports live inside each command so `--help` answers at
once."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from groundtune.cli.common import fail, parse_overrides
from groundtune.cli.options import KoreanModel, adapter_option, config_option, dtype_option, force_flag, limit_option, \
    model_option, output_dir_option, overrides_option, overwrite_flag, seed_option


def glue(
    task: Annotated[Optional[str], typer.Option(help="mrpc, stsb or sst2.")] = None,
    method: Annotated[Optional[str], typer.Option(
        help="accept, dept, prompt_tuning, bitfit, lora, llama_adapter, or full (every weight trains).")] = None,
    train: Annotated[Optional[Path], typer.Option(help="The task's GLUE train.tsv.")] = None,
    dev: Annotated[Optional[Path], typer.Option(help="The task's GLUE dev.tsv; default: a seeded share of train.")]
    = None,
    model: Annotated[Optional[str], model_option(
        "Sequence-classifier folder or hub id; default: the embedded all-MiniLM-L6-v2.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated seeds, one result row each (default 42).")]
    = None,
    output_dir: Annotated[Optional[Path], output_dir_option(
        "Where results.md/.csv/.jsonl and adapters go (runs/glue).")] = None,
    config: Annotated[Optional[Path], config_option(
        "GLUE run YAML (task, method block, data, schedule); options win over it.")] = None,
    set_: Annotated[list[str], overrides_option(
        "Override a setting, e.g. --set lr=1e-2 --set method.length=40 --set epochs=5.")] = [],
    overwrite: Annotated[bool, overwrite_flag("Replace an earlier `groundtune glue` output folder.")] = False,
    force: Annotated[bool, force_flag("Accept a learning rate above the method's sane bound.")] = False,
):
    """Train one method on a GLUE task (encoders; the task head trains too) and report accuracy and F1 (MRPC,
    SST-2) or Pearson and Spearman (STS-B), with the seed and the trainable-parameter count on each row."""
    from groundtune.fileio import guard_output
    from groundtune.tasks.glue import load_glue_config, markdown_table, run
    from groundtune.train import check_learning_rate

    overrides = parse_overrides(set_)
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

    cfg = load_glue_config(config, overrides)
    if not cfg.train:
        fail(f"no training file for {cfg.task}: pass --train (the task's train.tsv in GLUE's layout) or set train in "
             "--config")
    check_learning_rate(cfg.method.get("method", ""), cfg.lr, force=force, source=str(config or "glue options"))
    guard_output(cfg.output_dir, command="glue", inputs=[cfg.train, cfg.dev, config], overwrite=overwrite)
    rows = run(cfg, log=lambda line: typer.echo(line, err=True))
    typer.echo(markdown_table(rows))
    typer.echo(f"written to {cfg.output_dir}/results.md, results.csv and results.jsonl", err=True)


def classify(
    data: Annotated[Optional[Path], typer.Argument(
        exists=True, dir_okay=False, help="Rows to classify (TSV with header, JSONL or JSON). Default: the shipped 1k "
        "NSMC-derived test reviews.")] = None,
    pool: Annotated[Optional[Path], typer.Option(
        exists=True, dir_okay=False, help="Labelled rows the k-shot examples are drawn from. Default: the shipped 139 "
        "genuine NSMC train rows.")] = None,
    shots: Annotated[int, typer.Option(min=0, help="Examples per prompt (0 = zero-shot), balanced over the labels.")]
    = 1,
    task: Annotated[Optional[Path], typer.Option(
        exists=True, dir_okay=False, help="Task YAML: template, labels, separator, text_field, label_field. Default: "
        "NSMC sentiment with the seed prompt.")] = None,
    model: KoreanModel = None,
    adapter: Annotated[Optional[Path], adapter_option(
        "Adapter folder to attach (any method), e.g. runs/x/adapter.")] = None,
    limit: Annotated[Optional[int], limit_option("Classify only the first N rows.", least=1)] = None,
    seed: Annotated[int, seed_option("Seed of the k-shot example selection.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per forward pass.")] = 8,
    max_prompt_tokens: Annotated[int, typer.Option(min=8, help="Longer prompts lose tokens from their left.")] = 1024,
    dtype: Annotated[Optional[str], dtype_option(
        "Weights dtype: float32 (default), bfloat16 (about half the CPU time on a CPU with AVX512-BF16 or AMX, "
        "far slower without) or auto (bfloat16 only where the hardware runs it natively).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Write the report (and every prediction) as JSON here.")]
    = None,
    calibrate: Annotated[Optional[str], typer.Option(
        "--calibrate", help="Remove the prompt's bias towards one label: 'contextual' (Zhao et al., 2021) divides the "
        "label probabilities by those of content-free inputs written with the same examples; 'batch' (Zhou et al., "
        "2024) by their mean over the rows classified.")] = None,
    content_free: Annotated[Optional[list[str]], typer.Option(
        "--content-free", help="A content-free input for --calibrate contextual (repeat it); default: 'N/A', '' and "
        "'[MASK]'.")] = None,
):
    """In-context classification, NSMC-style: each label word (긍정 / 부정) is scored by its log-likelihood after
    the prompt (summed over its tokens) and the likelier one wins. Prints accuracy, macro-F1 and the confusion."""
    import json

    from groundtune import api
    from groundtune.data import asset_path
    from groundtune.fileio import atomic_write, guard_output
    from groundtune.models import check_dtype
    from groundtune.tasks.classify import (CALIBRATIONS, CONTENT_FREE, ClassifyTask, classify as run_classify,
                                           load_labelled)

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
        summary = {"model": model or "gemma3-270m", "adapter": str(adapter) if adapter else None,
                   "data": str(report.source), **result.as_dict(predictions=True)}
        atomic_write(output, json.dumps(summary, ensure_ascii=False, indent=2) + "\n")


def summarize_eval(
    data: Annotated[Optional[Path], typer.Argument(
        exists=True, help="Article/summary pairs: JSON, JSONL or a folder of JSON files. Default: five shipped "
        "sci-news-sum-kr-50 articles.")] = None,
    model: KoreanModel = None,
    adapter: Annotated[Optional[Path], adapter_option("Adapter folder to attach.")] = None,
    template: Annotated[Optional[str], typer.Option(
        help="Wrap the seed prompt in an instruction template (koalpaca, alpaca, chat or a YAML file), as the adapter "
        "was trained.")] = None,
    max_document_tokens: Annotated[int, typer.Option(min=1, help="Articles are cut at their end beyond this.")] = 512,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest summary generated.")] = 128,
    batch_size: Annotated[int, typer.Option(min=1, help="Articles per generation batch.")] = 4,
    limit: Annotated[Optional[int], limit_option("Evaluate only the first N pairs.", least=1)] = None,
    dtype: Annotated[Optional[str], dtype_option("Weights dtype: float32 (default), bfloat16 or auto (bfloat16 only where the hardware runs it natively).")] = None,
    output_dir: Annotated[Optional[Path], output_dir_option("Write results.json and predictions.jsonl here.")] = None,
    overwrite: Annotated[bool, overwrite_flag("Replace an earlier `groundtune summarize-eval` output folder.")] = False,
):
    """Summarize each article with the seed prompt '주어진 기사를 요약하세요 기사: (문서)' and score against the
    reference with ROUGE-1, ROUGE-L, F1, SacreBLEU and METEOR on Kiwi morphemes."""
    import json

    from groundtune import api
    from groundtune.config import GenerationConfig
    from groundtune.data import asset_path
    from groundtune.data.instruct import get_template
    from groundtune.fileio import atomic_write, guard_output
    from groundtune.metrics import write_predictions
    from groundtune.models import check_dtype
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
        summary = {"model": model or "gemma3-270m", "adapter": str(adapter) if adapter else None,
                   "data": report.as_dict(), "articles_cut": cut, **scores.as_dict()}
        atomic_write(output_dir / "results.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
