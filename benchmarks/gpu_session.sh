#!/usr/bin/env bash
# What runs on a lent GPU machine (the `device` tool), in one call, most important first.
#
# That machine has Python 3.12 with torch, onnx and onnxruntime but no TVM and no network, so
# TVM travels with the call: `benchmarks/gpu_bundle.sh` (run here first) packs the apache-tvm
# and apache-tvm-ffi wheels into .gpu/ (git-ignored; xz keeps it under the 64 MiB a call carries).
# Every phase has its own timeout and writes into $OUT as it goes, so a call cut short still
# returns what finished:
#   1. the GPU tests (tests/gpu, GPU-marked ones included: parity with onnxruntime on the card)
#   2. bench_gpu.py on bert-large s128 (fp32, fp16; CUDA graph on/off) vs PyTorch eager + torch.compile
#   3. bench_gpu.py on resnet50 (same engines)
# Usage there: bash benchmarks/gpu_session.sh   (the tool's `run`, carry [".gpu"]);
#   PHASES="tests bert" BENCH_FLAGS=--no-torch-compile picks phases and passes flags to bench_gpu.py.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
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
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
$PY -c "import tvm, torch; d = tvm.cuda(0); print('tvm', tvm.__version__, 'cuda device', d.exist, d.device_name, d.compute_version, 'torch', torch.__version__)" 2>&1 | tee -a "$OUT/device.txt"

JOBS=$(( $(nproc) / 2 ))
PHASES=${PHASES:-tests bert resnet50}
for phase in $PHASES; do
    case $phase in
    tests) timeout "${TEST_TIMEOUT:-150}" $PY -m pytest tests/gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.log" ;;
    bert) timeout "${BERT_TIMEOUT:-270}" $PY benchmarks/bench_gpu.py --models bert --jobs "$JOBS" ${BENCH_FLAGS:-} \
              --json-out "$OUT/bench-bert.json" 2>&1 | tee "$OUT/bench-bert.log" ;;
    resnet50) timeout "${RESNET_TIMEOUT:-150}" $PY benchmarks/bench_gpu.py --models resnet50 --jobs "$JOBS" ${BENCH_FLAGS:-} \
              --json-out "$OUT/bench-resnet50.json" 2>&1 | tee "$OUT/bench-resnet50.log" ;;
    esac
done
cp benchmarks/results/gpu.md "$OUT/gpu.md" 2>/dev/null
exit 0
