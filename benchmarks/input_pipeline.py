"""Input-pipeline benchmark: augmented training slices per second on one CPU core.

The same slices (192x192, four sequences, half of them with tumor, from a store of real cases)
go through three pipelines, in turns, in one process with one torch thread:
- read: read and crop only (what loader workers now do);
- per-sample MONAI (tumorseg 0.1): read, crop, then RandFlipd x2, RandAffined, intensity scale
  and shift on each sample;
- batched (tumorseg now): read and crop, stack 16, then ``BatchAugmentation`` on the batch;
and the batched augmentation alone (what the training device adds to reading). With a CUDA GPU,
the batched augmentation is also timed there. Medians over repeats.

Real cases come from $TUMORSEG_REAL_DATA or ../shared/data/brats2018-sample.

    python benchmarks/input_pipeline.py --cases 3 --batches 20 --repeats 5 [--json input_pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai import transforms as mt

from data_io import real_root  # this folder's data benchmark; scripts run from here
from tumorseg.data.brats import find_case_folders
from tumorseg.data.dataset import SliceDataset, tumor_weights
from tumorseg.data.prepare import prepare_store
from tumorseg.training.augment import BatchAugmentation

BATCH = 16
KEYS = ("image", "label")


def monai_chain(seed: int) -> mt.Compose:
    """tumorseg 0.1's augmentation: MONAI's dictionary transforms on one sample at a time."""
    chain = mt.Compose(
        [
            mt.RandFlipd(KEYS, prob=0.5, spatial_axis=0),
            mt.RandFlipd(KEYS, prob=0.5, spatial_axis=1),
            mt.RandAffined(
                KEYS,
                prob=0.5,
                rotate_range=np.deg2rad(15),
                scale_range=0.1,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            mt.RandScaleIntensityd("image", factors=0.1, prob=0.5),
            mt.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]
    )
    return chain.set_random_state(seed)


def read_only(dataset: SliceDataset, indices: list[int]) -> None:
    for i in indices:
        dataset[i]


def per_sample(dataset: SliceDataset, indices: list[int], chain: mt.Compose) -> None:
    for i in indices:
        item = dataset[i]
        moved = chain({"image": item["image"].numpy(), "label": item["label"][None].numpy()})
        torch.as_tensor(np.asarray(moved["image"])), torch.as_tensor(np.asarray(moved["label"][0]))


def batched(dataset: SliceDataset, indices: list[int], augment: BatchAugmentation) -> None:
    for start in range(0, len(indices), BATCH):
        items = [dataset[i] for i in indices[start : start + BATCH]]
        augment(torch.stack([t["image"] for t in items]), torch.stack([t["label"] for t in items]))


def augmentation_only(batches: list[tuple[torch.Tensor, torch.Tensor]], augment: BatchAugmentation) -> None:
    for image, label in batches:
        augment(image, label)
    if batches[0][0].is_cuda:
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="batches of 16 slices per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folders = find_case_folders(real_root())[: args.cases]
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store.h5"
        prepare_store(folders, store, progress=False)
        dataset = SliceDataset(store, [f.name for f in folders], size=(192, 192))
        weights = tumor_weights(dataset.has_tumor, 0.5)
        rng = np.random.default_rng(0)
        indices = rng.choice(len(dataset), args.batches * BATCH, p=weights / weights.sum()).tolist()
        batches = [
            (
                torch.stack([dataset[i]["image"] for i in chunk]),
                torch.stack([dataset[i]["label"] for i in chunk]),
            )
            for chunk in np.array_split(indices, args.batches)
        ]
        augment = BatchAugmentation(0)
        pipelines = {
            "read and crop only": lambda: read_only(dataset, indices),
            "per-sample MONAI (0.1)": lambda: per_sample(dataset, indices, monai_chain(0)),
            "batched (now)": lambda: batched(dataset, indices, augment),
            "batched augmentation alone": lambda: augmentation_only(batches, augment),
        }
        if torch.cuda.is_available():
            on_gpu = [(image.cuda(), label.cuda()) for image, label in batches]
            pipelines["batched augmentation alone, CUDA"] = lambda: augmentation_only(on_gpu, augment)
        times: dict[str, list[float]] = {name: [] for name in pipelines}
        for run in pipelines.values():  # warm up
            run()
        for _ in range(args.repeats):
            for name, run in pipelines.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    rates = {name: len(indices) / statistics.median(spent) for name, spent in times.items()}
    print(
        f"{len(folders)} real cases, {len(indices)} slices of 192x192x4 per repeat (half with tumor), "
        f"batches of {BATCH}, one torch thread, median of {args.repeats} repeats "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__})"
    )
    old = rates["per-sample MONAI (0.1)"]
    for name, value in rates.items():
        print(f"  {name:34s} {value:8,.0f} slices/s per core   {value / old:5.1f}x the 0.1 pipeline")
    if args.json:
        args.json.write_text(json.dumps({"slices": len(indices), "slices_per_s": rates}, indent=2))


if __name__ == "__main__":
    main()
