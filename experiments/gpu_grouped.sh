#!/usr/bin/env bash
# On one GPU, in one call: the grouped cross-validation (five folds grouped by site) of the shipped
# ensemble's two recipes and of the same recipes with scanner augmentation, side by side, then each
# pair's ensemble scored out of fold (last.pt, post-processing chosen on the other folds). What
# decides whether the shipped models are retrained with augment_scanner (docs/results.md).
#
#   bash experiments/gpu_grouped.sh STORE OUT      # e.g. a small store carried to the machine
#
# Each run writes OUT/NAME/fold-I; logs go to OUT/NAME-I.log; resumable like grouped_cv.sh.
set -euo pipefail
store=$1 out=$2
cd "$(dirname "$0")/.."
tumorseg=${TUMORSEG:-.venv/bin/tumorseg}
declare -A recipes=(
  [s20]=recipes/brats-2d-gpu-strong-augment.yaml [sc20]=recipes/brats-2d-gpu-context.yaml
  [s20-scanner]=recipes/brats-2d-gpu-scanner.yaml [sc20-scanner]=recipes/brats-2d-gpu-context-scanner.yaml
)
mkdir -p "$out"
for name in "${!recipes[@]}"; do
  for i in 0 1 2 3 4; do
    fold=$out/$name/fold-$i
    if [ -f "$fold/last.pt" ]; then
      $tumorseg train --resume "$fold" > "$out/$name-$i.log" 2>&1 &
    else
      $tumorseg train --config "${recipes[$name]}" --data "$store" --out "$fold" --folds 5 --fold $i \
        --test-fraction 0 --group-by site --workers 1 > "$out/$name-$i.log" 2>&1 &
    fi
  done
done
wait
$tumorseg cv "$out/s20" "$out/sc20" --choose-postprocessing | tee "$out/ensemble.txt"
$tumorseg cv "$out/s20-scanner" "$out/sc20-scanner" --choose-postprocessing | tee "$out/ensemble-scanner.txt"
