"""Data benchmark: the tumorseg store versus the Kaggle per-slice layout, and the store's codec.

Builds both layouts from the same real BraTS cases, then prints (and writes as JSON):
- size on disk of the NIfTI sources, the Kaggle layout and the store;
- random axial-slice reads per second (image and label, ready for a model), medians of
  repeated runs, single process;
- the same through a PyTorch DataLoader with 2 worker processes (batches of 16, random order);
- peak resident memory of one process iterating a whole epoch, for stores of more and more
  cases (it must not grow with the number of cases);
- with --codecs, the store-format candidates measured on one case (size, write, read).

Real cases come from $TUMORSEG_REAL_DATA or ../shared/data/brats2018-sample.

    python benchmarks/data_io.py --cases 3 --codecs --json data_io.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import torch

from tumorseg.data import kaggle
from tumorseg.data.brats import find_case_files, find_case_folders, read_case
from tumorseg.data.dataset import SliceDataset
from tumorseg.data.prepare import prepare_store
from tumorseg.data.preprocess import preprocess
from tumorseg.data.store import Store

REPO = Path(__file__).resolve().parents[1]


def real_root() -> Path:
    root = Path(os.environ.get("TUMORSEG_REAL_DATA", REPO.parent / "shared/data/brats2018-sample"))
    if not root.is_dir():
        raise SystemExit(f"real cases not found at {root}; set TUMORSEG_REAL_DATA")
    return root


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def rate(read, pairs, repeats: int) -> float:
    """Median slices per second over ``repeats`` passes of reading ``pairs``."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for pair in pairs:
            read(*pair)
        rates.append(len(pairs) / (time.perf_counter() - start))
    return statistics.median(rates)


def read_kaggle_slice(folder: Path, volume: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(folder / f"volume_{volume}_slice_{index}.h5", "r") as handle:
        return handle["image"][()].astype(np.float32), handle["mask"][()]


class KaggleSlices(torch.utils.data.Dataset):
    """The per-slice layout as a training script reads it: one file per item."""

    def __init__(self, folder: Path, pairs: list[tuple[int, int]]):
        self.folder, self.pairs = folder, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        image, mask = read_kaggle_slice(self.folder, *self.pairs[i])
        return {
            "image": torch.from_numpy(np.moveaxis(image, -1, 0).copy()),
            "label": torch.from_numpy(mask.argmax(-1)),
        }


def loader_rate(dataset, repeats: int) -> float:
    """Median slices/s through a DataLoader with 2 workers, random order, batches of 16."""
    rates = []
    for seed in range(repeats):
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=16, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(seed)
        )
        start = time.perf_counter()
        count = sum(len(batch["image"]) for batch in loader)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def epoch_peak_rss(store_path: str, case_ids: list[str]) -> tuple[float, float]:
    """(peak, before) RSS in MB of a fresh process reading every slice of ``case_ids`` in random order."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dataset = SliceDataset(store_path, case_ids, size=(192, 192))
    for i in np.random.default_rng(0).permutation(len(dataset)):
        dataset[i]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, before / 1024


def compare_layouts(folders: list[Path], work: Path, reads: int, repeats: int) -> dict:
    kaggle_dir, store_path = work / "kaggle", work / "store.h5"
    for number, folder in enumerate(folders, start=1):
        case = read_case(find_case_files(folder))
        kaggle.write_volume(kaggle_dir, number, case.image, case.label)
    prepare_store(folders, store_path, progress=False)
    rng = np.random.default_rng(0)
    with Store(store_path) as store:
        ids = store.case_ids
        store_pairs = [(c, int(rng.integers(store.info(c).num_slices))) for c in rng.choice(ids, reads)]
        store_rate = rate(store.read_slice, store_pairs, repeats)
    kaggle_pairs = [(int(v), int(rng.integers(155))) for v in rng.integers(1, len(folders) + 1, reads)]
    kaggle_rate = rate(lambda v, s: read_kaggle_slice(kaggle_dir, v, s), kaggle_pairs, repeats)
    workers = {
        "kaggle": loader_rate(KaggleSlices(kaggle_dir, kaggle_pairs[:1000]), repeats),
        "store": loader_rate(SliceDataset(store_path, ids, size=(240, 240)), repeats),
    }
    sizes = {
        "nifti_gz": sum(folder_bytes(f) for f in folders),
        "kaggle": folder_bytes(kaggle_dir),
        "store": store_path.stat().st_size,
    }
    return {
        "cases": len(folders),
        "bytes": sizes,
        "slices_per_s": {"kaggle": kaggle_rate, "store": store_rate},
        "slices_per_s_2_workers": workers,
        "size_ratio_kaggle_over_store": sizes["kaggle"] / sizes["store"],
        "speed_ratio_store_over_kaggle": store_rate / kaggle_rate,
    }


def compare_codecs(folder: Path, work: Path, reads: int, repeats: int) -> list[dict]:
    """Candidate formats for one case's cropped image, (Z, 4, H, W), one chunk per slice."""
    encoded = preprocess(read_case(find_case_files(folder)))
    raw = encoded.image
    mean = encoded.norm_mean[None, :, None, None]
    std = encoded.norm_std[None, :, None, None]
    zscores = np.where(raw != 0, (raw - mean) / std, 0)
    blosc = hdf5plugin.Blosc
    candidates = {
        "float32 z-scores, uncompressed": (zscores.astype(np.float32), {}),
        "float16 z-scores, gzip 4": (
            zscores.astype(np.float16),
            {"compression": "gzip", "compression_opts": 4},
        ),
        "float16 z-scores, lzf": (zscores.astype(np.float16), {"compression": "lzf"}),
        "float16 z-scores, LZ4": (zscores.astype(np.float16), dict(hdf5plugin.LZ4())),
        "float16 z-scores, Zstd 1": (zscores.astype(np.float16), dict(hdf5plugin.Zstd(clevel=1))),
        "float16 z-scores, Blosc LZ4 + shuffle": (
            zscores.astype(np.float16),
            dict(blosc(cname="lz4", clevel=5, shuffle=blosc.SHUFFLE)),
        ),
        "int16 raw, Zstd 1": (raw, dict(hdf5plugin.Zstd(clevel=1))),
        "int16 raw, Blosc Zstd 3 + shuffle": (
            raw,
            dict(blosc(cname="zstd", clevel=3, shuffle=blosc.SHUFFLE)),
        ),
        "int16 raw, Blosc LZ4 + shuffle (chosen)": (
            raw,
            dict(blosc(cname="lz4", clevel=5, shuffle=blosc.SHUFFLE)),
        ),
    }
    rng = np.random.default_rng(0)
    indices = [(int(z),) for z in rng.integers(raw.shape[0], size=reads)]
    rows = []
    for name, (array, options) in candidates.items():
        path = work / "codec.h5"
        start = time.perf_counter()
        with h5py.File(path, "w") as handle:
            handle.create_dataset("image", data=array, chunks=(1, *array.shape[1:]), **options)
        write_s = time.perf_counter() - start
        with h5py.File(path, "r") as handle:
            dataset = handle["image"]
            read_rate = rate(lambda z, d=dataset: d[z], indices, repeats)
        rows.append(
            {"format": name, "mb": path.stat().st_size / 1e6, "write_s": write_s, "slices_per_s": read_rate}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--reads", type=int, default=2000, help="random slice reads per pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--codecs", action="store_true", help="also compare store formats on one case")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--rss-store", type=Path, help="a store of many cases for the peak-RSS measurement")
    args = parser.parse_args()

    folders = find_case_folders(real_root())[: args.cases]
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    }
    with tempfile.TemporaryDirectory() as tmp:
        layouts = compare_layouts(folders, Path(tmp), args.reads, args.repeats)
        result["layouts"] = layouts
        mb = {k: v / 1e6 for k, v in layouts["bytes"].items()}
        print(
            f"{layouts['cases']} real cases, {args.reads} random slice reads x {args.repeats} passes (median)"
        )
        print(f"{'layout':<28} {'MB':>9} {'slices/s':>10}")
        print(f"{'NIfTI .nii.gz (sources)':<28} {mb['nifti_gz']:>9.1f} {'':>10}")
        print(
            f"{'Kaggle per-slice .h5':<28} {mb['kaggle']:>9.1f} {layouts['slices_per_s']['kaggle']:>10,.0f}"
        )
        print(f"{'tumorseg store':<28} {mb['store']:>9.1f} {layouts['slices_per_s']['store']:>10,.0f}")
        print(
            f"store vs Kaggle: {layouts['size_ratio_kaggle_over_store']:.1f}x smaller, "
            f"{layouts['speed_ratio_store_over_kaggle']:.1f}x the reads per second"
        )
        workers = layouts["slices_per_s_2_workers"]
        print(
            f"DataLoader, 2 workers, batches of 16: Kaggle {workers['kaggle']:,.0f} slices/s, "
            f"store {workers['store']:,.0f} slices/s ({workers['store'] / workers['kaggle']:.1f}x)"
        )
        if args.rss_store:
            with Store(args.rss_store) as store:
                ids = store.labeled_case_ids
            context = multiprocessing.get_context("spawn")
            result["peak_rss_mb"] = {}
            print(f"\npeak RSS of one process reading every slice of an epoch ({args.rss_store.name}):")
            for count in sorted({2, len(ids) // 4, len(ids) // 2, len(ids)} - {0}):
                with context.Pool(1) as pool:
                    peak, start = pool.apply(epoch_peak_rss, (str(args.rss_store), ids[:count]))
                result["peak_rss_mb"][count] = peak
                print(f"  {count:>4} cases: {peak:7.0f} MB (after imports {start:.0f} MB)")
        if args.codecs:
            rows = compare_codecs(folders[0], Path(tmp), args.reads, args.repeats)
            result["codecs"] = rows
            print(f"\nstore format candidates on {folders[0].name} (cropped to the brain, chunk = one slice)")
            print(f"{'format':<42} {'MB':>7} {'write s':>8} {'slices/s':>10}")
            for row in rows:
                speed = f"{row['slices_per_s']:>10,.0f}"
                print(f"{row['format']:<42} {row['mb']:>7.2f} {row['write_s']:>8.2f} {speed}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
