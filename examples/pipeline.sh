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
# 2b. leakage-free folds: grouped by patient (follow-up scans stay together), stratified by label
#     where each label has cases enough (CASES >= 4); nnU-Net's splits_final.json beside folds.csv
STRATIFY=(); [ "$CASES" -ge 4 ] && STRATIFY=(--stratify label)
medtool folds "$OUT/phantom/labels.csv" "$OUT/folds/folds.csv" --k 2 --group patient_id "${STRATIFY[@]}" --json --force
# 3. DICOM series -> raw volumes (stored values, per-slice rescale in the sidecar)
medtool dicom2npy "$OUT/phantom/ct" "$OUT/raw" --workers "$WORKERS" --force
# 4. raw -> int16 Hounsfield units (padding to air); a lung-windowed [0, 1] copy for models
medtool hu "$OUT/raw" "$OUT/hu" --workers "$WORKERS" --force
medtool hu "$OUT/hu" "$OUT/hu_lung01" --preset lung --normalize --format nii.gz --workers "$WORKERS" --force
medtool info "$OUT/hu"
# 4b. lungs from the HU volumes (1 right, 2 left) plus the masked CT (outside -1000), the seeds'
#     model-ready grid (224 x 224 in-plane, 20 centre slices), and a picture of case 1 with its mask
medtool lungmask "$OUT/hu" "$OUT/lungmask" --apply -1000 --workers "$WORKERS" --force
medtool resample "$OUT/hu" "$OUT/hu_224" --shape 224 224 --crop-z 20 --workers "$WORKERS" --force
medtool view "$OUT/hu/case_001.npy" "$OUT/case_001_lungs.png" --overlay "$OUT/lungmask/case_001.npy" --plane ortho --force
# 5. de-identify the CT (PS3.15 basic profile, dates shifted per patient) with a site key, verify
#    that nothing is left, and convert the anonymized series (same volumes as step 3)
[ -s "$OUT/site.key" ] || python -c "import secrets; print(secrets.token_hex(32))" > "$OUT/site.key"
medtool anonymize "$OUT/phantom/ct" "$OUT/anon" --key-file "$OUT/site.key" --date-shift --workers "$WORKERS" --force
medtool anonymize --check "$OUT/anon"
medtool dicom2npy "$OUT/anon" "$OUT/raw_anon" --workers "$WORKERS" --force
# 6. segment the lungs: a small 2D U-Net trained on the HU volumes (a demo: two short epochs at
#    3 mm in-plane), masks predicted back onto each volume's own grid, scored against the truth
medtool train segment --images "$OUT/hu" --masks "$OUT/phantom/truth" --mask-suffix _lungs --dim 2d --spacing 2.5 3 3 --width 8 --depth 4 --epochs 2 --steps 10 --batch-size 4 --out "$OUT/run_lungs" --force
medtool predict "$OUT/run_lungs/best.pt" "$OUT/hu" "$OUT/pred_lungs" --suffix _lungs --format nii.gz --keep-largest 1 --force
medtool score --truth "$OUT/phantom/truth" --suffix _lungs "$OUT/pred_lungs" --metric dice,hd95
# 7. classify RECIST >= 20 mm (labels.csv) with the seeds' compact 3D CNN on the lung-masked CT at
#    16 x 64 x 64 (a demo: two short epochs on all cases; README quotes a 5-fold --cv run), the
#    predicted probabilities scored against the labels
medtool resample "$OUT/lungmask" "$OUT/lung_64" --shape 64 64 --crop-z 16 --workers "$WORKERS" --force
medtool train classify --images "$OUT/lung_64" --image-suffix _masked --labels "$OUT/phantom/labels.csv" --val-fraction 0 --width 8 --epochs 2 --steps 3 --batch-size 4 --out "$OUT/run_recist" --force
medtool predict "$OUT/run_recist/last.pt" "$OUT/lung_64" "$OUT/recist.csv" --image-suffix _masked --force
medtool score --truth "$OUT/phantom/labels.csv" "$OUT/recist.csv" --metric auc,accuracy
# 8. where the RECIST classifier looks: Grad-CAM maps of its last convolution on each crop's own
#    grid (normalised to [0, 1]) and a montage of the slices where the map is strongest
medtool gradcam "$OUT/run_recist/last.pt" "$OUT"/lung_64/*_masked.npy "$OUT/gradcam" --class 1 --suffix _cam --png --force
# 9. pneumonia-like opacities on the X-rays: a RetinaNet (resnet18-fpn, one input channel; a demo:
#    two steps at 64 px) trained on the RSNA box table, an RSNA submission CSV predicted for every
#    X-ray (boxes in the original pixels) and scored with the RSNA map-iou
medtool train detect --images "$OUT/phantom/cxr" --boxes "$OUT/phantom/cxr_boxes.csv" --model resnet18-fpn --fpn-width 16 --size 64 --val-fraction 0 --epochs 1 --steps 2 --batch-size 2 --out "$OUT/run_cxr" --force
medtool predict "$OUT/run_cxr/last.pt" "$OUT/phantom/cxr" "$OUT/cxr_predictions.csv" --min-score 0.05 --force
medtool score --truth "$OUT/phantom/cxr_boxes.csv" "$OUT/cxr_predictions.csv" --metric map-iou,coco-map
