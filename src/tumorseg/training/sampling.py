"""What each epoch trains on: 2D slices of the training patients, tumor slices oversampled (or
3D patches, a share centred on tumor), read by loader workers and augmented a batch at a time on
the training device; the draw and the augmentation follow from (seed, epoch, rank) alone, so a
resumed run repeats an epoch exactly."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tumorseg.data.dataset import SliceDataset, tumor_weights
from tumorseg.data.patches import PatchDataset
from tumorseg.errors import TumorsegError
from tumorseg.training import distributed
from tumorseg.training.augment import BatchAugmentation
from tumorseg.training.config import TrainConfig

#: Loader workers that ``--workers auto`` starts at most per training process on a GPU.
MAX_AUTO_WORKERS = 8


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(workers: str, world: int, device: torch.device) -> int:
    """``--workers``: a number, or ``auto``: on a GPU, every core this process may use but its own
    (up to MAX_AUTO_WORKERS), since workers only read and crop; on a CPU, which trains on the
    cores itself, one reader when there is a core to spare."""
    if workers != "auto":
        return int(workers)
    cores = max(1, available_cores() // world)
    if device.type == "cuda":
        return min(MAX_AUTO_WORKERS, cores - 1)
    return 1 if cores > 1 else 0


class EpochData:
    """The training patients' slices (a 2D network) or patches (3D), and each epoch's loader."""

    def __init__(
        self, store_path: Path, case_ids: list[str], config: TrainConfig, world: int, device: torch.device
    ):
        self.volumetric = config.model.dims == 3
        if self.volumetric:
            self.dataset = PatchDataset(store_path, case_ids, config.model.patch, config.tumor_fraction)
        else:
            self.dataset = SliceDataset(
                store_path, case_ids, size=tuple(config.size), context=config.model.context
            )
        if len(self.dataset) == 0:
            raise TumorsegError(f"{store_path}: the training patients hold no labeled slices")
        self.config = config
        self.augmentation = (
            BatchAugmentation(
                spatial=config.augment,
                modality_dropout=config.modality_dropout,
                max_degrees=config.augment_rotation,
                max_scaling=config.augment_scaling,
                max_intensity=config.augment_intensity,
                per_sequence=config.augment_per_sequence,
                scanner=config.augment_scanner,
                enhancement=config.augment_enhancement,
                thick_slices=config.augment_thick_slices,
            )
            if config.augment or config.modality_dropout
            else None
        )
        self.workers = worker_count(config.workers, world, device)
        # patches oversample tumor themselves; slices are drawn by weight
        self.weights = (
            None if self.volumetric else tumor_weights(self.dataset.has_tumor, config.tumor_fraction)
        )
        self.samples = config.samples_per_epoch or len(self.dataset)
        self.steps_per_epoch = max(1, self.samples // world // config.batch_size)

    def loader(self, epoch: int, context: distributed.Context, device: torch.device) -> DataLoader:
        """This process's share of the epoch's slices; the augmentation reseeded for the epoch."""
        config = self.config
        if self.augmentation is not None:
            self.augmentation.reseed(distributed.seed_for(config.seed, epoch, context.rank))
        if self.volumetric:  # before the workers start, so that they inherit it
            self.dataset.seed = distributed.seed_for(config.seed, epoch)
        sampler = distributed.EpochSampler(
            len(self.dataset),
            self.samples,
            config.seed,
            epoch,
            self.weights,
            context.rank,
            context.world,
            keyed=self.volumetric,
        )
        cuda = device.type == "cuda"
        return DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=cuda,
            prefetch_factor=4 if cuda and self.workers else None,
            drop_last=len(sampler) > config.batch_size,
        )
