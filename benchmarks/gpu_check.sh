#!/usr/bin/env bash
# The GPU check (issue 22), one call on a lent GPU machine, under 8 minutes. Prepare once here:
#     bash benchmarks/gpu_wheels.sh
# then call the device tool's run with command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 600.
# Prints (and writes to $OUT) the package's fast model tests run there and the summary table of gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: run benchmarks/gpu_wheels.sh here and carry .whl"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
# The model, processor and ranking-head tests against this machine's torch (they run on its CPU cores).
timeout 180 python3 -m pytest -q -x -p no:cacheprovider -m "not slow" tests/unit/test_modeling_allmrec_ranking.py \
    tests/unit/test_processing_allmrec.py 2>&1 | tail -3 | tee "$OUT/tests.txt"
timeout 300 python3 benchmarks/gpu_check.py --output_json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.txt"
