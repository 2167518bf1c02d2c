#!/usr/bin/env bash
# What runs on a lent GPU machine (the `device` tool), in one call of at most 9 minutes, most important first.
#
# That machine has Python 3.12 with torch, onnx and onnxruntime but no TVM and no network, so
# TVM travels with the call: `benchmarks/gpu_bundle.sh` (run here first) packs the apache-tvm
# and apache-tvm-ffi wheels into .gpu/ (git-ignored; xz keeps it under the 64 MiB a call carries).
# The call has one deadline (SESSION_S, default 520 s after the start); each phase gets its own cap
# or what is left of the deadline, whichever is less, and writes into $OUT as it goes, so a call
# cut short still returns what finished:
#   tests   the GPU-marked tests of tests/gpu (parity with onnxruntime on the card; the others pass without a GPU)
#   bench   bench_gpu.py: bert-large s128 and resnet50, fp32 and fp16, CUDA graph on, vs PyTorch eager and
#           torch.compile; accuracy against torch fp32 with TF32 off
#   tune    gpu_tune.py: MetaSchedule on the costliest bert-large fp16 kernels (this machine's cores build,
#           its GPU measures), dlight's schedules recorded as the baselines; database in $OUT/tune/db
#   tuned   bench_gpu.py: bert-large fp16 with that database vs without (each in its own process; the
#           untuned .so is the one the bench phase built)
# Usage there: bash benchmarks/gpu_session.sh   (the tool's `run`, carry [".gpu"]);
#   PHASES="tests tune tuned" BENCH_FLAGS=--no-torch-compile picks phases and passes flags to bench_gpu.py.
# Here, without a GPU: DRY_RUN=1 bash benchmarks/gpu_session.sh   (the TVM of .venv, bert tiny, builds only,
#   nothing measured; every JSON says "dry"). It proves the plumbing, not the numbers.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
DRY_RUN=${DRY_RUN:-0}
if [ "$DRY_RUN" = 1 ]; then
    # 2 shared cores build one model at a time here: the same phases, longer caps.
    : "${SESSION_S:=1500}" "${TEST_TIMEOUT:=150}" "${BENCH_TIMEOUT:=420}" "${TUNE_TIMEOUT:=420}" "${TUNED_TIMEOUT:=300}"
fi
SESSION_S=${SESSION_S:-520}
START=$SECONDS
# cap SECONDS [RESERVE]: a phase's timeout, the smaller of its cap and the time left before the deadline
cap() {
    local left=$(( SESSION_S - (SECONDS - START) - ${2:-5} ))
    if (( left < ${1} )); then echo $(( left > 1 ? left : 1 )); else echo "$1"; fi
}
log() { echo "[gpu_session +$(( SECONDS - START ))s] $*" | tee -a "$OUT/session.log"; }

if [ "$DRY_RUN" = 1 ]; then
    PY=${PY:-.venv/bin/python}
    [ -x "$PY" ] || PY=python3
    export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
    SIZE=${SIZE:-tiny}
    RESNET_SIZE=${RESNET_SIZE:-tiny}
    JOBS=${JOBS:-1}
    DRY_FLAGS="--dry-run"
    BENCH_DRY="--build-only"
    echo "dry run: no GPU, TVM from $PY" | tee "$OUT/device.txt"
else
    SITE=/tmp/autoglm-site
    if [ ! -f "$SITE/tvm/lib/libtvm_compiler.so" ]; then
        mkdir -p "$SITE"
        tar xJf .gpu/site-rest.tar.xz -C "$SITE" && xz -dc .gpu/libtvm_compiler.so.xz > "$SITE/tvm/lib/libtvm_compiler.so" || exit 3
    fi
    export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 AUTOGLM_CACHE=/tmp/autoglm-zoo
    # TVM's CUDA runtime links libcudart.so.13: the toolkit's, or the one torch's wheels bring.
    CUDART_DIRS=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets /opt /usr/lib -name 'libcudart.so.13*' -printf '%h:' 2>/dev/null)
    export LD_LIBRARY_PATH="${CUDART_DIRS}${LD_LIBRARY_PATH:-}"
    PY=${PY:-python3}
    SIZE=${SIZE:-large}
    RESNET_SIZE=${RESNET_SIZE:-base}
    JOBS=${JOBS:-$(( $(nproc) / 2 ))}
    DRY_FLAGS=""
    BENCH_DRY=""
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
    $PY -c "import tvm, torch; d = tvm.cuda(0); print('tvm', tvm.__version__, 'cuda device', d.exist, d.device_name, d.compute_version, 'torch', torch.__version__)" 2>&1 | tee -a "$OUT/device.txt"
fi
BUILDS="$OUT/builds"   # .so files shared by the bench and tuned phases (not carried back: over the size limit)
mkdir -p "$BUILDS"

PHASES=${PHASES:-tests bench tune tuned}
for phase in $PHASES; do
    log "phase $phase starts"
    case $phase in
    tests)
        if [ "$DRY_RUN" = 1 ]; then test_paths="tests/gpu/test_gpu_tuning.py"; else test_paths="tests/gpu -m gpu"; fi
        timeout "$(cap "${TEST_TIMEOUT:-60}")" $PY -m pytest $test_paths -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.log"
        rc=${PIPESTATUS[0]} ;;
    bench)
        # bert and resnet50 in one call: their builds run in parallel on the host's cores.
        timeout "$(cap "${BENCH_TIMEOUT:-180}" 160)" $PY benchmarks/bench_gpu.py --models bert,resnet50 \
            --size "bert=$SIZE,resnet50=$RESNET_SIZE" --cuda-graph on --jobs "$JOBS" --workdir "$BUILDS" --reuse-builds \
            $BENCH_DRY ${BENCH_FLAGS:-} --json-out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
        rc=${PIPESTATUS[0]} ;;
    tune)
        # The search's own budget leaves room for the baselines before and the re-measure after.
        timeout "$(cap "${TUNE_TIMEOUT:-160}" 90)" $PY benchmarks/gpu_tune.py --size "$SIZE" --top "${TUNE_TOP:-4}" \
            --budget "${TUNE_BUDGET:-110s}" --out "$OUT/tune" $DRY_FLAGS 2>&1 | tee "$OUT/tune.log"
        rc=${PIPESTATUS[0]} ;;
    tuned)
        timeout "$(cap "${TUNED_TIMEOUT:-150}" 0)" $PY benchmarks/bench_gpu.py --models bert --size "bert=$SIZE" --precisions fp16 \
            --cuda-graph on --tuning-db "$OUT/tune/db" --compare-untuned --no-torch-compile --jobs "$JOBS" --workdir "$BUILDS" \
            --reuse-builds --no-record $BENCH_DRY --json-out "$OUT/bench-tuned.json" 2>&1 | tee "$OUT/bench-tuned.log"
        rc=${PIPESTATUS[0]} ;;
    *) log "unknown phase $phase (tests, bench, tune, tuned)"; rc=2 ;;
    esac
    log "phase $phase ends (exit $rc)"
done
rm -rf "$BUILDS"
[ "$DRY_RUN" = 1 ] || cp benchmarks/results/gpu.md "$OUT/gpu.md" 2>/dev/null
exit 0
