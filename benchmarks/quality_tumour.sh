#!/usr/bin/env bash
# Issue 6's tumour-quality check, as measured for the README: a 3D U-Net trained for at most
# 9.3 minutes (about 9.6 with preprocessing and validation) on 8 phantom CT cases, scored on 14
# held-out cases. Every case of this cohort has a tumour (--tumour-fraction 1); 4 tumour-free
# cases of another seed measure false positives. Patients never cross the split.
#
#   bash benchmarks/quality_tumour.sh [WORKDIR]      (default: ./quality_tumour)
#
# It prints the held-out scores of last.pt and best.pt and writes WORKDIR/cases.csv (per case).
# DEFAULTS=1 trains with nothing but the data, the split and --max-minutes MINUTES (default 10)
# and predicts with predict's defaults (issue 26's defaults-only check).
# Extra arguments to `train` can be given in TRAIN_EXTRA (e.g. TRAIN_EXTRA="--device cuda").
# SEED=N draws another cohort (default 7, the README's); its split takes whole patients in
# order: 8 training cases, 2 validating, the rest held out. On a CPU with native bfloat16
# training and prediction run under --amp bf16 (the same held-out Dice as float32 to 3 decimals).
# Labels are taken from the probabilities interpolated onto each input's grid (--interpolation
# linear, nnU-Net's way), which gave 0.016-0.020 more Dice than nearest-neighbour labels.
# Lesion copy-paste (--aug paste) puts training tumours, shrunk down to 0.4x, into other
# patches' lung; it found the small tumours that decided earlier runs.
set -euo pipefail
work=${1:-quality_tumour}
seed=${SEED:-7}
mkdir -p "$work" && cd "$work"

medtool phantom data --cases 24 --shape 128 --seed "$seed" --cxr 0 --tumour-fraction 1 -j 2 -q -f
if [ "$seed" = 7 ]; then
    train=(008 009 011 001 016 002 006 003)      # 8 training cases (P006 P007 P009 P001 P002 P003)
    val=(010 017)                                # validation (model selection)
    held=(004 005 007 012 013 014 015 018 019 020 021 022 023 024)
else
    # whole patients in order of first appearance: training until 8 cases, validating until 2,
    # the rest held out
    sets=$(awk -F, 'NR > 1 { n[$2]++; ids[$2] = ids[$2] " " substr($1, 6); if (!($2 in seen)) { seen[$2] = 1; order[++k] = $2 } }
        END { for (i = 1; i <= k; i++) { p = order[i]
                  if (t + n[p] <= 8) { t += n[p]; train = train ids[p] }
                  else if (v + n[p] <= 2) { v += n[p]; val = val ids[p] }
                  else held = held ids[p] }
              print train; print val; print held }' data/labels.csv)
    { read -ra train; read -ra val; read -ra held; } <<< "$sets"
fi
amp=()
if [[ "${TRAIN_EXTRA:-}" != *cuda* ]] && python -c "import sys; from medtool.train import cpu_has_bf16; sys.exit(not cpu_has_bf16())"; then
    amp=(--amp bf16)
fi
medtool phantom free --cases 4 --shape 128 --seed 99 --cxr 0 --tumour-fraction 0 -q -f
medtool hu data/ct hu/ --format nii.gz -j 2 -q -f
medtool hu free/ct hu_free/ --format nii.gz -j 2 -q -f

rm -rf train_img train_mask held held_truth
mkdir -p train_img train_mask held held_truth
echo "case_id,fold" > folds.csv
for c in "${train[@]}" "${val[@]}"; do
    ln -s "../hu/case_$c.nii.gz" train_img/
    ln -s "../data/truth/case_${c}_tumour.nii.gz" train_mask/
done
for c in "${train[@]}"; do echo "case_$c,1" >> folds.csv; done
for c in "${val[@]}"; do echo "case_$c,0" >> folds.csv; done
for c in "${held[@]}"; do
    ln -s "../hu/case_$c.nii.gz" held/
    ln -s "../data/truth/case_${c}_tumour.nii.gz" held_truth/
done

SECONDS=0
if [ "${DEFAULTS:-0}" = 1 ]; then
    # issue 26's defaults-only run: the data, the split and the time budget, nothing else
    medtool train segment --images train_img --masks train_mask --mask-suffix _tumour \
        --folds folds.csv --fold 0 --max-minutes "${MINUTES:-10}" --force ${TRAIN_EXTRA:-} --out run
    amp=(); predict_options=()
else
    medtool train --task segment --images train_img --masks train_mask --mask-suffix _tumour \
        --folds folds.csv --fold 0 --dim 3d --patch 24 64 64 --width 8 --depth 4 \
        --deep-supervision --loss dice-ce --sample-dice --pos-ratio 0.5 --batch-size 2 --steps 40 --epochs 200 --val-every 8 --lr 3e-3 \
        --aug flip=0.5 --aug scale=0.7,1.4 --aug p_scale=0.4 --aug lowres=0.5,1 --aug p_lowres=0.3 \
        --aug paste=0.5 --aug paste_scale=0.4,1 --aug paste_into=-1000,-300 \
        --max-minutes 9.3 --force "${amp[@]}" ${TRAIN_EXTRA:-} --out run
    predict_options=(--keep-largest 1 --overlap 0.5 --interpolation linear)
fi
echo "training took ${SECONDS} s"

# last.pt (the annealed end of the run, nnU-Net's default) and best.pt (picked on only 2
# validation cases), ranked in one table
for checkpoint in last best; do
    medtool predict "run/$checkpoint.pt" held/ "pred_$checkpoint/" --suffix _tumour --format nii.gz \
        "${predict_options[@]}" "${amp[@]}" -q -f
done
medtool score pred_last/ pred_best/ --truth held_truth --suffix _tumour --metric dice,hd95,recist \
    --per-case cases.csv --bootstrap 1000 -f
medtool predict run/last.pt hu_free/ pred_free/ --suffix _tumour --format nii.gz \
    "${predict_options[@]}" "${amp[@]}" -f   # tumour-free cases: the table is false positive ml
