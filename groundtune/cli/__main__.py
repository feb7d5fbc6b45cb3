"""`python -m groundtune.cli ...`, the same as the `groundtune` command."""

from groundtune.cli import app

app()
