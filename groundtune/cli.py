"""The `groundtune` command. Heavy imports live inside each command so `--help` answers at once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="groundtune: adapt a frozen LLM to document-grounded dialogue and Korean instructions, cheaply, "
    "and measure the result honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- core commands (demo) ---

# --- training and evaluation commands (train, eval, sweep) ---


@app.command("eval")
def eval_(
    predictions: Path = typer.Option(..., "--predictions", exists=True, dir_okay=False,
                                     help="JSONL with one record per line: prediction (string), reference (a string or a list of "
                                     "strings; the best one counts) and an optional id."),
    lang: str = typer.Option("auto", "--lang", help="en: the MultiDoc2Dial official scoring; ko: Kiwi morphemes "
                             "(ko-mecab for SacreBLEU); auto: ko when the references are mostly Hangul."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated subset of F1,SacreBLEU,METEOR,ROUGE-L,ROUGE-1 (default: all)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the report (scores, signatures, per-example scores) as JSON."),
):
    """Score predictions: F1, SacreBLEU, METEOR, ROUGE-L and ROUGE-1, each x100, with the signature of each
    metric's settings."""
    from groundtune.fileio import atomic_write
    from groundtune.metrics import read_predictions, score

    chosen = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    try:
        records = read_predictions(predictions)
        report = score(records.predictions, records.references, lang=lang, metrics=chosen, ids=records.ids)
    except ValueError as err:
        typer.echo(f"groundtune eval: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.table(), nl=False)
    if out is not None:
        atomic_write(out, report.to_json(per_example=True))
        typer.echo(f"report: {out}")

# --- prompt-family commands (glue) ---

# --- retrieval commands (index, retrieve, train-reranker) ---

# --- chat vector commands (merge) ---

# --- Korean instruction commands (classify) ---


if __name__ == "__main__":
    app()
