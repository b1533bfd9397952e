#!/usr/bin/env bash
# One command for the first GPU machine: the CUDA-only tests, then bench/gpu_throughput.py, in
# under 8 minutes in all (each part has its own `timeout`), written up in
# docs/results/gpu-throughput/README.md (GPU, driver, torch/CUDA/cuDNN, commit, commands, wall
# times, the tests' outcome, the benchmark's tables, `ratio:` last) and figures.json beside it.
#
#   bench/gpu_check.sh            # on a GPU machine, from the repository root or anywhere
#   bench/gpu_check.sh --smoke    # a CPU smoke (also what runs when torch sees no CUDA): tiny
#                                 # benchmark, the CUDA tests only listed; writes to a temp dir
#
# Needs only the virtual environment: .venv (made with `make venv` when missing).
# Budgets (seconds) can be changed through the environment: TESTS_S, BENCH_S.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
PY="${PY:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "gpu_check: no $PY; making the virtual environment (make venv)"
    make venv >/dev/null || { echo "gpu_check: make venv failed"; exit 2; }
fi

SMOKE=0
case "${1:-}" in
    --smoke) SMOKE=1 ;;
    "") ;;
    *) echo "gpu_check: unknown argument '$1' (only --smoke)"; exit 2 ;;
esac
if [ "$SMOKE" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device: running the CPU smoke instead"
    SMOKE=1
fi

if [ "$SMOKE" = 1 ]; then
    OUT="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-smoke.XXXXXX")"
    TESTS_S="${TESTS_S:-240}"; BENCH_S="${BENCH_S:-420}"
    BENCH_ARGS=(--width 0.125 --iterations 3 --warmup 1 --stats-every 2 --populations 2
                --modes eager,sync_free --folder-images 200 --budget-s $((BENCH_S - 60))
                --row-limit-s 120)
else
    OUT="$ROOT/docs/results/gpu-throughput"
    # 200 timed steps (+10 warm-up) per row: an eager dcgan32 step is ~290 kernel launches
    # (a few ms); a P = 64 pack ~10 ms plus its members' stats every 100 steps. The time budget
    # cuts the compiled rows (tens of seconds of compilation each) first, then notes the rest.
    TESTS_S="${TESTS_S:-200}"; BENCH_S="${BENCH_S:-250}"
    BENCH_ARGS=(--iterations 200 --warmup 10 --stats-every 100 --populations 4,16,64
                --budget-s $((BENCH_S - 40)) --row-limit-s 75)
fi
mkdir -p "$OUT"
LOG="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-logs.XXXXXX")"
export PYTHONPATH="$ROOT/bench${PYTHONPATH:+:$PYTHONPATH}"

# ---------------------------------------------------------------- the CUDA-only tests
mapfile -t CUDA_FILES < <(grep -rlE "skipif" tests --include='*.py' | xargs grep -li cuda | sort)
T0=$(date +%s)
if [ "$SMOKE" = 1 ]; then
    TEST_CMD=("$PY" -m pytest -p pytest_cuda_only -p no:cacheprovider --collect-only -q
              "${CUDA_FILES[@]}")
else
    TEST_CMD=("$PY" -m pytest -p pytest_cuda_only -p no:cacheprovider -q -rfEs
              --durations=15 "${CUDA_FILES[@]}")
fi
echo "gpu_check: ${TEST_CMD[*]#$ROOT/}  (timeout ${TESTS_S} s)"
timeout "$TESTS_S" "${TEST_CMD[@]}" >"$LOG/tests.txt" 2>&1
TESTS_RC=$?
TESTS_WALL=$(( $(date +%s) - T0 ))
TESTS_LAST="$(grep -E "passed|failed|error|selected|collected|no tests ran" "$LOG/tests.txt" | tail -1)"
[ "$TESTS_RC" = 124 ] && TESTS_LAST="timed out after ${TESTS_S} s (${TESTS_LAST:-no summary})"
tail -5 "$LOG/tests.txt"

# ---------------------------------------------------------------------- the benchmark
T0=$(date +%s)
BENCH_CMD=("$PY" bench/gpu_throughput.py "${BENCH_ARGS[@]}" --out "$OUT/bench.md")
echo "gpu_check: ${BENCH_CMD[*]#$ROOT/}  (timeout ${BENCH_S} s)"
timeout "$BENCH_S" "${BENCH_CMD[@]}" 2>&1 | tee "$LOG/bench.txt"
BENCH_RC=${PIPESTATUS[0]}
BENCH_WALL=$(( $(date +%s) - T0 ))
RATIO="$(grep -E '^ratio: ' "$LOG/bench.txt" | tail -1)"
[ -n "$RATIO" ] || RATIO="ratio: n/a (the benchmark did not finish: exit $BENCH_RC)"

# -------------------------------------------------------------------------- the write-up
VERSIONS="$("$PY" -c "import torch, platform; print(f'torch {torch.__version__}, CUDA ' \
f'{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, Python {platform.python_version()}')")"
if command -v nvidia-smi >/dev/null 2>&1; then
    GPU="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
           | head -1 | awk -F', ' '{print $1 " (driver " $2 ", " $3 ")"}')"
else
    GPU="none (CPU smoke: $(uname -m), $(nproc) cores)"
fi
COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || COMMIT="$COMMIT (with uncommitted changes)"
TOTAL=$(( $(date +%s) - START ))
{
    echo "# GPU check: CUDA tests and training throughput (bench/gpu_check.sh)"
    echo
    [ "$SMOKE" = 1 ] && echo "A CPU SMOKE RUN: not a GPU figure; the CUDA tests were only listed." && echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT"
    echo "- GPU: $GPU"
    echo "- $VERSIONS"
    echo "- command: \`bench/gpu_check.sh${1:+ $1}\`, wall time ${TOTAL} s"
    echo "- CUDA tests (${TESTS_WALL} s, exit $TESTS_RC): \`${TEST_CMD[*]#$ROOT/}\` → $TESTS_LAST"
    echo "- benchmark (${BENCH_WALL} s, exit $BENCH_RC): \`${BENCH_CMD[*]#$ROOT/}\`"
    echo "- $RATIO"
    echo
    echo "<details><summary>CUDA tests: the end of pytest's output</summary>"
    echo
    echo '```'
    tail -40 "$LOG/tests.txt"
    echo '```'
    echo "</details>"
    echo
    if [ -s "$OUT/bench.md" ]; then
        sed -e 's/^## /### /' -e '1s/^# /## /' "$OUT/bench.md"
        rm -f "$OUT/bench.md"
    else
        echo '```'
        tail -60 "$LOG/bench.txt"
        echo '```'
        echo
        echo "$RATIO"
    fi
} >"$OUT/README.md"
echo "gpu_check: wrote $OUT/README.md$([ -f "$OUT/figures.json" ] && echo " and figures.json") in ${TOTAL} s"
echo "$RATIO"
[ "$TESTS_RC" = 0 ] && [ "$BENCH_RC" = 0 ]
