#!/usr/bin/env bash
# The main job, end to end on phantom data: DICOM to scored models in about 10 minutes on two
# CPU cores at the default size (docs/benchmarks.md has the measured run).
#   bash examples/pipeline.sh [OUT]
#   CASES=50 SHAPE=128 CXR=400 WORKERS=2 by default; the trainings' --max-minutes budgets are
#   LUNG_MINUTES=1.5, RECIST_MINUTES=2 (all five folds) and DETECT_MINUTES=3.5 (the detector
#   learns last: map-iou 0.26 held out after 2.5 minutes, 0.76 after 3.5)
#   (CASES=2 SHAPE=48 is the test size: it runs every step, its numbers mean nothing)
# Every model is trained with the planned defaults and scored on cases it never saw: the test
# split of folds.csv (the numbered folds when there are too few cases for one).
set -euo pipefail
OUT=${1:-out}
CASES=${CASES:-50}
SHAPE=${SHAPE:-128}
CXR=${CXR:-$(( CASES >= 10 ? 400 : 4 * CASES ))}
WORKERS=${WORKERS:-2}
LUNG_MINUTES=${LUNG_MINUTES:-1.5}
RECIST_MINUTES=${RECIST_MINUTES:-2}
DETECT_MINUTES=${DETECT_MINUTES:-3.5}
# below 10 cases (the test size) each training is two short epochs: it checks the plumbing only
SHORT=(); [ "$CASES" -ge 10 ] || SHORT=(--epochs 2 --steps 2)
START=$(date +%s)
mkdir -p "$OUT/scores"

# 1. synthetic chest CT (DICOM) + X-rays with exact truth
medtool phantom "$OUT/phantom" --cases "$CASES" --shape "$SHAPE" --cxr "$CXR" --seed 42 --workers "$WORKERS" --force
# 2. what was written: geometry, value range and history of the truth masks
medtool info "$OUT/phantom/truth"
# 2b. leakage-free folds: grouped by patient (follow-up scans stay together), stratified by label,
#     a fifth held out as the test split; nnU-Net's splits_final.json beside folds.csv
if [ "$CASES" -ge 10 ]; then SPLIT=(--k 5 --stratify label --test 0.2); HELD=test
else SPLIT=(--k 2); HELD=0; fi
medtool folds "$OUT/phantom/labels.csv" "$OUT/folds/folds.csv" --group patient_id "${SPLIT[@]}" --force
if [ "$CXR" -ge 10 ]; then CXR_SPLIT=(--k 5 --stratify Target --test 0.2); CXR_HELD=test
else CXR_SPLIT=(--k 2); CXR_HELD=0; fi
medtool folds "$OUT/phantom/cxr_boxes.csv" "$OUT/folds/cxr_folds.csv" --id-column patientId "${CXR_SPLIT[@]}" --force
# 3. DICOM series -> raw volumes (stored values, per-slice rescale in the sidecar)
medtool dicom2npy "$OUT/phantom/ct" "$OUT/raw" --workers "$WORKERS" --force
# 4. raw -> int16 Hounsfield units (padding to air)
medtool hu "$OUT/raw" "$OUT/hu" --workers "$WORKERS" --force
medtool info "$OUT/hu"
# 4b. lungs from the HU volumes (1 right, 2 left) plus the masked CT (outside -1000), and a
#     picture of case 1 with its mask
medtool lungmask "$OUT/hu" "$OUT/lungmask" --apply -1000 --workers "$WORKERS" --force
medtool view "$OUT/hu/case_001.npy" "$OUT/case_001_lungs.png" --overlay "$OUT/lungmask/case_001.npy" --plane ortho --force
# 5. de-identify the CT (PS3.15 basic profile, dates shifted per patient) with a site key, verify
#    that nothing is left, and convert the anonymized series (same volumes as step 3)
[ -s "$OUT/site.key" ] || python -c "import secrets; print(secrets.token_hex(32))" > "$OUT/site.key"
medtool anonymize "$OUT/phantom/ct" "$OUT/anon" --key-file "$OUT/site.key" --date-shift --workers "$WORKERS" --force
medtool anonymize --check "$OUT/anon"
medtool dicom2npy "$OUT/anon" "$OUT/raw_anon" --workers "$WORKERS" --force
# 6. segment the lungs: a U-Net with the planned defaults (on a CPU the 2D recipe), validated on
#    fold 0, predicted for the held-out cases back onto each volume's own grid and scored
medtool train segment --images "$OUT/hu" --masks "$OUT/phantom/truth" --mask-suffix _lungs \
  --folds "$OUT/folds/folds.csv" --fold 0 --max-minutes "$LUNG_MINUTES" "${SHORT[@]}" --out "$OUT/run_lungs" --force
medtool predict "$OUT/run_lungs/best.pt" "$OUT/hu" "$OUT/pred_lungs" --suffix _lungs --format nii.gz \
  --folds "$OUT/folds/folds.csv" --fold "$HELD" --force
medtool score --truth "$OUT/phantom/truth" --suffix _lungs "$OUT/pred_lungs" --metric dice,hd95 \
  --folds "$OUT/folds/folds.csv" --fold "$HELD" --json > "$OUT/scores/lungs.json"
# 7. classify RECIST >= 20 mm (labels.csv) from the lung-masked CT: a 3D CNN on the planned input
#    (each volume cut to its lungs, coarsened to the device's budget), cross-validated over the
#    numbered folds; the out-of-fold probabilities scored against the labels
if [ "$CASES" -ge 10 ]; then
  medtool train classify --images "$OUT/lungmask" --image-suffix _masked --labels "$OUT/phantom/labels.csv" \
    --folds "$OUT/folds/folds.csv" --cv --max-minutes "$RECIST_MINUTES" --out "$OUT/run_recist" --force
  RECIST_TABLE="$OUT/run_recist/oof.csv"; RECIST_MODEL="$OUT/run_recist/fold_0/best.pt"
else                # the test size: too few cases for every fold to hold both classes
  medtool train classify --images "$OUT/lungmask" --image-suffix _masked --labels "$OUT/phantom/labels.csv" \
    --val-fraction 0 "${SHORT[@]}" --out "$OUT/run_recist" --force
  RECIST_TABLE="$OUT/recist.csv"; RECIST_MODEL="$OUT/run_recist/last.pt"
  medtool predict "$RECIST_MODEL" "$OUT/lungmask" "$RECIST_TABLE" --image-suffix _masked --force
fi
medtool score --truth "$OUT/phantom/labels.csv" "$RECIST_TABLE" --cases "$RECIST_TABLE" --metric auc,accuracy \
  --json > "$OUT/scores/recist.json"   # the out-of-fold cases only (the test split has no OOF row)
# 8. where the classifier looks: Grad-CAM of fold 0's model on the held-out cases (normalised to
#    [0, 1], on each input's model grid), how much stronger inside the true tumour than outside
HELD_CT=$(python -c "import csv, sys; print(' '.join(r['case_id'] for r in csv.DictReader(open(sys.argv[1])) if r['fold'] == sys.argv[2]))" "$OUT/folds/folds.csv" "$HELD")
INPUTS=(); for c in $HELD_CT; do INPUTS+=("$OUT/lungmask/${c}_masked.npy"); done
medtool gradcam "$RECIST_MODEL" "${INPUTS[@]}" "$OUT/gradcam" --image-suffix _masked --class 1 \
  --suffix _cam --truth "$OUT/phantom/truth" --truth-suffix _tumour --png --force --json > "$OUT/scores/gradcam.json"
# 9. pneumonia-like opacities on the X-rays: a RetinaNet with the planned defaults (on a CPU a
#    small one) trained on the RSNA box table, an RSNA submission for the held-out X-rays (boxes
#    in the original pixels) scored with the RSNA map-iou
medtool train detect --images "$OUT/phantom/cxr" --boxes "$OUT/phantom/cxr_boxes.csv" \
  --folds "$OUT/folds/cxr_folds.csv" --fold 0 --max-minutes "$DETECT_MINUTES" "${SHORT[@]}" --out "$OUT/run_cxr" --force
medtool predict "$OUT/run_cxr/best.pt" "$OUT/phantom/cxr" "$OUT/cxr_predictions.csv" \
  --folds "$OUT/folds/cxr_folds.csv" --fold "$CXR_HELD" --force
medtool score --truth "$OUT/phantom/cxr_boxes.csv" "$OUT/cxr_predictions.csv" --metric map-iou,coco-map \
  --folds "$OUT/folds/cxr_folds.csv" --fold "$CXR_HELD" --json > "$OUT/scores/detect.json"
# 10. OUT/summary.json and the table of what the job produced
python "$(dirname "$0")/summary.py" "$OUT" --seconds $(( $(date +%s) - START ))
