"""2D axial slices from a store, as PyTorch tensors, with optional MONAI augmentation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from monai import transforms as mt
from torch.utils.data import Dataset, get_worker_info

from tumorseg.data.preprocess import neighbours
from tumorseg.data.store import Store

KEYS = ("image", "label")


class Augmentation:
    """MONAI's random transforms applied in order, each drawing from its own seeded stream.

    (Wrapped in MONAI 1.6's ``Compose`` inside this dataset, equally seeded runs drew
    different augmentations; this chain keeps the seeds it is given, and a test checks it.)
    """

    def __init__(self, transforms: list[mt.Randomizable], seed: int = 0):
        self.transforms = transforms
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> Augmentation:
        seeds = np.random.SeedSequence(seed).generate_state(len(self.transforms))
        for transform, stream in zip(self.transforms, seeds, strict=True):
            transform.set_random_state(int(stream))
        return self

    def __call__(self, item: dict) -> dict:
        for transform in self.transforms:
            item = transform(item)
        return item


class ModalityDropout(mt.Randomizable):
    """Zero each of the ``modalities`` with probability ``p``, never all of them; with 2.5D input a
    dropped modality is zeroed in every neighbouring slice (channel k is modality k % modalities).

    A zeroed channel is how an absent sequence reaches the network at inference, so a model
    trained this way learns to segment from any non-empty subset of the sequences.
    """

    def __init__(self, p: float, modalities: int = 4):
        self.p, self.modalities = p, modalities

    def __call__(self, item: dict) -> dict:
        keep = self.R.random_sample(self.modalities) >= self.p
        if not keep.any():
            keep[self.R.randint(self.modalities)] = True
        keep = np.tile(keep, item["image"].shape[0] // self.modalities)
        return {**item, "image": item["image"] * keep.astype(np.float32)[:, None, None]}


def augmentation(
    seed: int = 0, *, spatial: bool = True, modality_dropout: float = 0.0
) -> Augmentation | None:
    """Random flips, small rotations and scaling, intensity scale and shift (MONAI), then modality
    dropout (last, so that no intensity shift revives a zeroed channel). None when there is none."""
    transforms: list[mt.Randomizable] = []
    if spatial:
        transforms += [
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
    if modality_dropout > 0:
        transforms.append(ModalityDropout(modality_dropout))
    return Augmentation(transforms, seed) if transforms else None


def center_fit(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Zero-pad or center-crop the last two axes of ``array`` to ``size``.

    (MONAI's ResizeWithPadOrCropd does the same at about 2 ms a slice, twelve times the cost of
    reading the slice; this is plain slicing.)
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
        transform: Augmentation | None = None,
        context: int = 0,
    ):
        self.store_path = Path(store_path)
        self.context = context
        self.depth: dict[str, int] = {}
        self.transform = transform
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
        self._store: Store | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.index)

    def _open(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store = Store(self.store_path)
            self._pid = os.getpid()
        return self._store

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        case_id, z = self.index[i]
        store = self._open()
        image, label = store.read_slice(case_id, z)
        if self.context:
            near = neighbours(np.array([z]), self.depth[case_id], self.context)[0]
            image = store.read_slices(case_id, near).reshape(-1, *image.shape[1:])
        if self.size:
            image, label = center_fit(image, self.size), center_fit(label, self.size)
        item = {"image": image, "label": label[None]}
        if self.transform:
            item = self.transform(item)
        return {
            "image": torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32),
            "label": torch.as_tensor(np.asarray(item["label"][0]), dtype=torch.int64),
        }


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a distinct, reproducible augmentation stream per worker."""
    info = get_worker_info()
    if info is not None and info.dataset.transform is not None:
        info.dataset.transform.set_random_state(info.seed % 2**32)


def tumor_weights(has_tumor: np.ndarray, tumor_fraction: float) -> np.ndarray | None:
    """Sampling weights under which about ``tumor_fraction`` of the draws hold tumor.

    None (uniform sampling) when the fraction is 0 or every slice, or none, holds tumor.
    """
    n_tumor = int(has_tumor.sum())
    if tumor_fraction <= 0 or n_tumor in (0, len(has_tumor)):
        return None
    return np.where(has_tumor, tumor_fraction / n_tumor, (1 - tumor_fraction) / (len(has_tumor) - n_tumor))
