"""3D patches from a store, for a 3D network: random boxes of the labeled cases, a share of them
centred on a tumor voxel (as nnU-Net oversamples the foreground)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tumorseg.data.store import ProcessStore, Store


def patch_box(centre: np.ndarray, patch: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of the patch around ``centre``, moved inside the volume where it fits; a
    volume smaller than the patch along an axis is taken whole (and centred by ``fit``)."""
    start = np.clip(centre - patch // 2, 0, np.maximum(shape - patch, 0))
    return start, np.minimum(start + patch, shape)


def fit(array: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Zero-pad the last three axes of ``array`` (each at most the patch's) to ``patch``, centred."""
    missing = patch - np.asarray(array.shape[-3:])
    pad = [(0, 0)] * (array.ndim - 3) + [(m // 2, m - m // 2) for m in missing]
    return np.pad(array, pad) if missing.any() else array


class PatchDataset(Dataset):
    """Patches (4, D, H, W) float32 and labels (D, H, W) int64 of the labeled ``case_ids``.

    An item is drawn by its key (case index, draw), the pair the epoch's sampler yields; the draw
    seeds where the patch lies (about ``tumor_fraction`` of them on a random tumor voxel, the rest
    anywhere), so a patch depends on (seed, epoch, draw) alone, never on the loader worker.
    """

    def __init__(self, store_path: str | Path, case_ids: list[str], patch: list[int], tumor_fraction: float):
        self.store_path = Path(store_path)
        self.patch = np.asarray(patch)
        self.tumor_fraction = tumor_fraction
        self.seed = 0
        self.cases: list[tuple[str, np.ndarray, bool]] = []
        with Store(self.store_path) as store:
            for case_id in case_ids:
                info = store.info(case_id)
                if info.has_label:
                    shape = np.asarray([info.num_slices, *info.shape[-2:]])
                    self.cases.append((case_id, shape, bool(info.tumor_voxels.any())))
        self.reader = ProcessStore(self.store_path)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, draw = key
        case_id, shape, has_tumor = self.cases[index]
        rng = np.random.default_rng([self.seed, draw])
        store = self.reader()
        if has_tumor and rng.random() < self.tumor_fraction:
            label = store.read_label(case_id)
            tumor = np.flatnonzero(label)
            centre = np.asarray(np.unravel_index(tumor[rng.integers(len(tumor))], label.shape))
        else:
            centre = rng.integers(0, shape)
        start, stop = patch_box(centre, self.patch, shape)
        image, label = store.read_box(case_id, tuple(slice(a, b) for a, b in zip(start, stop, strict=True)))
        image = fit(np.moveaxis(image, 1, 0), self.patch)  # (4, D, H, W)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(fit(label, self.patch).astype(np.int64)),
        }
