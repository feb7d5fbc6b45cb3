#!/usr/bin/env bash
# What will break before users find it: install the newest versions that pyproject.toml's ranges allow into a
# fresh virtual environment (no lock), run the test suite there, and show how those versions differ from
# requirements.lock. With --write-lock, a green run rewrites requirements.lock with them.
#   bash scripts/check_latest.sh [--write-lock] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
write_lock=0
if [ "${1:-}" = "--write-lock" ]; then write_lock=1; shift; fi
venv=$(mktemp -d "${TMPDIR:-/tmp}/groundtune-latest.XXXXXX")
trap 'rm -rf "$venv"' EXIT
GROUNDTUNE_VENV="$venv" GROUNDTUNE_LOCK="" bash install.sh
"$venv/bin/python" -m pip install --disable-pip-version-check -q --upgrade --upgrade-strategy eager -e ".[dev]"
fresh=$(mktemp)
"$venv/bin/python" -m pip freeze --exclude-editable | sed 's/+cpu$//' | grep -v '^groundtune' | sort -f > "$fresh"
echo "== versions that differ from requirements.lock (< lock, > newest allowed):"
diff <(grep -v '^#' requirements.lock | sort -f) "$fresh" || true
status=0
"$venv/bin/python" -m pytest "$@" || status=$?
if [ "$status" = 0 ] && [ "$write_lock" = 1 ]; then
  { grep '^#' requirements.lock; cat "$fresh"; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock
  echo "requirements.lock rewritten; commit it with the suite's result"
fi
rm -f "$fresh"
exit "$status"
