#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install mmbcn with its
# OpenMMLab stack for CPU: torch 2.13.0 first, then mmcv 2.1.0 built with its
# ops, mmengine, mmdet 3.3.0, mmsegmentation 1.2.2, then mmbcn (editable,
# with its fused CPU kernel of BCN compiled in place, ~1 min).
# A second run with everything in place returns in seconds.
#
#   bash tools/install.sh            # .venv in the repository root
#   VENV=/path/to/env bash tools/install.sh
#
# GPU users: see README ("Installing on a GPU machine").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
STAMP="$VENV/.mmbcn-install"
want="$(cat tools/install.sh setup.py mmbcn/ops/csrc/* | sha256sum | cut -c1-16) $TORCH_SPEC"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && \
   "$VENV/bin/python" -c 'import mmbcn, mmcv.ops, mmdet, mmseg, triton
from mmbcn.ops import cpu_backend; assert cpu_backend.unavailable() is None' 2>/dev/null; then
  echo "mmbcn: environment $VENV is up to date"
  exit 0
fi

step() { echo "mmbcn install [$1/5] $2"; }
[ -x "$VENV/bin/python" ] || { step 1 "creating $VENV"; "$PY" -m venv "$VENV"; }
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

step 2 "$TORCH_SPEC (installed first: an unpinned torch would pull CUDA packages)"
pip install "$TORCH_SPEC"
# One setuptools for the whole environment: torch requires >=77.0.3, and
# mmcv's setup.py (built without isolation, against the torch above) and
# mmengine at run time import pkg_resources, which setuptools 81 removed.
pip install "setuptools>=77.0.3,<81" wheel ninja

step 3 "mmcv 2.1.0 with ops (built from source once, ~7 min on 2 cores; pip caches the wheel)"
if ! "$VENV/bin/python" -c 'import mmcv.ops' 2>/dev/null; then
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pip install --no-build-isolation mmcv==2.1.0
fi

step 4 "mmengine, mmdet, mmsegmentation"
pip install mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex

step 5 "mmbcn: native BCN kernel compiled in place (~1 min), then editable with the tests and analysis extras"
# Built here rather than by pip: the pip a new venv brings (23.x) installs
# this setup.py-only project through 'setup.py develop', which setuptools 80
# hands back to pip with build isolation, where torch is missing.
"$VENV/bin/python" setup.py -q build_ext --inplace
# The tests extra brings Triton (a 290 MB wheel): the tests run BCN's GPU
# kernels on CPU tensors under TRITON_INTERPRET=1.
MMBCN_WITH_NATIVE=0 pip install --no-build-isolation -e ".[tests,analysis,deploy]"
"$VENV/bin/python" -c 'import mmbcn, mmcv.ops, mmdet, mmseg
import torch
from mmbcn.ops import cpu_backend, describe
assert cpu_backend.unavailable() is None, cpu_backend.unavailable()
print("mmbcn", mmbcn.__version__, "ready; BCN on CPU:", describe(torch.ones(1, 1, 2)))'
echo "$want" > "$STAMP"
