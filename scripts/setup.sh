#!/usr/bin/env bash
# Create .venv (if needed) and install dali-asr with the CPU-capable DALI wheel and dev tools.
# TORCH_SPEC picks the torch to install when the venv has none (default: the CPU build these
# machines carry locally; on a GPU node, install your own torch first or set TORCH_SPEC).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS:-cuda12,dev}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
fi
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
