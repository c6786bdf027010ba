"""What each epoch trains on: 2D slices of the training patients, tumor slices oversampled, and a
loader whose draw and augmentation follow from (seed, epoch) alone, so a resumed run repeats
an epoch exactly."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tumorseg.data.dataset import SliceDataset, augmentation, seed_worker, tumor_weights
from tumorseg.errors import TumorsegError
from tumorseg.training import distributed
from tumorseg.training.config import TrainConfig


class EpochData:
    def __init__(self, store_path: Path, case_ids: list[str], config: TrainConfig, world: int):
        transform = augmentation(
            config.seed, spatial=config.augment, modality_dropout=config.modality_dropout
        )
        self.dataset = SliceDataset(
            store_path, case_ids, size=tuple(config.size), transform=transform, context=config.model.context
        )
        if len(self.dataset) == 0:
            raise TumorsegError(f"{store_path}: the training patients hold no labeled slices")
        self.config = config
        self.weights = tumor_weights(self.dataset.has_tumor, config.tumor_fraction)
        self.samples = config.samples_per_epoch or len(self.dataset)
        self.steps_per_epoch = max(1, self.samples // world // config.batch_size)

    def loader(self, epoch: int, context: distributed.Context, device: torch.device) -> DataLoader:
        """This process's share of the epoch's slices, augmented from the epoch's own seed."""
        config = self.config
        epoch_seed = distributed.seed_for(config.seed, epoch)
        if self.dataset.transform is not None:
            self.dataset.transform.set_random_state(epoch_seed % 2**32)
        sampler = distributed.EpochSampler(
            len(self.dataset), self.samples, config.seed, epoch, self.weights, context.rank, context.world
        )
        return DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(epoch_seed),
            pin_memory=device.type == "cuda",
            drop_last=len(sampler) > config.batch_size,
            persistent_workers=False,
        )
