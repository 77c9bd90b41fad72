#!/usr/bin/env bash
# Set up the environment (if needed) and run the main job: `triergon demo` on the shipped demo model. Without
# arguments it writes into out/; any arguments replace that default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
if [ "$#" -eq 0 ]; then
  set -- -o out/
fi
triergon demo "$@"
