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

# --- prompt-family commands (glue) ---

# --- retrieval commands (index, retrieve, train-reranker) ---

# --- chat vector commands (merge) ---

# --- Korean instruction commands (classify) ---


if __name__ == "__main__":
    app()
