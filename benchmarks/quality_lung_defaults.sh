#!/usr/bin/env bash
# Issue 26's defaults-only lung check: `train segment` with nothing but the data and a time
# budget, on phantom CT in HU, scored on held-out patients. The folds come from `medtool folds`
# (grouped by patient, a test share held out), the prediction and the scores from `predict` and
# `score --folds F --fold test` with their defaults (keep-largest as planned).
#
#   bash benchmarks/quality_lung_defaults.sh [WORKDIR]     (default: ./quality_lung)
#
# MINUTES (default 3) is the --max-minutes budget; CASES (default 14) and SHAPE (128) the phantom.
set -euo pipefail
work=${1:-quality_lung}
minutes=${MINUTES:-3}
mkdir -p "$work" && cd "$work"
start=$(date +%s)
medtool phantom data --cases "${CASES:-14}" --shape "${SHAPE:-128}" --seed "${SEED:-42}" --cxr 0 -j 2 -q -f
medtool dicom2npy data/ct hu --hu -j 2 -q -f
medtool folds data/labels.csv folds.csv --k 5 --group patient_id --test 0.3 -f -q
medtool train segment --images hu --masks data/truth --mask-suffix _lungs --folds folds.csv --fold 0 \
    --max-minutes "$minutes" --out run -f
medtool predict run/last.pt hu pred --suffix _lungs --folds folds.csv --fold test -f
medtool score --truth data/truth --suffix _lungs pred --metric dice --folds folds.csv --fold test
echo "wall time $(( $(date +%s) - start )) s"
