"""Patient benchmark: seconds to segment one real 240x240x155 patient end to end.

Reads the four NIfTI files, reorients, crops and z-scores, runs the network slice by slice,
and writes the label map: PyTorch versus ONNX Runtime, without and with flip TTA. Timing does
not depend on the weights, so by default an untrained model of the default width (channels 16..256)
is used; pass --model RUN to time a trained one. Medians over cases and repeats.

    python benchmarks/patient_speed.py --cases 3 --repeats 2 [--json patient_speed.json]
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

import torch

from data_io import real_root  # this folder's data benchmark; scripts run from here
from tumorseg.checkpoint import save_checkpoint
from tumorseg.data.brats import find_case_files, find_case_folders
from tumorseg.inference.onnx import export_onnx, onnx_path
from tumorseg.inference.predict import predict_case
from tumorseg.inference.segmenter import Segmenter
from tumorseg.labels import label_convention
from tumorseg.models import ModelConfig, create_network
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
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cases = [find_case_files(f, require_label=False) for f in find_case_folders(real_root())[: args.cases]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model:  # a private copy, so the ONNX export lands beside it and not in the run
            shutil.copy(model_checkpoint(args.model), work / "best.pt")
            checkpoint = work / "best.pt"
        else:
            checkpoint = untrained_checkpoint(work)
        export_onnx(Segmenter(checkpoint), onnx_path(checkpoint))
        segmenters = {
            f"{engine}{' + TTA' if tta else ''}": Segmenter(checkpoint, tta=tta, engine=engine)
            for engine in ("torch", "onnx")
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
    device = platform.processor() or platform.machine()
    print(
        f"{device}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{len(cases)} real cases x {args.repeats} repeats, median seconds per patient, NIfTI in to NIfTI out"
    )
    for name, values in times.items():
        print(f"{name:<14} {statistics.median(values):6.2f} s")
    if args.json:
        args.json.write_text(json.dumps({n: statistics.median(v) for n, v in times.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
