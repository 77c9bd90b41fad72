#!/usr/bin/env bash
# Kernel checks, then the real-time-factor and kernel benchmarks, on a freshly started GPU machine that reaches
# the package registries, in one call within BUDGET_S seconds (benchmarks/README.md has the details).
#
#   bash benchmarks/run_gpu.sh              # on the GPU machine: install, kernel tests, ceilings, RTF, kernels
#   bash benchmarks/run_gpu.sh --dry-run    # the same steps on the CPU with tiny sizes (checks the script)
#   bash benchmarks/run_gpu.sh --no-install # use PYTHON's environment as it is (triergon already installed)
#
# Environment: PYTHON (default python3), BUDGET_S (default 840), OUT (a folder that also receives the logs,
# JSON and the table), TRIERGON_VENV (where a venv is made when PYTHON is not in one; default /tmp/triergon-venv).
#
# Install: like any user, `pip install -e .[dev]` from the registries. If PYTHON already runs in a virtual
# environment (GPU images ship one holding PyTorch), the project goes into it, so its CUDA PyTorch is kept;
# otherwise a venv with --system-site-packages is made, for the same reason. Nothing is carried.
# Order (most important first, each step under `timeout`, skipped when the budget is spent): the whole kernel
# test suite on the card (attention and Snake, bf16 included, seeded by tests/conftest.py), the card's
# ceilings, the RTF of the presets (eager reference path vs the optimised ones: conditioning prepared once, the
# step compiled with CUDA graphs; and the offloaded VAE's memory and cost; bf16), then the kernel benchmarks. It prints one table and writes it to benchmarks/results/<date>-<card>.md. Exit status: 0 all
# passed, 1 a step failed or timed out, 2 no GPU, 3 the install failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 3
ROOT=$PWD
PY=${PYTHON:-python3}
DRY=0
INSTALL=1
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        --no-install) INSTALL=0 ;;
        -h | --help)
            sed -n '2,20p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "run_gpu.sh: unknown option $arg (use --dry-run, --no-install or --help)"
            exit 2
            ;;
    esac
done

START=$SECONDS
BUDGET=${BUDGET_S:-840}
RESULTS=benchmarks/results
RAW=${OUT:-$RESULTS/raw}
if ((DRY)); then
    RESULTS=${RAW}/dry-run
fi
mkdir -p "$RAW" "$RESULTS"
CHECKS=$RAW/checks.tsv
: > "$CHECKS"
exec > >(tee -a "$RAW/run.log") 2>&1
echo "run_gpu.sh: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown)," \
    "budget ${BUDGET} s$( ((DRY)) && echo ', DRY RUN on the CPU with tiny sizes')"

step() { # name, longest seconds, command...: runs it under `timeout` within the budget, records the result
    local name=$1 limit=$2 left rc result t0=$SECONDS
    shift 2
    left=$((BUDGET - (SECONDS - START) - 15))
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        printf '%s\t%s\t%s\n' "$name" "SKIPPED: time budget spent" 0 >> "$CHECKS"
        echo "=== $name: skipped, the time budget is spent"
        return 0
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
    echo "=== $name: $result in $((SECONDS - t0)) s"
}

# (a) a CUDA GPU (not for a dry run)
if ((!DRY)); then
    if ! nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader; then
        echo "run_gpu.sh: nvidia-smi failed: this is not a machine with an NVIDIA GPU (try --dry-run)"
        exit 2
    fi
fi

# (b) install like any user: the project, editable, with its test extras, from the registries
if ((INSTALL)); then
    if ! "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        VENV=${TRIERGON_VENV:-/tmp/triergon-venv}
        echo "=== creating $VENV (--system-site-packages, so an installed PyTorch is reused)"
        "$PY" -m venv --system-site-packages "$VENV" || exit 3
        PY=$VENV/bin/python
    fi
    echo "=== pip install -e .[dev] into $("$PY" -c 'import sys; print(sys.prefix)')"
    t0=$SECONDS
    if ! timeout $((BUDGET / 2)) "$PY" -m pip install --quiet --disable-pip-version-check -e "${ROOT}[dev]"; then
        echo "run_gpu.sh: pip could not install the project and its test extras (above): this script needs the"
        echo "package registries (pip's own PIP_INDEX_URL / PIP_FIND_LINKS settings apply)."
        exit 3
    fi
    printf '%s\t%s\t%s\n' "install (pip install -e .[dev])" PASS $((SECONDS - t0)) >> "$CHECKS"
fi
if ! "$PY" -c "import triergon, pytest, pytest_benchmark"; then
    echo "run_gpu.sh: triergon, pytest or pytest-benchmark does not import with $PY (above)"
    exit 3
fi
if ((!DRY)) && ! "$PY" -c "import sys, torch, triton; sys.exit(not torch.cuda.is_available())"; then
    echo "run_gpu.sh: PyTorch ($PY) sees no CUDA device, or Triton is missing"
    exit 2
fi
"$PY" -c "import platform, torch; print(f'Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda})')"
unset TRITON_INTERPRET TRIERGON_KERNELS
export PYTHONUNBUFFERED=1

# (c) the kernel test suite on the card first: compiled kernels, bf16 included, seeded (conftest kept)
PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rs)
step "kernel tests (attention, Snake, backend switch) on the card" 300 \
    "${PYTEST[@]}" tests/test_kernel_attention.py tests/test_kernel_snake.py tests/test_kernel_backend.py

# (d) the card's ceilings, then the RTF (eager reference vs optimised, one process per case)
step "ceilings" 60 "$PY" benchmarks/ceilings.py --out "$RAW/ceilings.json"
ceiling=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1])).get('matmul_tflops') or '')" \
    "$RAW/ceilings.json" 2> /dev/null)
ALL=reference,cached,compiled,offload
if ((DRY)); then
    # preset seconds steps dtype limit variants; the compiled step traced by Dynamo only (inductor's code
    # generation takes minutes on a CPU)
    export TRIERGON_COMPILE_BACKEND=eager
    CASES=("tiny 1 3 float32 150 $ALL" "tiny 2 2 bfloat16 120 reference,cached")
else
    # the first compilation of a preset takes a minute or two (inductor's cache on disk serves the later cases)
    CASES=("triergon-l 60 100 bfloat16 270 $ALL" "triergon-l 60 25 bfloat16 120 reference,cached,compiled"
        "triergon-s 10 100 bfloat16 150 $ALL" "sao-1.0 10 100 bfloat16 90 reference,cached"
        "triergon-l 60 100 float32 150 reference,cached")
fi
for case in "${CASES[@]}"; do
    read -r preset seconds steps dtype limit variants <<< "$case"
    step "RTF $preset ${seconds} s, $steps steps, $dtype" "$limit" \
        "$PY" -m benchmarks.bench_rtf --preset "$preset" --seconds "$seconds" --steps "$steps" --dtype "$dtype" \
        --cfg-scale 7 --sampler dpmpp-2m --variants ${variants//,/ } --compile reduce-overhead \
        ${ceiling:+--ceiling-tflops "$ceiling"} --json "$RAW/rtf-$preset-$seconds-$steps-$dtype.json"
done
unset TRIERGON_COMPILE_BACKEND

# (e) the kernel benchmarks (ours vs eager / torch.compile / SDPA) with what is left
if ((DRY)); then
    export TRITON_INTERPRET=1 # "ours" runs only under the interpreter without a GPU
fi
step "bench_attention" 180 "${PYTEST[@]}" benchmarks/bench_attention.py --benchmark-json="$RAW/bench_attention.json"
step "bench_snake" 240 "${PYTEST[@]}" benchmarks/bench_snake.py --benchmark-json="$RAW/bench_snake.json"
unset TRITON_INTERPRET

# (f) one table (and the kernel report beside it)
card=$("$PY" -c "import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-')
    if torch.cuda.is_available() else 'cpu')" 2> /dev/null || echo unknown)
name=$(date -u +%F)-$card.md
shopt -s nullglob
rtf_files=("$RAW"/rtf-*.json)
bench_files=("$RAW"/bench_*.json)
{
    echo "# $card, $(date -u +%F), commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
    echo
    echo "Command: \`bash benchmarks/run_gpu.sh $*\`; $( ((DRY)) && echo 'DRY RUN: CPU, tiny sizes; not a measurement')"
    echo
    "$PY" -m benchmarks.bench_rtf --summarize "${rtf_files[@]}" /dev/null
    echo
    echo "| step | result | seconds |"
    echo "| --- | --- | --- |"
    sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$CHECKS"
} > "$RESULTS/$name"
if ((${#bench_files[@]})); then
    "$PY" benchmarks/report.py "${bench_files[@]}" --ceilings "$RAW/ceilings.json" --checks "$CHECKS" \
        --out "$RAW/kernels-$name" > /dev/null || echo "run_gpu.sh: the kernel report failed (above)"
fi
[[ $RAW == "$RESULTS"* ]] || cp "$RESULTS/$name" "$RAW/$name"
echo
cat "$RESULTS/$name"
echo
echo "run_gpu.sh: $RESULTS/$name written in $((SECONDS - START)) s"
if grep -qE $'\t(FAIL|TIMEOUT)' "$CHECKS"; then
    exit 1
fi
