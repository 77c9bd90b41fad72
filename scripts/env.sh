#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install Tri-Ergon into it, editable, with the dev, train
# and eval extras, transformers 5.x and the test oracle (LanguageBind's 0.1.0 package, installed with --no-deps: its
# metadata pins transformers<5 and it is never a dependency of Tri-Ergon). Sourced by scripts/demo.sh and
# scripts/test.sh. Re-installs only when pyproject.toml, requirements.txt or this script change.
#   TRIERGON_VENV  where the environment lives (default: .venv in the repository)
#   PYTHON         the interpreter that creates it (default: python3, which must be >= 3.10)
# `triergon_env VENV TRANSFORMERS_SPEC` (defined here) builds another environment the same way; scripts/test.sh
# uses it for the transformers 4.57 environment of the encoder tests.
set -euo pipefail
TRIERGON_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

triergon_env() {
  local venv="$1" transformers="$2" stamp want
  if [ ! -x "$venv/bin/python" ]; then
    echo "[triergon] creating virtual environment in $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  stamp="$venv/.triergon-installed"
  want="$(cat "$TRIERGON_ROOT/pyproject.toml" "$TRIERGON_ROOT/requirements.txt" "$TRIERGON_ROOT/scripts/env.sh" \
    | sha256sum | cut -d' ' -f1) $transformers $TRIERGON_ROOT"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[triergon] installing into $venv: the package, its dependencies, $transformers (first run: a few minutes)" >&2
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$TRIERGON_ROOT[dev,train,eval]" "$transformers"
    # The test oracle without its dependencies: its model classes import transformers, torch, einops and peft;
    # pip's warning about its transformers<5 pin (not honoured with --no-deps) is expected and filtered out.
    local log="$venv/.triergon-oracle.log"
    "$venv/bin/python" -m pip install --quiet --no-deps "languagebind==0.1.0" > "$log" 2>&1 \
      || { cat "$log" >&2; return 1; }
    grep -v "languagebind 0.1.0 requires\|dependency resolver does not currently" "$log" >&2 || true
    echo "$want" > "$stamp"
  fi
}

TRIERGON_VENV="${TRIERGON_VENV:-$TRIERGON_ROOT/.venv}"
triergon_env "$TRIERGON_VENV" "transformers>=5"
export PATH="$TRIERGON_VENV/bin:$PATH"
