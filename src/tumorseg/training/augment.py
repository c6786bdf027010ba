"""Augmentation of whole batches on the device that trains.

DataLoader workers only read and crop; each batch is then flipped, rotated and scaled (one
``affine_grid`` + ``grid_sample`` for the samples that draw an affine, bilinear for images and
nearest for labels), its intensities scaled and shifted, and its sequences dropped, all at once.
Per-sample parameters are drawn on the CPU from a seeded ``torch.Generator``, so a batch is
augmented the same on any device, with any number of workers, and a resumed epoch repeats exactly;
they reach the device by non-blocking copies, so augmenting never waits for the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class BatchAugmentation:
    """Random flips (each spatial axis), a rotation in the axial plane and per-axis scaling,
    intensity scale and shift (one factor and one offset per sample, or per sequence of a sample
    with ``per_sequence``, as contrasts differ between scanners), then modality dropout (last, so
    that no intensity shift revives a zeroed sequence).

    ``spatial=False`` keeps only the dropout; ``modality_dropout`` p zeroes each of ``modalities``
    sequences with probability p, never all of them, in every neighbouring slice of a 2.5D input
    (channel k is sequence k % modalities): how an absent sequence reaches the network at inference.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        spatial: bool = True,
        modality_dropout: float = 0.0,
        modalities: int = 4,
        probability: float = 0.5,
        max_degrees: float = 15.0,
        max_scaling: float = 0.1,
        max_intensity: float = 0.1,
        per_sequence: bool = False,
    ):
        self.spatial, self.modality_dropout, self.modalities = spatial, modality_dropout, modalities
        self.per_sequence = per_sequence
        self.probability, self.max_degrees = probability, max_degrees
        self.max_scaling, self.max_intensity = max_scaling, max_intensity
        self.generator = torch.Generator()
        self.reseed(seed)

    def reseed(self, seed: int) -> BatchAugmentation:
        self.generator.manual_seed(seed % 2**63)
        return self

    def _uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=self.generator, dtype=torch.float64)

    def _chance(self, *shape: int) -> torch.Tensor:
        return self._uniform(*shape) < self.probability

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (B, C, *S) float and label (B, *S) integer, S two or three spatial axes, on any
        device -> both augmented alike (new tensors; the inputs are left as they are)."""
        if self.spatial:
            image, label = self.move(image, label)
            image = self.intensity(image)
        if self.modality_dropout > 0:
            image = self.drop_modalities(image)
        return image, label

    def move(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flip each spatial axis; rotate about the centre in the last two axes (the axial plane)
        and scale each axis, for the samples that draw it. A sample that is resampled anyway takes
        its flips into the same matrix; the others are flipped by copying."""
        batch, dims = len(image), image.ndim - 2
        flips = self._chance(batch, dims)
        affine = self._chance(batch)
        angle = self._uniform(batch, low=-1, high=1) * math.radians(self.max_degrees)
        scaling = self._uniform(batch, dims, low=1 - self.max_scaling, high=1 + self.max_scaling)
        image, label = image.clone(), label.clone()
        for pattern in flips[~affine].unique(dim=0):
            axes = pattern.nonzero()[:, 0]
            if len(axes):
                chosen = (
                    (~affine & (flips == pattern).all(dim=1))
                    .nonzero()[:, 0]
                    .to(image.device, non_blocking=True)
                )
                image[chosen] = image[chosen].flip((axes + 2).tolist())
                label[chosen] = label[chosen].flip((axes + 1).tolist())
        if not affine.any():
            return image, label
        # affine_grid's coordinates run (x, y[, z]), the last axis first, each from -1 to 1: the
        # rotation is made in voxels (half-sizes), so that it stays one on a non-square plane
        half = torch.tensor(image.shape[2:][::-1], dtype=torch.float64) / 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.eye(dims, dtype=torch.float64).repeat(batch, 1, 1)
        rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = cos, -sin, sin, cos
        mirror = torch.where(flips.flip(1), -1.0, 1.0).to(torch.float64)
        linear = (
            torch.diag(1 / half) @ rotation @ torch.diag(half) @ torch.diag_embed(scaling.flip(1) * mirror)
        )
        index = affine.nonzero()[:, 0]
        grid = sampling_grid(
            linear[index].to(image.device, torch.float32, non_blocking=True), image.shape[2:]
        )
        index = index.to(image.device, non_blocking=True)
        moved = F.grid_sample(image[index].float(), grid, "bilinear", "zeros", align_corners=False)
        image[index] = moved.to(image.dtype)
        moved = F.grid_sample(label[index, None].float(), grid, "nearest", "zeros", align_corners=False)
        label[index] = moved[:, 0].round().to(label.dtype)
        return image, label

    def intensity(self, image: torch.Tensor) -> torch.Tensor:
        batch, bound = len(image), self.max_intensity
        draws = (batch, self.modalities) if self.per_sequence else (batch, 1)
        factor = torch.where(self._chance(*draws), self._uniform(*draws, low=-bound, high=bound), 0.0)
        offset = torch.where(self._chance(*draws), self._uniform(*draws, low=-bound, high=bound), 0.0)
        shape = (batch, -1) + (1,) * (image.ndim - 2)
        # channel k of a 2.5D input is sequence k % modalities
        repeats = (1, image.shape[1] // draws[1])
        factor = (1 + factor).repeat(repeats).to(image.device, image.dtype, non_blocking=True)
        offset = offset.repeat(repeats).to(image.device, image.dtype, non_blocking=True)
        return torch.addcmul(offset.view(shape), image, factor.view(shape))

    def drop_modalities(self, image: torch.Tensor) -> torch.Tensor:
        batch, n = len(image), self.modalities
        keep = self._uniform(batch, n) >= self.modality_dropout
        rescue = torch.randint(n, (batch,), generator=self.generator)
        none = ~keep.any(dim=1)
        keep[none, rescue[none]] = True
        keep = keep.repeat(1, image.shape[1] // n).to(image.device, image.dtype, non_blocking=True)
        return image * keep.view(*keep.shape, *(1,) * (image.ndim - 2))


def sampling_grid(linear: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``F.affine_grid`` for matrices without translation (B, n, n) over a grid of ``shape`` (n axes),
    align_corners=False: each coordinate a sum of n products of a matrix entry with one axis's
    coordinates, broadcast, which is several times faster on a CPU than affine_grid's batched
    matrix product with its column of ones."""
    dims, kind = len(shape), {"device": linear.device, "dtype": linear.dtype}
    grid = torch.empty(len(linear), *shape, dims, **kind)
    # grid_sample reads coordinate 0 as the last axis (x), 1 as the one before (y), ...
    axes = []
    for position, size in enumerate(reversed(shape)):
        view = [1] * dims
        view[dims - 1 - position] = size
        axes.append(((torch.arange(size, **kind) * 2 + 1) / size - 1).view(view))
    for i in range(dims):
        terms = [linear[:, i, j].view(-1, *[1] * dims) * axis for j, axis in enumerate(axes)]
        grid[..., i] = sum(terms[1:], terms[0])
    return grid
