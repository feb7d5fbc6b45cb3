"""`python -m groundtune ...` (what `accelerate launch -m groundtune` runs)."""

from groundtune.cli import app

app()
