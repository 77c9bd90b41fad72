#!/usr/bin/env bash
# Set up the environment (if needed) and run the main job: `triergon generate`. Without arguments it
# generates 4 s on the `tiny` preset into out/demo.wav; any arguments replace those defaults.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
if [ "$#" -eq 0 ]; then
  set -- --preset tiny --seconds 4 --seed 0 -o out/demo.wav
fi
triergon generate "$@"
