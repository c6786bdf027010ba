#!/usr/bin/env bash
# On one GPU, in one call: the grouped cross-validation (five folds grouped by site) of the shipped
# ensemble's two recipes and of the same recipes with scanner augmentation, side by side, then each
# pair's ensemble scored out of fold (last.pt, post-processing chosen on the other folds). What
# decides whether the shipped models are retrained with augment_scanner (docs/results.md).
#
#   bash experiments/gpu_grouped.sh STORE OUT      # e.g. a small store carried to the machine
#
# Each run writes OUT/NAME/fold-I; logs go to OUT/NAME-I.log; resumable like grouped_cv.sh: a run
# that finished is left as it is. Without a GPU, SERIAL=1 trains the 20 runs one after another (80 to
# 100 minutes each on an idle 2-core CPU: about 30 hours), to be resumed from session to session.
set -euo pipefail
store=$1 out=$2
cd "$(dirname "$0")/.."
tumorseg=${TUMORSEG:-.venv/bin/tumorseg}
epochs() {  # the epochs a recipe trains
  .venv/bin/python -c "import sys; from tumorseg.training.config import load_config, from_mapping; print(from_mapping(load_config(sys.argv[1]), sys.argv[1]).epochs)" "$1"
}
declare -A recipes=(
  [s20]=recipes/brats-2d-gpu-strong-augment.yaml [sc20]=recipes/brats-2d-gpu-context.yaml
  [s20-scanner]=recipes/brats-2d-gpu-scanner.yaml [sc20-scanner]=recipes/brats-2d-gpu-context-scanner.yaml
)
mkdir -p "$out"
for i in 0 1 2 3 4; do  # fold by fold, so that serial runs cut short leave whole folds to compare
  for name in s20 s20-scanner sc20 sc20-scanner; do
    fold=$out/$name/fold-$i
    if [ -f "$fold/last.pt" ] && grep -q "^$(epochs "${recipes[$name]}")," "$fold/history.csv" 2>/dev/null; then
      continue
    elif [ -f "$fold/last.pt" ]; then
      $tumorseg train --resume "$fold" >> "$out/$name-$i.log" 2>&1 &
    else
      $tumorseg train --config "${recipes[$name]}" --data "$store" --out "$fold" --folds 5 --fold $i \
        --test-fraction 0 --group-by site --workers 1 > "$out/$name-$i.log" 2>&1 &
    fi
    if [ "${SERIAL:-0}" = 1 ]; then wait; fi
  done
done
wait
$tumorseg cv "$out/s20" "$out/sc20" --choose-postprocessing | tee "$out/ensemble.txt"
$tumorseg cv "$out/s20-scanner" "$out/sc20-scanner" --choose-postprocessing | tee "$out/ensemble-scanner.txt"
