"""2D axial slices from a store, as PyTorch tensors (augmented later, a batch at a time, by
``tumorseg.training.augment``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tumorseg.data.preprocess import neighbours
from tumorseg.data.store import ProcessStore, Store


def center_fit(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Zero-pad or center-crop the last two axes of ``array`` to ``size``.

    (MONAI's ResizeWithPadOrCropd does the same at many times the cost of reading the slice;
    this is plain slicing.)
    """
    out = np.zeros((*array.shape[:-2], *size), dtype=array.dtype)
    source, target = [], []
    for have, want in zip(array.shape[-2:], size, strict=True):
        if have >= want:
            start = (have - want) // 2
            source.append(slice(start, start + want))
            target.append(slice(0, want))
        else:
            start = (want - have) // 2
            source.append(slice(0, have))
            target.append(slice(start, start + have))
    out[(..., *target)] = array[(..., *source)]
    return out


class SliceDataset(Dataset):
    """Every axial slice of the given (labeled) cases, padded or cropped to ``size``.

    Items are dicts with "image" (4, H, W) float32 (with ``context`` N: (4 (2N + 1), H, W), the
    slice and its neighbours, as ``preprocess.with_context`` stacks them) and "label" (H, W)
    int64 internal classes. The store is opened lazily in each process, so DataLoader workers
    each get their own HDF5 handle.
    """

    def __init__(
        self,
        store_path: str | Path,
        case_ids: list[str],
        size: tuple[int, int] | None = (192, 192),
        context: int = 0,
    ):
        self.store_path = Path(store_path)
        self.context = context
        self.depth: dict[str, int] = {}
        self.size = tuple(size) if size else None
        self.index: list[tuple[str, int]] = []
        tumor: list[bool] = []
        with Store(self.store_path) as store:
            for case_id in case_ids:
                info = store.info(case_id)
                if not info.has_label:
                    continue
                has_tumor = info.tumor_voxels > 0
                self.depth[case_id] = info.num_slices
                self.index += [(case_id, z) for z in range(info.num_slices)]
                tumor += has_tumor.tolist()
        self.has_tumor = np.asarray(tumor, dtype=bool)
        self.reader = ProcessStore(self.store_path)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        case_id, z = self.index[i]
        store = self.reader()
        image, label = store.read_slice(case_id, z)
        if self.context:
            near = neighbours(np.array([z]), self.depth[case_id], self.context)[0]
            image = store.read_slices(case_id, near).reshape(-1, *image.shape[1:])
        if self.size:
            image, label = center_fit(image, self.size), center_fit(label, self.size)
        return {
            "image": torch.as_tensor(image, dtype=torch.float32),
            "label": torch.as_tensor(label, dtype=torch.int64),
        }


def tumor_weights(has_tumor: np.ndarray, tumor_fraction: float) -> np.ndarray | None:
    """Sampling weights under which about ``tumor_fraction`` of the draws hold tumor.

    None (uniform sampling) when the fraction is 0 or every slice, or none, holds tumor.
    """
    n_tumor = int(has_tumor.sum())
    if tumor_fraction <= 0 or n_tumor in (0, len(has_tumor)):
        return None
    return np.where(has_tumor, tumor_fraction / n_tumor, (1 - tumor_fraction) / (len(has_tumor) - n_tumor))
