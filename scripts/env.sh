#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install Tri-Ergon into it, editable, with the dev, train
# and eval extras, transformers 5.x and the test oracle (LanguageBind's 0.1.0 package, installed with --no-deps: its
# metadata pins transformers<5 and it is never a dependency of Tri-Ergon). Sourced by scripts/demo.sh and
# scripts/test.sh. Re-installs only when pyproject.toml, requirements.txt or this script change.
#   TRIERGON_VENV  where the environment lives (default: .venv in the repository)
#   PYTHON         the interpreter that creates it (default: python3, which must be >= 3.10)
# `triergon_env VENV TRANSFORMERS_SPEC` (defined here) builds an environment; `triergon_layer VENV BASE SPEC...`
# builds a thin one on top of BASE that holds only SPEC's packages (and what they need that BASE lacks or has in
# other versions) and takes everything else from BASE: scripts/test.sh uses it for the transformers 4.57
# environment of the encoder tests, which then costs about 160 MB instead of a second copy of PyTorch (6.5 GB).
set -euo pipefail
TRIERGON_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRIERGON_NEEDS_GB=8  # a new environment: PyTorch with its CUDA libraries (~6.5 GB installed) and pip's unpacking

_triergon_stamp() {  # what an environment was built from: the project's dependency files, this script, the extras
  echo "$(cat "$TRIERGON_ROOT/pyproject.toml" "$TRIERGON_ROOT/requirements.txt" "$TRIERGON_ROOT/scripts/env.sh" \
    | sha256sum | cut -d' ' -f1) $* $TRIERGON_ROOT"
}

_triergon_check_disk() {  # say so up front, instead of pip's "No space left on device" minutes later
  local dir free_kb
  dir="$(dirname "$1")"
  free_kb="$(df -Pk "$dir" | awk 'NR == 2 {print $4}')"
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((TRIERGON_NEEDS_GB * 1024 * 1024)) ]; then
    echo "[triergon] warning: $((free_kb / 1024)) MB free in $dir; a new environment needs about" \
      "${TRIERGON_NEEDS_GB} GB (TRIERGON_VENV=/path puts it elsewhere)" >&2
  fi
}

_triergon_pip() {  # _triergon_pip VENV LOG ARGS...: pip install ARGS into VENV, its output appended to LOG
  local venv="$1" log="$2"
  shift 2
  echo "\$ pip install $*" >> "$log"
  if ! "$venv/bin/python" -m pip install --quiet --no-cache-dir "$@" >> "$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "[triergon] pip install $* failed in $venv; its whole output is in $log" >&2
    return 1
  fi
}

triergon_env() {
  local venv="$1" transformers="$2" stamp want
  if [ ! -x "$venv/bin/python" ]; then
    _triergon_check_disk "$venv"
    echo "[triergon] creating virtual environment in $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  stamp="$venv/.triergon-installed"
  want="$(_triergon_stamp "$transformers")"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[triergon] installing into $venv: the package, its dependencies, $transformers (first run: a few minutes)" >&2
    rm -f "$stamp"
    # pip's output goes to a log, shown (its end) only when a step fails: setuptools' warnings about the weights
    # folders would otherwise bury the one line that matters
    local log="$venv/.triergon-install.log"
    : > "$log"
    _triergon_pip "$venv" "$log" --upgrade pip
    _triergon_pip "$venv" "$log" -e "$TRIERGON_ROOT[dev,train,eval]" "$transformers"
    # The test oracle without its dependencies: its model classes import transformers, torch, einops and peft.
    # pip's complaint about its transformers<5 pin (not honoured with --no-deps) is expected.
    _triergon_pip "$venv" "$log" --no-deps "languagebind==0.1.0"
    echo "$want" > "$stamp"
  fi
}

triergon_layer() {
  local venv="$1" base="$2" stamp want site base_site
  shift 2
  want="$(_triergon_stamp "$@") on $(cat "$base/.triergon-installed" 2>/dev/null || echo "$base")"
  stamp="$venv/.triergon-installed"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "[triergon] building $venv on $base: $* (the rest is $base's)" >&2
  if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
    echo "[triergon] $venv exists and is not a virtual environment; give another path" >&2
    return 1
  fi
  rm -rf "$venv"  # a layer is rebuilt whole: left-over packages of an older layer would shadow the base's
  "$base/bin/python" -m venv "$venv"  # the base's interpreter, so the base's packages fit it
  site="$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
  base_site="$("$base/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
  # addsitedir (not a plain path line) also runs the base's own .pth files: the editable install of Tri-Ergon is
  # one. The layer's site-packages comes first on sys.path, so its packages win over the base's.
  echo "import site; site.addsitedir('$base_site')" > "$site/_triergon_base.pth"
  # pip sees the base's packages as installed, keeps those that satisfy SPEC, and installs the others here; it
  # never removes the base's ("outside environment"), which stay hidden behind this layer's.
  _triergon_pip "$venv" "$venv/.triergon-install.log" "$@"
  echo "$want" > "$stamp"
}

if [ "${TRIERGON_ENV_FUNCTIONS_ONLY:-0}" != 1 ]; then  # =1: define the functions only (tests/test_env_script.py)
  TRIERGON_VENV="${TRIERGON_VENV:-$TRIERGON_ROOT/.venv}"
  triergon_env "$TRIERGON_VENV" "transformers>=5"
  export PATH="$TRIERGON_VENV/bin:$PATH"
fi
