#!/usr/bin/env bash
# Issue 25's modality table (seed S4: which MRI sequences a brain-tumour U-Net needs): the same
# `train segment` on the brain MRI phantom (BraTS layout, BRATS 2015 labels, skull-stripped) with
# FLAIR, T1, T1c and T2 alone, FLAIR+T1c, FLAIR+T1c+T2 and all four as input channels, each
# scored on the same held-out cases by `score` (Dice per label, then the BraTS regions).
#
#   bash benchmarks/quality_brats_table.sh [WORKDIR]      (default: ./quality_brats)
#
# CASES (20) and SHAPE (96) size the phantom, SEED (0) draws it; every model trains EPOCHS (12)
# x STEPS (50) batches with the planned settings (on a CPU the 2D U-Net of width 16), so the
# table does not depend on the machine's load. The folds hold out TEST (0.3) of the cases.
set -euo pipefail
work=${1:-quality_brats}
mkdir -p "$work" && cd "$work"
start=$(date +%s)
medtool phantom brain --kind brain-mri --cases "${CASES:-20}" --shape "${SHAPE:-96}" --seed "${SEED:-0}" \
    --skull-strip -j 2 -q -f
medtool folds brain folds.csv --k 5 --test "${TEST:-0.3}" --seed "${SEED:-0}" -f -q
runs=()
for channels in flair t1 t1ce t2 flair,t1ce flair,t1ce,t2 flair,t1,t1ce,t2; do
    name=${channels//,/+}
    medtool train segment --dataset brain --channels "$channels" --folds folds.csv --fold 0 \
        --epochs "${EPOCHS:-12}" --steps "${STEPS:-50}" --seed "${SEED:-0}" --out "run_$name" -f -q
    medtool predict "run_$name/last.pt" brain "$name" --folds folds.csv --fold test -f -q
    runs+=("$name")
done
medtool score --truth brain --suffix _seg "${runs[@]}" --metric dice --folds folds.csv --fold test --json > labels.json
medtool score --truth brain --suffix _seg "${runs[@]}" --metric dice --regions brats --folds folds.csv --fold test \
    --json > regions.json
python - <<'EOF'
import json

labels = {row["prediction"]: row for row in json.load(open("labels.json"))["leaderboard"]}
regions = {row["prediction"]: row for row in json.load(open("regions.json"))["leaderboard"]}
print("| input | necrosis 1 | edema 2 | non-enhancing 3 | enhancing 4 | wt | tc | et | cases |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name in ("flair", "t1", "t1ce", "t2", "flair+t1ce", "flair+t1ce+t2", "flair+t1+t1ce+t2"):
    s, r = labels[name]["scores"], regions[name]["scores"]
    cells = [s.get(f"dice[{k}]", float("nan")) for k in (1, 2, 3, 4)]
    cells += [r.get(f"dice[{k}]", r.get(f"dice_{k}", float("nan"))) for k in ("wt", "tc", "et")]
    print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells) + f" | {labels[name]['cases']} |")
EOF
echo "wall time $(( $(date +%s) - start )) s"
