#!/usr/bin/env bash
# Kernel checks, then the real-time-factor and kernel benchmarks, on a freshly started GPU machine that reaches
# the package registries, in one call within BUDGET_S seconds (benchmarks/README.md has the details).
#
#   bash benchmarks/run_gpu.sh                  # on the GPU machine: install, kernel tests, ceilings, RTF, kernels
#   bash benchmarks/run_gpu.sh --dry-run        # the same steps on the CPU with tiny sizes (checks the script)
#   bash benchmarks/run_gpu.sh --no-install     # use PYTHON's environment as it is (triergon already installed)
#   bash benchmarks/run_gpu.sh --wheels DIR     # a GPU machine without registries: install offline from DIR
#   bash benchmarks/run_gpu.sh --download-wheels DIR   # (where the registries are) fill DIR for that machine
#
# Environment: PYTHON (default python3), BUDGET_S (default 840), OUT (a folder that receives the run's log as it
# goes, then the table, the kernel report and every raw file in one archive: at most 4 files), TRIERGON_VENV (where
# a venv is made when PYTHON is not in one; default /tmp/triergon-venv); for --download-wheels, WHEELS_PYTHON (the
# GPU machine's Python, default 3.12) and WHEELS_EXTRA (more requirements to fetch, space-separated).
#
# Install: like any user, `pip install -e .[dev]` from the registries. If PYTHON already runs in a virtual
# environment (GPU images ship one holding PyTorch), the project goes into it, so its CUDA PyTorch is kept;
# otherwise a venv with --system-site-packages is made, for the same reason. Nothing is carried. With
# --wheels DIR, pip reaches no index: `pip install -e .` takes what the environment lacks from DIR (the build's
# setuptools too), and the test tools must already be there. --download-wheels DIR fetches, for WHEELS_PYTHON on
# x86-64 Linux, what a GPU image with PyTorch, transformers, SciPy, matplotlib and pytest usually lacks: PyAV,
# pyloudnorm and setuptools (35 MB).
# Order (most important first, each step under `timeout`, skipped when the budget is spent): the whole kernel
# test suite on the card (attention and Snake, bf16 included, seeded by tests/conftest.py), the card's
# ceilings, the RTF of the presets (eager reference path vs the optimised ones: conditioning prepared once, the
# step compiled with CUDA graphs; and the offloaded VAE's memory and cost; bf16), then the kernel benchmarks. It
# prints one table and writes it to benchmarks/results/<date>-<card>.md. Exit status: 0 all passed, 1 a step
# failed or timed out, 2 no GPU (or a wrong option), 3 the install failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 3
ROOT=$PWD
PY=${PYTHON:-python3}
DRY=0
INSTALL=1
WHEELS=
FETCH=
ARGS="$*"
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --no-install) INSTALL=0 ;;
        --wheels | --download-wheels)
            if [[ -z ${2:-} ]]; then
                echo "run_gpu.sh: $1 needs a folder"
                exit 2
            fi
            if [[ $1 == --wheels ]]; then WHEELS=$(realpath -m "$2"); else FETCH=$2; fi
            shift
            ;;
        -h | --help)
            sed -n '2,28p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "run_gpu.sh: unknown option $1 (use --dry-run, --no-install, --wheels DIR, --download-wheels DIR or --help)"
            exit 2
            ;;
    esac
    shift
done

if [[ -n $FETCH ]]; then # the offline GPU machine's wheels, fetched here; the run itself happens there
    v=${WHEELS_PYTHON:-3.12}
    platforms=()
    for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do platforms+=(--platform "${tag}_x86_64"); done
    # PyAV and pyloudnorm as requirements.txt asks for them, the build backend as pyproject.toml does
    mapfile -t wanted < <(grep -E '^(av|pyloudnorm)\b' requirements.txt; grep -oE '"setuptools[>=~][^"]*' pyproject.toml | tr -d '"')
    # shellcheck disable=SC2086  # WHEELS_EXTRA is a list of requirements
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version "$v" --implementation cp "${platforms[@]}" \
        -d "$FETCH" "${wanted[@]}" ${WHEELS_EXTRA:-} || exit 3
    echo "run_gpu.sh: wheels for Python $v in $FETCH ($(du -sh "$FETCH" | cut -f1)); there: bash benchmarks/run_gpu.sh --wheels $FETCH"
    exit 0
fi
if [[ -n $WHEELS && ! -d $WHEELS ]]; then
    echo "run_gpu.sh: --wheels $WHEELS is not a folder"
    exit 2
fi

START=$SECONDS
BUDGET=${BUDGET_S:-840}
RESULTS=benchmarks/results
RAW=$RESULTS/raw/$( ((DRY)) && echo dry-run-)$(date -u +%Y%m%dT%H%M%SZ) # this run's raw files
if ((DRY)); then
    RESULTS=$RAW
fi
mkdir -p "$RAW" "$RESULTS" ${OUT:+"$OUT"}
CHECKS=$RAW/checks.tsv
: > "$CHECKS"
LOG=${OUT:-$RAW}/run.log # in OUT from the start, so that a run cut short still brings its log back
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
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
    pack
}

pack() { # every raw file so far, as one archive in OUT (a device call brings back only a few files)
    [[ -n ${OUT:-} ]] && tar -czf "$OUT/raw.tar.gz" -C "$RAW" . 2> /dev/null
    return 0
}

# (a) a CUDA GPU (not for a dry run)
if ((!DRY)); then
    if ! nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader; then
        echo "run_gpu.sh: nvidia-smi failed: this is not a machine with an NVIDIA GPU (try --dry-run)"
        exit 2
    fi
fi

# (b) install like any user: the project, editable, with its test extras, from the registries (or offline from
# --wheels DIR: the project and what it lacks, the test tools as they are)
if ((INSTALL)); then
    if ! "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        VENV=${TRIERGON_VENV:-/tmp/triergon-venv}
        echo "=== creating $VENV (--system-site-packages, so an installed PyTorch is reused)"
        "$PY" -m venv --system-site-packages "$VENV" || exit 3
        PY=$VENV/bin/python
    fi
    if [[ -n $WHEELS ]]; then
        what="pip install -e . (offline, from $WHEELS)"
        pip_args=(--no-index --find-links "$WHEELS" -e "$ROOT")
    else
        what="pip install -e .[dev]"
        pip_args=(-e "${ROOT}[dev]")
    fi
    echo "=== $what into $("$PY" -c 'import sys; print(sys.prefix)')"
    t0=$SECONDS
    if ! timeout $((BUDGET / 2)) "$PY" -m pip install --quiet --disable-pip-version-check "${pip_args[@]}"; then
        if [[ -n $WHEELS ]]; then
            echo "run_gpu.sh: pip found no wheel in $WHEELS for what this environment lacks (above). Where the"
            echo "registries are: WHEELS_PYTHON=$("$PY" -c 'import sys; print(*sys.version_info[:2], sep=".")')" \
                "WHEELS_EXTRA='<the missing requirements>' bash benchmarks/run_gpu.sh --download-wheels DIR"
        else
            echo "run_gpu.sh: pip could not install the project and its test extras (above): this script needs the"
            echo "package registries (pip's own PIP_INDEX_URL / PIP_FIND_LINKS settings apply), or --wheels DIR."
        fi
        exit 3
    fi
    printf '%s\t%s\t%s\n' "install ($what)" PASS $((SECONDS - t0)) >> "$CHECKS"
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
    echo "Command: \`bash benchmarks/run_gpu.sh $ARGS\`; $( ((DRY)) && echo 'DRY RUN: CPU, tiny sizes; not a measurement')"
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
[[ $RESULTS == "$RAW" ]] || cp "$RESULTS/$name" "$RAW/$name"
if [[ -n ${OUT:-} ]]; then
    cp "$RESULTS/$name" "$OUT/"
    [[ -f $RAW/kernels-$name ]] && cp "$RAW/kernels-$name" "$OUT/"
    pack
fi
echo
cat "$RESULTS/$name"
echo
echo "run_gpu.sh: $RESULTS/$name written in $((SECONDS - START)) s"
if grep -qE $'\t(FAIL|TIMEOUT)' "$CHECKS"; then
    exit 1
fi
