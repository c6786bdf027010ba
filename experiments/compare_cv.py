"""Paired comparison of two cross-validations of the same patients (`tumorseg cv` outputs).

Two recipes scored on the same 28 patients differ by less than either's spread over patients, so
they are compared patient by patient: the mean of the per-patient differences (B - A) with its
standard error, and how many patients B improves. Prints one line per metric and region.

    python experiments/compare_cv.py runs/cv-baseline/crossval-postprocessed \
        runs/cv-baseline/crossval-with-cv-dropout-postprocessed
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

REGIONS = ("WT", "TC", "ET")


def per_patient(folder: Path) -> dict[str, dict[str, float]]:
    with open(folder / "metrics.csv", newline="") as handle:
        return {
            row["case_id"]: {k: float(v) for k, v in row.items() if k not in ("fold", "case_id")}
            for row in csv.DictReader(handle)
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="a crossval folder (holding metrics.csv)")
    parser.add_argument("b", type=Path, help="another, of the same patients")
    args = parser.parse_args()
    a, b = per_patient(args.a), per_patient(args.b)
    if set(a) != set(b):
        raise SystemExit(f"{args.a} and {args.b} score other patients ({len(a)} and {len(b)})")
    cases = sorted(a)
    print(f"{len(cases)} patients, B = {args.b} minus A = {args.a}")
    header = ("A mean", 9), ("B mean", 9), ("B - A", 9), ("s.e.", 8), ("B better", 10), ("A median", 10)
    print(f"{'metric':<10}" + "".join(f"{name:>{width}}" for name, width in header) + f"{'B median':>10}")
    for metric in ("dice", "hd95"):
        for region in REGIONS:
            key = f"{metric}_{region}"
            first = np.array([a[c][key] for c in cases])
            second = np.array([b[c][key] for c in cases])
            change = second - first
            better = int(np.sum(change > 0 if metric == "dice" else change < 0))
            print(
                f"{key:<10}{first.mean():9.3f}{second.mean():9.3f}{change.mean():+9.3f}"
                f"{change.std(ddof=1) / np.sqrt(len(cases)):8.3f}{better:>7}/{len(cases):<2}"
                f"{np.median(first):10.3f}{np.median(second):10.3f}"
            )


if __name__ == "__main__":
    main()
