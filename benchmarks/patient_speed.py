"""Patient benchmark: seconds to segment one real 240x240x155 patient end to end.

Reads the four NIfTI files, reorients, crops and z-scores, runs the network slice by slice,
and writes the label map: PyTorch, ONNX Runtime and ONNX Runtime on the 8-bit export
(calibrated on 4 other real cases), each on every slice and coarse to fine (every 4th slice
first, then only near tumor; the default), without and with flip TTA. Pass --model RUN: the
coarse-to-fine search skips slices only where a trained model finds no tumor (an untrained
model, the default, finds "tumor" everywhere and so times the worst case). Medians over cases
and repeats. With --dice-cases N, each variant (without TTA) also segments N real cases and its
mean Dice against their label maps is printed beside PyTorch's on every slice, to show what a
faster variant costs.

    python benchmarks/patient_speed.py --cases 3 --repeats 2 [--json patient_speed.json]
    python benchmarks/patient_speed.py --model src/tumorseg/weights/brats-2d.pt --dice-cases 28
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from data_io import real_root  # this folder's data benchmark; scripts run from here
from tumorseg.checkpoint import save_checkpoint
from tumorseg.data.brats import find_case_files, find_case_folders
from tumorseg.data.prepare import prepare_store
from tumorseg.inference.export import export_onnx
from tumorseg.inference.members import ENGINES
from tumorseg.inference.onnx import onnx_path
from tumorseg.inference.predict import predict_case
from tumorseg.inference.segmenter import Segmenter
from tumorseg.inference.sliding_window import COARSE_STEP, Search
from tumorseg.labels import label_convention, to_internal
from tumorseg.metrics import region_dice
from tumorseg.models import ModelConfig
from tumorseg.models.network import create_network
from tumorseg.rundir import model_checkpoint


def untrained_checkpoint(folder: Path) -> Path:
    config = ModelConfig()
    torch.manual_seed(0)
    model = create_network(config)
    path = folder / "best.pt"
    state = {
        "model": model.state_dict(),
        "model_config": config.to_dict(),
        "epoch": 0,
        "labels": label_convention(),
    }
    save_checkpoint(state, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, help="run directory or checkpoint (default: untrained default model)"
    )
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dice-cases", type=int, default=0, help="also score each engine on this many cases")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folders = find_case_folders(real_root())
    cases = [find_case_files(f, require_label=False) for f in folders[: args.cases]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model:  # a private copy, so the ONNX export lands beside it and not in the run
            shutil.copy(model_checkpoint(args.model), work / "best.pt")
            checkpoint = work / "best.pt"
        else:
            checkpoint = untrained_checkpoint(work)
        export_onnx(Segmenter(checkpoint), onnx_path(checkpoint))
        calibration = work / "calibration.h5"
        prepare_store(folders[-4:], calibration, progress=False)
        export_onnx(Segmenter(checkpoint), onnx_path(checkpoint, int8=True), calibration=calibration)
        segmenters = {
            variant(engine, step, tta): Segmenter(checkpoint, tta=tta, engine=engine, search=Search(step))
            for engine in ENGINES
            for step in (1, COARSE_STEP)
            for tta in (False, True)
        }
        times = {name: [] for name in segmenters}
        for segmenter in segmenters.values():
            predict_case(cases[0], segmenter, work / "warmup.nii.gz")
        for _ in range(args.repeats):
            for files in cases:
                for name, segmenter in segmenters.items():  # in turns, so drift hits all alike
                    start = time.perf_counter()
                    predict_case(files, segmenter, work / "seg.nii.gz")
                    times[name].append(time.perf_counter() - start)
        dice = variant_dice(folders[: args.dice_cases], segmenters, work) if args.dice_cases else {}
    device = platform.processor() or platform.machine()
    print(
        f"{device}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{len(cases)} real cases x {args.repeats} repeats, median seconds per patient, NIfTI in to NIfTI out"
    )
    for name, values in times.items():
        print(f"{name:<38} {statistics.median(values):6.2f} s")
    reference = variant("torch", 1, False)
    for name, scores in dice.items():
        shown = " / ".join(f"{d:.4f}" for d in scores)
        change = " / ".join(f"{d:+.4f}" for d in scores - dice[reference])
        print(
            f"{name:<38} Dice WT/TC/ET {shown} over {args.dice_cases} cases (against {reference}: {change})"
        )
    if args.json:
        figures = {"seconds": {n: statistics.median(v) for n, v in times.items()}}
        figures["dice"] = {name: scores.tolist() for name, scores in dice.items()}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def variant(engine: str, step: int, tta: bool) -> str:
    search = "every slice" if step == 1 else f"coarse step {step}"
    return f"{engine}, {search}{' + TTA' if tta else ''}"


def variant_dice(folders: list[Path], segmenters: dict[str, Segmenter], work: Path) -> dict[str, np.ndarray]:
    """Mean Dice (WT, TC, ET) over the cases of each variant's label maps (no TTA) against the truth."""
    names = [name for name in segmenters if not name.endswith("TTA")]
    scores = {name: [] for name in names}
    for folder in folders:
        files = find_case_files(folder)
        truth = to_internal(np.asarray(nib.load(files.seg).dataobj), files.convention)
        for name in names:
            predict_case(files, segmenters[name], work / "seg.nii.gz")
            predicted = to_internal(np.asarray(nib.load(work / "seg.nii.gz").dataobj))
            scores[name].append(region_dice(predicted, truth))
    return {name: np.mean(values, axis=0) for name, values in scores.items()}


if __name__ == "__main__":
    main()
