#!/usr/bin/env bash
# Set up the environment (if needed), lint, and run the test suite. Extra arguments go to pytest,
# e.g. `scripts/test.sh -m slow` for the long tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
ruff check .
pytest "$@"
