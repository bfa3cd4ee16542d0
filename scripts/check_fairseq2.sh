#!/usr/bin/env bash
# The fairseq2 drop-in's proof against the real thing (dali_asr.fairseq2, issue 15): builds the
# environment beside omnilingual-asr 0.2.0 / fairseq2 0.6 (scripts/setup_fairseq2_env.sh, over
# benchmarks/setup_reference.sh's venv), then runs tests/fairseq2 there on espeak-mini:
# DaliAsrDataset's reader against MixtureParquetAsrDataset's (waveform, fbank, STATIC, the
# training stream, resume, two ranks), and Omnilingual's CTC training path on fairseq2's trainer
# with each (a tiny wav2vec2 ASR model, 30 steps on the CPU), killed and resumed.
#
#   bash scripts/check_fairseq2.sh [pytest args]
#
# Not part of CI (the reference venv is ~7 GB; ~4 minutes on 2 cores). tests/conftest.py writes
# the figures to $DALI_ASR_F2_REPORT (default benchmarks/results/fairseq2-dropin.json); they are
# printed at the end. DALI_ASR_ESPEAK names the corpus when it is not ../shared/data/espeak-mini.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${F2_VENV:-$HOME/.cache/dali-asr/fairseq2-venv}"
export DALI_ASR_F2_REPORT="${DALI_ASR_F2_REPORT:-benchmarks/results/fairseq2-dropin.json}"

F2_VENV="$VENV" bash scripts/setup_fairseq2_env.sh
rm -f "$DALI_ASR_F2_REPORT"
"$VENV/bin/f2-python" -m pytest -v -p no:cacheprovider tests/fairseq2 "$@"
"$VENV/bin/f2-python" - "$DALI_ASR_F2_REPORT" <<'PY'
import json, sys
for name, figures in json.load(open(sys.argv[1])).items():
    print(f"{name}: {json.dumps(figures)}")
PY
