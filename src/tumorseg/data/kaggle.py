"""The Kaggle HDF5 layout of BraTS 2020: one ``volume_<v>_slice_<s>.h5`` file per axial slice.

Each file holds ``image`` (240, 240, 4) float and ``mask`` (240, 240, 3) uint8, with an
optional ``meta_data.csv`` beside them (columns slice_path, target, volume, slice). The channel
meanings are not written in the files; public code that uses this set reads them as below, and
this is the one place in tumorseg that says so.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from tumorseg.data.case import (
    MAX_SIDE,
    MODALITIES,
    Case,
    brats_affine,
    check_finite,
    check_grid,
    check_real_numbers,
)
from tumorseg.errors import TumorsegError, short
from tumorseg.labels import EDEMA, ENHANCING, NECROSIS

#: ``image[..., i]`` is modality IMAGE_CHANNELS[i].
IMAGE_CHANNELS: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
#: ``mask[..., i]`` marks internal class MASK_CLASSES[i].
MASK_CLASSES: tuple[int, ...] = (NECROSIS, EDEMA, ENHANCING)

_SLICE_NAME = re.compile(r"^volume_(\d+)_slice_(\d+)\.h5$")
META_FILE = "meta_data.csv"


def find_volumes(folder: Path) -> dict[int, dict[int, Path]]:
    """Group a folder's slice files by volume number: {volume: {slice: path}}.

    Two names for one slice (``volume_01_slice_3.h5`` and ``volume_1_slice_3.h5``) are an error,
    not a silent choice between them.
    """
    volumes: dict[int, dict[int, Path]] = defaultdict(dict)
    for path in sorted(folder.iterdir()):
        match = _SLICE_NAME.match(path.name)
        if not match:
            continue
        volume, index = int(match[1]), int(match[2])
        if index in volumes[volume]:
            raise TumorsegError(
                f"{path}: slice {index} of volume {volume} again (also {volumes[volume][index].name})"
            )
        volumes[volume][index] = path
    return dict(sorted(volumes.items()))


def is_kaggle_folder(folder: Path) -> bool:
    return folder.is_dir() and any(_SLICE_NAME.match(p.name) for p in folder.iterdir())


def check_meta(folder: Path, volumes: dict[int, dict[int, Path]]) -> None:
    """When meta_data.csv exists, every slice it lists must be there."""
    meta = folder / META_FILE
    if not meta.exists():
        return
    try:
        with meta.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        listed = {(int(r["volume"]), int(r["slice"])) for r in rows}
    except (KeyError, ValueError, csv.Error, UnicodeDecodeError) as err:
        raise TumorsegError(f"{meta}: not a Kaggle meta_data.csv ({err})") from err
    missing = sorted(vs for vs in listed if vs[1] not in volumes.get(vs[0], {}))
    if missing:
        v, s = missing[0]
        raise TumorsegError(
            f"{meta}: lists {len(missing)} slice files that are missing, first volume_{v}_slice_{s}.h5"
        )


def _dataset(handle: h5py.File, key: str, path: Path, shape: tuple[int | None, ...]) -> np.ndarray:
    """Read ``handle[key]`` after checking, from its metadata alone, that it is a numeric dataset
    of ``shape`` (None: any size up to MAX_SIDE)."""
    node = handle.get(key)
    if not isinstance(node, h5py.Dataset):
        raise TumorsegError(f"{path}: '{key}' is not a dataset")
    fits = len(node.shape) == len(shape) and all(
        (want is None and 1 <= have <= MAX_SIDE) or have == want
        for have, want in zip(node.shape, shape, strict=True)
    )
    if not fits:
        expected = ", ".join("N" if want is None else str(want) for want in shape)
        raise TumorsegError(
            f"{path}: '{key}' has shape {node.shape}, expected ({expected}) with N <= {MAX_SIDE}"
        )
    check_real_numbers(node.dtype, f"{path}: '{key}'")
    return node[()]


def _read_slice(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with h5py.File(path, "r") as handle:
            if "image" not in handle or "mask" not in handle:
                keys = sorted(handle.keys())[:10]
                raise TumorsegError(f"{path}: expected datasets 'image' and 'mask', found {short(keys)}")
            image = _dataset(handle, "image", path, (None, None, len(IMAGE_CHANNELS)))
            mask = _dataset(handle, "mask", path, (*image.shape[:2], len(MASK_CLASSES)))
    except OSError as err:
        raise TumorsegError(f"{path}: not a readable HDF5 file ({err})") from err
    return image, mask


def read_volume(volume: int, slices: dict[int, Path]) -> Case:
    """Stack a volume's slice files into a Case; slices must run 0..N-1 without gaps."""
    first = next(iter(slices.values()))
    expected = set(range(len(slices)))
    if set(slices) != expected:
        gap = min(expected.symmetric_difference(slices))
        raise TumorsegError(f"{first.parent}: volume {volume} lacks slice {gap} (slices must run 0..N-1)")
    images, labels = [], []
    for index in range(len(slices)):
        path = slices[index]
        image, mask = _read_slice(path)
        if not images:
            check_grid((*image.shape[:2], len(slices)), f"{first.parent}/volume_{volume}_slice_*.h5")
        check_finite(image, str(path))
        if images and image.shape != images[0].shape:
            raise TumorsegError(f"{path}: shape {image.shape} differs from slice 0 {images[0].shape}")
        if not np.isin(mask, (0, 1)).all():
            raise TumorsegError(f"{path}: 'mask' holds values other than 0 and 1")
        if (mask.sum(axis=-1) > 1).any():
            raise TumorsegError(f"{path}: 'mask' channels overlap (a voxel in two classes)")
        label = np.zeros(mask.shape[:2], dtype=np.uint8)
        for channel, cls in enumerate(MASK_CLASSES):
            label[mask[..., channel] > 0] = cls
        images.append(image)
        labels.append(label)
    stacked = np.stack(images, axis=2)  # H, W, S, C
    order = [IMAGE_CHANNELS.index(m) for m in MODALITIES]
    return Case(
        case_id=f"volume_{volume}",
        image=np.moveaxis(stacked, 3, 0)[order],
        label=np.stack(labels, axis=2),
        # the layout keeps no geometry: its arrays are slices of BraTS files, so their grid is assumed
        affine=brats_affine(stacked.shape[:3]),
        sources=[str(first.parent / f"volume_{volume}_slice_*.h5")],
    )


def write_volume(folder: Path, volume: int, image: np.ndarray, label: np.ndarray) -> list[dict]:
    """Write a (4, X, Y, Z) image and internal label map as Kaggle slice files.

    Returns the meta_data.csv rows of the written slices. Used by ``tumorseg synth`` and by the
    benchmarks to build the per-slice layout from real cases.
    """
    folder.mkdir(parents=True, exist_ok=True)
    order = [MODALITIES.index(m) for m in IMAGE_CHANNELS]
    rows = []
    for index in range(image.shape[-1]):
        name = f"volume_{volume}_slice_{index}.h5"
        mask = np.stack([label[..., index] == cls for cls in MASK_CLASSES], axis=-1)
        with h5py.File(folder / name, "w") as handle:
            handle["image"] = np.moveaxis(image[order, ..., index], 0, -1).astype(np.float64)
            handle["mask"] = mask.astype(np.uint8)
        rows.append({"slice_path": name, "target": int(mask.any()), "volume": volume, "slice": index})
    return rows


def write_meta(folder: Path, rows: list[dict]) -> None:
    with (folder / META_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slice_path", "target", "volume", "slice"])
        writer.writeheader()
        writer.writerows(rows)
