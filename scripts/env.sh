#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install Tri-Ergon into it, editable, with the
# dev extras. Sourced by scripts/demo.sh and scripts/test.sh. Re-installs only when pyproject.toml changes.
#   TRIERGON_VENV  where the environment lives (default: .venv in the repository)
#   PYTHON         the interpreter that creates it (default: python3, which must be >= 3.10)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRIERGON_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[triergon] creating virtual environment in $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
STAMP="$VENV/.triergon-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[triergon] installing the package and its dependencies (first run: a few minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
