#!/usr/bin/env bash
# A recipe's grouped, nested cross-validation on the shared patients: five folds grouped by site
# (each fold's patients scored by a model that never saw their site), each fold's last.pt scored
# (no epoch chosen), the post-processing chosen fold by fold on the other folds. Resumable: run it
# again after an interruption and it continues each unfinished fold from its last.pt.
#
#   bash experiments/grouped_cv.sh RECIPE OUT [STORE]
#   bash experiments/grouped_cv.sh recipes/brats-2d-cpu-scanner.yaml runs/cv-grouped-e-scanner
#
# STORE defaults to runs/real.h5, prepared from $TUMORSEG_REAL_DATA (or ../shared/data/brats2018-sample)
# when missing. The table goes to OUT.txt; compare two such runs patient by patient with
# python experiments/compare_cv.py OUT_A/crossval-last OUT_B/crossval-last.
set -euo pipefail
recipe=$1 out=$2 store=${3:-runs/real.h5}
cd "$(dirname "$0")/.."
tumorseg=${TUMORSEG:-.venv/bin/tumorseg}
epochs=$(.venv/bin/python -c "import sys; from tumorseg.training.config import load_config, from_mapping; print(from_mapping(load_config(sys.argv[1]), sys.argv[1]).epochs)" "$recipe")
[ -f "$store" ] || $tumorseg prepare "${TUMORSEG_REAL_DATA:-../shared/data/brats2018-sample}" --out "$store"
for i in 0 1 2 3 4; do
  fold=$out/fold-$i
  if [ -f "$fold/last.pt" ] && grep -q "^$epochs," "$fold/history.csv" 2>/dev/null; then continue; fi
  if [ -f "$fold/last.pt" ]; then
    $tumorseg train --resume "$fold"
  else
    $tumorseg train --config "$recipe" --data "$store" --out "$fold" --folds 5 --fold $i --test-fraction 0 --group-by site
  fi
done
$tumorseg cv "$out" --choose-postprocessing | tee "$out.txt"
