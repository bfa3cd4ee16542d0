#!/usr/bin/env bash
# Build a virtualenv where dali-asr runs beside omnilingual-asr 0.2.0 on fairseq2 0.6, without a
# second 7 GB install: a new venv whose .pth file adds the reference venv's site-packages
# (benchmarks/setup_reference.sh builds that one), and dali-asr installed into the new venv with
# its `fairseq2-cuda12` extra under the reference's exact versions (numpy 1.26.4, torch 2.8.0,
# pyarrow 22: every package the reference holds is a constraint, so nothing of it is replaced).
#
#   bash scripts/setup_fairseq2_env.sh            # then: source $F2_VENV/bin/activate
#
# REFERENCE_VENV defaults to $HOME/.cache/dali-asr/reference-venv, F2_VENV to
# $HOME/.cache/dali-asr/fairseq2-venv. Idempotent; the reference venv is only read. fairseq2n
# loads oneTBB from the reference venv's lib/, so the new venv's activate script and its
# bin/f2-python wrapper put that folder on LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
REF="${REFERENCE_VENV:-$HOME/.cache/dali-asr/reference-venv}"
VENV="${F2_VENV:-$HOME/.cache/dali-asr/fairseq2-venv}"

REFERENCE_VENV="$REF" bash benchmarks/setup_reference.sh

# The same interpreter as the reference's: its compiled wheels (fairseq2n, torch) are CPython 3.11.
BASE="$("$REF/bin/python" -c 'import sys; print(sys._base_executable)')"
if [ ! -x "$VENV/bin/python" ]; then
    "$BASE" -m venv "$VENV"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
REF_SITE="$("$REF/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# addsitedir (not a bare path line) so the reference's own .pth files are processed too; the new
# venv's site-packages stay first on sys.path.
echo "import site; site.addsitedir('$REF_SITE')" > "$SITE/_dali_asr_reference_venv.pth"

# oneTBB for fairseq2n: in the activate script and in a wrapper for scripts that call python
# directly.
if ! grep -q "dali-asr: oneTBB" "$VENV/bin/activate"; then
    cat >> "$VENV/bin/activate" <<ACT
# dali-asr: oneTBB for fairseq2n (scripts/setup_fairseq2_env.sh)
export LD_LIBRARY_PATH="$REF/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ACT
fi
cat > "$VENV/bin/f2-python" <<WRAP
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$REF/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$VENV/bin/python" "\$@"
WRAP
chmod +x "$VENV/bin/f2-python"

# Installed already from this checkout: nothing to do (F2_REINSTALL=1 installs again, e.g.
# after pyproject.toml's dependencies changed).
installed() {
    "$VENV/bin/f2-python" -c "import sys, dali_asr, nvidia.dali, cupy, pytest, dali_asr.fairseq2; \
sys.exit(dali_asr.__file__ != '$PWD/dali_asr/__init__.py')" 2>/dev/null
}
if [ -n "${F2_REINSTALL:-}" ] || ! installed; then
    CONSTRAINTS="$VENV/reference-constraints.txt"
    "$REF/bin/python" -m pip freeze --exclude-editable > "$CONSTRAINTS"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e ".[fairseq2-cuda12]" "pytest>=8"
fi

"$VENV/bin/f2-python" - <<'PY'
import fairseq2, numpy, nvidia.dali, cupy, omnilingual_asr, torch
import dali_asr.fairseq2  # noqa: F401
print("fairseq2 venv ready: fairseq2", fairseq2.__version__, "omnilingual-asr",
      omnilingual_asr.__version__, "torch", torch.__version__, "numpy", numpy.__version__,
      "DALI", nvidia.dali.__version__, "CuPy", cupy.__version__)
PY
