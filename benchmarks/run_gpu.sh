#!/usr/bin/env bash
# Kernel checks and benchmarks on a lent GPU machine, in one call (benchmarks/README.md has the details).
#
#   bash benchmarks/run_gpu.sh                 # on the GPU machine; about 5 minutes, never more than BUDGET_S
#   bash benchmarks/run_gpu.sh --fetch-wheels  # on the development machine, once: the wheels the GPU image lacks
#
# On the GPU machine: checks that there is a CUDA GPU; installs the carried wheels (.whl/, only PyAV: the
# image has torch, triton, pytest and pytest-benchmark) into /tmp/site; makes this checkout importable as
# `triergon` without installing it; then runs, each under `timeout` and a shared time budget: the ceilings,
# the Snake kernel tests compiled for the GPU (bf16 included), the Snake benchmark and, if present, the
# attention benchmark. It writes the Markdown table to benchmarks/results/<date>-<card>.md and prints it.
# Logs, JSON and the table also go to $OUT when that is set (the device tool returns that folder).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}

if [[ ${1:-} == --fetch-wheels ]]; then
    # Carried folders must be ignored by git; the device tool then takes them along with `carry: [".whl"]`.
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    dev_py=${PYTHON:-.venv/bin/python}
    version=$($dev_py -c "import av; print(av.__version__)" 2> /dev/null || echo "")
    $dev_py -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "av${version:+==$version}"
    exit
fi

START=$SECONDS
BUDGET=${BUDGET_S:-540}
RESULTS=benchmarks/results
RAW=${OUT:-$RESULTS/raw}
mkdir -p "$RAW" "$RESULTS"
CHECKS=$RAW/checks.tsv
: > "$CHECKS"
exec > >(tee -a "$RAW/run.log") 2>&1

# (a) a CUDA GPU, seen by PyTorch
if ! nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader; then
    echo "run_gpu.sh: nvidia-smi failed: this is not a machine with an NVIDIA GPU"
    exit 2
fi
if ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "run_gpu.sh: PyTorch ($PY) sees no CUDA device"
    exit 2
fi

# (b) what the image lacks comes carried as wheels; the checkout itself is put on the path, not installed
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import triergon" 2> /dev/null; then
    mkdir -p /tmp/triergon-src && ln -sfn "$PWD" /tmp/triergon-src/triergon
    export PYTHONPATH=/tmp/triergon-src${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import triergon, triton, pytest, pytest_benchmark"; then
    echo "run_gpu.sh: a package is missing (above). Fetch PyAV here with 'bash benchmarks/run_gpu.sh --fetch-wheels'"
    echo "and pass carry: [\".whl\"] to the device tool (benchmarks/README.md)."
    exit 3
fi
$PY -c "import torch, triton; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}')"
unset TRITON_INTERPRET TRIERGON_KERNELS

# (c) the steps, each under `timeout`, all inside BUDGET seconds (20 kept for the report)
step() {  # name, longest seconds, command...
    local name=$1 limit=$2 left rc result t0=$SECONDS
    shift 2
    left=$((BUDGET - (SECONDS - START) - 20))
    ((limit > left)) && limit=$left
    if ((limit < 15)); then
        printf '%s\t%s\t%s\n' "$name" "SKIPPED: time budget spent" 0 >> "$CHECKS"
        return
    fi
    echo "=== $name (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    case $rc in
        0) result=PASS ;;
        124 | 137) result="TIMEOUT after ${limit} s" ;;
        *) result="FAIL (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\n' "$name" "$result" $((SECONDS - t0)) >> "$CHECKS"
}

PYTEST=($PY -m pytest -p no:cacheprovider --noconftest)
step "ceilings" 90 $PY benchmarks/ceilings.py --out "$RAW/ceilings.json"
step "Snake kernel tests, compiled for the GPU" 180 "${PYTEST[@]}" tests/test_kernel_snake.py -q -rs
step "bench_snake (providers checked against float64 first)" 240 \
    "${PYTEST[@]}" benchmarks/bench_snake.py -q --benchmark-json="$RAW/bench_snake.json"
if [[ -f benchmarks/bench_attention.py ]]; then
    step "bench_attention" 180 "${PYTEST[@]}" benchmarks/bench_attention.py -q \
        --benchmark-json="$RAW/bench_attention.json"
fi

# (d) one table
card=$($PY -c "import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
name=$(date +%F)-$card.md
$PY benchmarks/report.py "$RAW"/bench_*.json --ceilings "$RAW/ceilings.json" --checks "$CHECKS" \
    --out "$RESULTS/$name"
[[ $RAW == "$RESULTS"* ]] || cp "$RESULTS/$name" "$RAW/$name"
echo "run_gpu.sh: $RESULTS/$name written in $((SECONDS - START)) s"
if grep -qE $'\t(FAIL|TIMEOUT)' "$CHECKS"; then
    exit 1
fi
