#!/usr/bin/env bash
# The main job, end to end on phantom data. It grows as the commands land (see README).
#   bash examples/pipeline.sh [OUT]        (CASES=5 SHAPE=512 WORKERS=2 by default)
set -euo pipefail
OUT=${1:-out}
CASES=${CASES:-5}
SHAPE=${SHAPE:-512}
WORKERS=${WORKERS:-2}

# 1. synthetic chest CT (DICOM) + X-rays with exact truth
medtool phantom "$OUT/phantom" --cases "$CASES" --shape "$SHAPE" --seed 42 --workers "$WORKERS" --force
# 2. what was written: geometry, value range and history of the truth masks
medtool info "$OUT/phantom/truth"
# 3. DICOM series -> raw volumes (stored values, per-slice rescale in the sidecar)
medtool dicom2npy "$OUT/phantom/ct" "$OUT/raw" --workers "$WORKERS" --force
# 4. raw -> int16 Hounsfield units (padding to air); a lung-windowed [0, 1] copy for models
medtool hu "$OUT/raw" "$OUT/hu" --workers "$WORKERS" --force
medtool hu "$OUT/hu" "$OUT/hu_lung01" --preset lung --normalize --format nii.gz --workers "$WORKERS" --force
medtool info "$OUT/hu"
