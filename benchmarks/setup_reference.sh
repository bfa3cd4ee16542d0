#!/usr/bin/env bash
# Build the reference reader (omnilingual-asr 0.2.0 on fairseq2 0.6) in its own virtualenv, for
# `benchmarks/run.py --compare reference`. Not part of CI: the venv is ~7 GB (torch 2.8.0 from
# PyPI is the CUDA 12.8 build, and fairseq2n pins it exactly).
#
#   REFERENCE_VENV=/path/to/venv PYTHON=python3.11 bash benchmarks/setup_reference.sh
#
# REFERENCE_VENV defaults to $HOME/.cache/dali-asr/reference-venv, outside the project's .venv.
# Idempotent: when the venv already imports omnilingual_asr and fairseq2 it does nothing.
# The pins are ../shared/reference/baseline.md's: unpinned, pip picks pyarrow 26, which needs
# NumPy 2, while fairseq2 0.6 pins numpy~=1.23 (import error).
set -euo pipefail

VENV="${REFERENCE_VENV:-$HOME/.cache/dali-asr/reference-venv}"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import omnilingual_asr, fairseq2" 2>/dev/null; then
    echo "reference venv ready: $VENV"
    exit 0
fi

# fairseq2n's audio decoder and python-soundfile load the system libsndfile.
if ! ldconfig -p 2>/dev/null | grep -q 'libsndfile\.so\.1'; then
    if ! command -v apt-get >/dev/null; then
        echo "setup_reference.sh: libsndfile1 is missing; install it with your package manager" >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO apt-get install -y libsndfile1
fi

# fairseq2n 0.6 ships CPython wheels for a few versions only; 3.11 is the one baseline.md used.
version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [ "$version" != "3.11" ]; then
    echo "setup_reference.sh: $PYTHON is Python $version; the reference was measured on 3.11" \
         "(set PYTHON=python3.11 if the install fails)" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --upgrade pip
"$VENV/bin/pip" install torch==2.8.0 torchaudio==2.8.0 fairseq2n==0.6 'fairseq2[arrow]==0.6' \
    omnilingual-asr==0.2.0 soundfile pyarrow==22.0.0 pandas==2.3.3 polars==1.35.2 sentencepiece

"$VENV/bin/python" -c "import omnilingual_asr, fairseq2, torch; \
print('reference venv ready:', '$VENV', 'fairseq2', fairseq2.__version__, 'torch', torch.__version__)"
