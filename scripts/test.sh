#!/usr/bin/env bash
# Set up the environments (if needed), lint, and run the test suite; extra arguments go to pytest instead,
# e.g. `scripts/test.sh -m slow` for the long tests (then only in the default environment).
# Without arguments (what CI runs) it also runs the encoder and tokenizer tests (`-m encoders`) in a second
# environment holding transformers 4.57 (TRIERGON_VENV_TF4, default: the main one's path + "-tf4"), so both
# transformers generations are tested. It is a thin layer on the main one (transformers 4.57 and the versions of
# its dependencies that differ; PyTorch and the rest come from the main environment), re-built when that changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
ruff check .
python -c "import torch, transformers; print(f'[triergon] default environment: torch {torch.__version__}, transformers {transformers.__version__}')"
status=0
pytest "$@" || status=$?
if [ "$#" -eq 0 ]; then  # the second environment runs even when the first run failed, so CI reports both
  TF4="${TRIERGON_VENV_TF4:-$TRIERGON_VENV-tf4}"
  triergon_layer "$TF4" "$TRIERGON_VENV" "transformers==4.57.*"
  "$TF4/bin/python" -c "import torch, transformers; print(f'[triergon] second environment: torch {torch.__version__}, transformers {transformers.__version__}')"
  # exit code 5 (no tests selected) fails too: the encoder tests must exist under this marker
  "$TF4/bin/python" -m pytest -m "encoders and not slow" || status=$?
fi
exit "$status"
