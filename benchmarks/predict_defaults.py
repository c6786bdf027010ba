"""Seconds per real patient with predict's defaults (engine auto, coarse-to-fine search), for
several models side by side: a model file, or an ensemble given as files joined by commas.

Each model segments each case in turn, so that drift hits all alike; the first model is the
reference of the ratios. NIfTI in to NIfTI out, as `tumorseg predict CASE --out seg.nii.gz`
without the process start and imports. With --dice-cases N, each model's mean Dice over N real
cases with the defaults is printed beside PyTorch's on every slice (what cross-validation runs).

    python benchmarks/predict_defaults.py src/tumorseg/weights/brats-2d.pt a.pt,b.pt --cases 3 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from data_io import real_root  # this folder's benchmarks; scripts run from here
from patient_speed import variant_dice
from tumorseg.data.brats import find_case_files, find_case_folders
from tumorseg.inference.predict import predict_case
from tumorseg.inference.segmenter import Segmenter
from tumorseg.inference.sliding_window import COARSE_STEP, Search


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="a model file, or several joined by commas (an ensemble)")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dice-cases", type=int, default=0, help="also score each model on this many cases")
    args = parser.parse_args()
    cases = [find_case_files(folder) for folder in find_case_folders(real_root())[: args.cases]]
    segmenters = {
        spec: Segmenter([Path(p) for p in spec.split(",")], engine="auto", search=Search(COARSE_STEP))
        for spec in args.models
    }
    times: dict[str, list[float]] = {spec: [] for spec in segmenters}
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "seg.nii.gz"
        for segmenter in segmenters.values():
            predict_case(cases[0], segmenter, out)  # warm-up
        for _ in range(args.repeats):
            for files in cases:
                for spec, segmenter in segmenters.items():
                    start = time.perf_counter()
                    predict_case(files, segmenter, out)
                    times[spec].append(time.perf_counter() - start)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {len(cases)} real cases x {args.repeats} repeats, "
        "median seconds per patient with predict's defaults"
    )
    reference = statistics.median(times[args.models[0]])
    for spec, segmenter in segmenters.items():
        median = statistics.median(times[spec])
        print(f"{spec}: {median:.2f} s ({median / reference:.2f}x; engine {segmenter.engine})")
    if args.dice_cases:
        folders = find_case_folders(real_root())[: args.dice_cases]
        for spec, segmenter in segmenters.items():
            every_slice = Segmenter(segmenter.paths, engine="torch")
            with tempfile.TemporaryDirectory() as work:
                dice = variant_dice(folders, {"defaults": segmenter, "torch": every_slice}, Path(work))
            shown = " / ".join(f"{d:.4f}" for d in dice["defaults"])
            change = " / ".join(f"{d:+.4f}" for d in dice["defaults"] - dice["torch"])
            print(
                f"{spec}: Dice WT/TC/ET {shown} over {len(folders)} cases "
                f"(against PyTorch on every slice: {change})"
            )


if __name__ == "__main__":
    main()
