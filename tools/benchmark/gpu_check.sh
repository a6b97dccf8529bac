#!/usr/bin/env bash
# BCN's backends on a GPU, in one run (about 6 minutes on an H100/H200):
# the backend tests on CUDA tensors (Triton against the Python reference,
# both against the paper written plainly), BCN under torch.compile
# (inductor, aot_eager), torch.export, tracing and a second derivative on
# CUDA tensors (tests/test_transforms.py), then layer_speed.py at the
# detection shapes (1 and 2 images of 800x1344) and ImageNet's (16 images
# of 224x224) in float32 and bfloat16. Needs torch, Triton and pytest
# only: no OpenMMLab package, no network.
#
#   bash tools/benchmark/gpu_check.sh [OUT_DIR]   # default work_dirs/gpu_check
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-work_dirs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
"$PY" -c 'import torch, triton, mmbcn.ops as o
print("torch", torch.__version__, "triton", triton.__version__,
      torch.cuda.get_device_name(), "| BCN auto:",
      o.describe(torch.ones(1, 32, 2, device="cuda")))' | tee "$OUT/env.txt"
"$PY" -m pytest tests/test_triton_backend.py tests/test_op_contract.py tests/test_backends.py \
  tests/test_transforms.py -q -p no:cacheprovider -o addopts= 2>&1 \
  | tee "$OUT/tests.log" || status=1
bench() {
  "$PY" tools/benchmark/layer_speed.py --device cuda --dtype float32 \
    bfloat16 --repeat 5 --min-time 0.02 "$@" || status=1
}
bench --batch 1 2 --image-size 800 1344 --out-dir "$OUT/detection"
bench --batch 16 --image-size 224 --no-memory --out-dir "$OUT/imagenet"
"$PY" tools/benchmark/layer_speed.py --device cuda --batch 1 \
  --image-size 800 1344 --stages 1 3 --compile --repeat 3 --min-time 0.02 \
  --no-memory --variants GN BCN-est --out-dir "$OUT/compiled" || status=1
exit $status
