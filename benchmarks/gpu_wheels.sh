#!/usr/bin/env bash
# Fetch, here, the wheels the GPU machine lacks for `benchmarks/gpu_check.sh` (it reaches no package index, and its
# image has older transformers / huggingface_hub and no datasets): Python 3.12, x86-64, into .whl/ (git-ignored via
# .git/info/exclude). Versions from constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() { grep -i "^$1==" constraints.txt; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$(pin transformers)" "$(pin huggingface_hub)" "$(pin tokenizers)" "$(pin datasets)" "$(pin dill)" \
    "$(pin multiprocess)" "$(pin httpx2)" "$(pin typer)" "$(pin hf-xet)"
du -sh .whl
