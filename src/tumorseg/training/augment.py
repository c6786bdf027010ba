"""Augmentation of whole batches on the device that trains.

DataLoader workers only read and crop; each batch is then flipped, rotated and scaled (one
``affine_grid`` + ``grid_sample`` for the samples that draw an affine, bilinear for images and
nearest for labels), given another strength of contrast enhancement (``enhancement``) and what
another scanner would change (``thick_slices`` along one axis; ``scanner``: gamma, a bias field,
blur, noise), its intensities scaled and shifted, and its sequences dropped, all at once.
Per-sample parameters are drawn on the CPU from a seeded ``torch.Generator``, so a batch is
augmented the same on any device, with any number of workers, and a resumed epoch repeats exactly;
they reach the device by non-blocking copies, so augmenting never waits for the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from tumorseg.data.case import MODALITIES


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
        scanner: bool = False,
        enhancement: bool = False,
        thick_slices: bool = False,
    ):
        self.spatial, self.modality_dropout, self.modalities = spatial, modality_dropout, modalities
        self.per_sequence, self.scanner, self.enhancement = per_sequence, scanner, enhancement
        self.thick = thick_slices
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
            if self.enhancement:
                image = self.enhancement_strength(image)
            if self.thick:
                image = self.thick_slices(image)
            if self.scanner:
                image = self.scanner_effects(image)
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

    def scanner_effects(self, image: torch.Tensor) -> torch.Tensor:
        """What differs between scanners and protocols, each drawn per sequence with probability
        ``SCANNER_PROBABILITY``: a gamma (0.67 to 1.5), a smooth multiplicative bias field (up to
        +-30 %), an in-plane blur of its own width along each axis (sigma 0.3 to 1.5 voxels: one more
        interpolation, or thick slices resampled), and noise (up to 5 % of the brain's range).
        They act on intensities mapped to [0, 1] over the brain, which is then z-scored again, as
        the images of another scanner would be when read; outside the brain stays 0."""
        batch, n = len(image), self.modalities
        draws = [self._uniform(batch, n) < SCANNER_PROBABILITY for _ in range(4)]
        gamma = torch.exp(self._uniform(batch, n, low=-math.log(1.5), high=math.log(1.5)))
        bias = self._uniform(batch, n, low=0.0, high=0.3)
        coarse = self._uniform(batch, n, 3, 3, low=-1.0, high=1.0)
        sigma = self._uniform(batch, n, 2, low=0.3, high=1.5)
        noise = self._uniform(batch, n, low=0.0, high=0.05)
        seeds = torch.randint(2**62, (1,), generator=self.generator)
        touched = torch.stack(draws).any(dim=0)
        if not touched.any():
            return image
        brain = (image != 0).any(dim=1, keepdim=True)
        spatial = tuple(range(2, image.ndim))
        low = torch.where(brain, image, torch.inf).amin(dim=spatial, keepdim=True)
        high = torch.where(brain, image, -torch.inf).amax(dim=spatial, keepdim=True)
        scale = (high - low).clamp_min(1e-6)
        u = ((image - low) / scale).clamp(0, 1) * brain  # outside 0, as a scan's background is
        on = lambda k: per_channel(draws[k].to(torch.float64), image) > 0  # noqa: E731
        u = torch.where(on(0), u ** per_channel(gamma, image), u)
        field = F.interpolate(on_channels(coarse, image.shape[1]).to(image.device, image.dtype),
                              size=image.shape[-2:], mode="bilinear", align_corners=True)  # fmt: skip
        field = field.view(*field.shape[:2], *(1,) * (image.ndim - 4), *field.shape[-2:])
        u = torch.where(on(1), u * (1 + per_channel(bias, image) * field), u)
        u = torch.where(on(2), blur(u, on_channels(sigma, image.shape[1])), u)
        shake = torch.randn(u.shape, generator=torch.Generator().manual_seed(int(seeds)), dtype=torch.float32)
        u = torch.where(on(3), u + per_channel(noise, image) * shake.to(u.device, u.dtype), u)
        u = u * brain
        # z-scored again over the brain, as a scan of another scanner is read
        mean, std = brain_moments(u, brain)
        renormalized = (u - mean) / std * brain
        return torch.where(per_channel(touched.to(torch.float64), image) > 0, renormalized, image)

    def enhancement_strength(self, image: torch.Tensor) -> torch.Tensor:
        """A weaker or stronger contrast enhancement (another dose, or another delay after the
        injection), drawn per sample with probability ``SCANNER_PROBABILITY``: where the T1ce is
        brighter than the T1 (both z-scores), that excess is multiplied by a factor of
        ``ENHANCEMENT_RANGE``, and the slice keeps its T1ce's mean and spread over the brain. Uses no
        label, so enhancing tumor, vessels and dura change alike; a sample whose T1 is blank is left
        as is. Needs the four sequences in ``MODALITIES`` order (a 2.5D input: each neighbouring slice)."""
        batch = len(image)
        drawn = self._uniform(batch) < SCANNER_PROBABILITY
        factor = self._uniform(batch, low=ENHANCEMENT_RANGE[0], high=ENHANCEMENT_RANGE[1])
        t1, t1ce = MODALITIES.index("t1"), MODALITIES.index("t1ce")
        if self.modalities != len(MODALITIES) or not drawn.any():
            return image
        brain = (image != 0).any(dim=1, keepdim=True)
        plain, enhanced = image[:, t1 :: self.modalities], image[:, t1ce :: self.modalities]
        has_t1 = (plain != 0).flatten(1).any(dim=1) & drawn.to(image.device)
        if not has_t1.any():
            return image
        scale = (factor.to(image.device, image.dtype) - 1).view(-1, *(1,) * (image.ndim - 1))
        changed = (enhanced + scale * (enhanced - plain).clamp_min(0)) * brain
        # back to the slice's own mean and spread over the brain: its z-scores came from the
        # whole volume, which one more enhanced region hardly moves
        before, after = brain_moments(enhanced, brain), brain_moments(changed, brain)
        changed = ((changed - after[0]) / after[1] * before[1] + before[0]) * brain
        image = image.clone()
        image[has_t1, t1ce :: self.modalities] = changed[has_t1]
        return image

    def thick_slices(self, image: torch.Tensor) -> torch.Tensor:
        """A sequence acquired in thick slices across one in-plane axis (a sagittal or coronal
        series read on axial planes), drawn per sequence with probability ``SCANNER_PROBABILITY``:
        averaged over slabs ``THICKNESS`` voxels thick, at a random phase, along a random in-plane
        axis, then interpolated back linearly (``slab_operator``); 0 outside the brain, and each
        slice keeps its mean and spread over the brain."""
        batch, n = len(image), self.modalities
        drawn = self._uniform(batch, n) < SCANNER_PROBABILITY
        thickness = self._uniform(batch, n, low=THICKNESS[0], high=THICKNESS[1])
        phase = self._uniform(batch, n)
        rows = self._uniform(batch, n) < 0.5
        if not drawn.any():
            return image
        brain = (image != 0).any(dim=1, keepdim=True)
        changed = image.clone()
        for b, k in drawn.nonzero().tolist():
            size = image.shape[-2] if rows[b, k] else image.shape[-1]
            operator = slab_operator(size, float(thickness[b, k]), float(phase[b, k]))
            operator = operator.to(image.device, image.dtype)
            planes = changed[b, k::n]  # (context, ..., H, W): rows from the left, no axis moved
            changed[b, k::n] = operator @ planes if rows[b, k] else planes @ operator.T
        before, after = brain_moments(image, brain), brain_moments(changed * brain, brain)
        changed = ((changed - after[0]) / after[1] * before[1] + before[0]) * brain
        touched = per_channel(drawn.to(torch.float64), image) > 0
        return torch.where(touched, changed, image)

    def intensity(self, image: torch.Tensor) -> torch.Tensor:
        batch, bound = len(image), self.max_intensity
        draws = (batch, self.modalities) if self.per_sequence else (batch, 1)
        factor = torch.where(self._chance(*draws), self._uniform(*draws, low=-bound, high=bound), 0.0)
        offset = torch.where(self._chance(*draws), self._uniform(*draws, low=-bound, high=bound), 0.0)
        return torch.addcmul(per_channel(offset, image), image, per_channel(1 + factor, image))

    def drop_modalities(self, image: torch.Tensor) -> torch.Tensor:
        batch, n = len(image), self.modalities
        keep = self._uniform(batch, n) >= self.modality_dropout
        rescue = torch.randint(n, (batch,), generator=self.generator)
        none = ~keep.any(dim=1)
        keep[none, rescue[none]] = True
        return image * per_channel(keep, image)


def brain_moments(image: torch.Tensor, brain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's mean and standard deviation (at least 1e-6) over the brain (B, 1, ...)."""
    spatial = tuple(range(2, image.ndim))
    count = brain.sum(dim=spatial, keepdim=True).clamp_min(1)
    mean = (image * brain).sum(dim=spatial, keepdim=True) / count
    spread = (((image - mean) * brain) ** 2).sum(dim=spatial, keepdim=True) / count
    return mean, spread.sqrt().clamp_min(1e-6)


def on_channels(values: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, k, ...) values, one per sequence (or k = 1: one per sample), repeated over ``channels``
    channels: channel j of a 2.5D input is sequence j % k."""
    return values.repeat(1, channels // values.shape[1], *(1,) * (values.ndim - 2))


def per_channel(values: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """(B, k) values (``on_channels``) as (B, C, 1, ...), on the image's device and of its type, to
    multiply or add to it."""
    values = on_channels(values, image.shape[1]).to(image.device, image.dtype, non_blocking=True)
    return values.view(*values.shape, *(1,) * (image.ndim - 2))


#: The chance of each scanner effect, per sequence of a sample.
SCANNER_PROBABILITY = 0.25
#: The factors a T1ce's enhancement over its T1 is multiplied by (``enhancement``).
ENHANCEMENT_RANGE = (0.5, 1.5)
#: The slab thickness of ``thick_slices``, in voxels (1 mm on the BraTS grid): 2 to 5 mm slices.
THICKNESS = (2.0, 5.0)
#: Blur kernels reach this many voxels from their centre (3 sigmas of the widest).
BLUR_RADIUS = 4


def blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A Gaussian blur of each channel of (B, C, ..., H, W) in its last two axes, with its own
    sigma along each (``sigma``: (B, C, 2) in voxels); separable, one grouped convolution an axis."""
    offsets = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=image.device, dtype=image.dtype)
    sigma = sigma.to(image.device, image.dtype)
    kernels = torch.exp(-0.5 * (offsets / sigma[..., None]) ** 2)
    kernels = kernels / kernels.sum(dim=-1, keepdim=True)  # (B, C, 2, taps)
    batch, channels = image.shape[:2]
    flat = image.reshape(1, batch * channels * (image[0, 0].numel() // image.shape[-1] // image.shape[-2]),
                         *image.shape[-2:])  # fmt: skip
    groups = flat.shape[1]
    per = groups // (batch * channels)  # the planes of a 3D channel share its kernel
    rows = kernels[..., 0, :].reshape(batch * channels, 1, -1).repeat_interleave(per, dim=0)
    cols = kernels[..., 1, :].reshape(batch * channels, 1, -1).repeat_interleave(per, dim=0)
    flat = F.conv2d(flat, rows[..., :, None], padding=(BLUR_RADIUS, 0), groups=groups)
    flat = F.conv2d(flat, cols[..., None, :], padding=(0, BLUR_RADIUS), groups=groups)
    return flat.reshape(image.shape)


def slab_operator(size: int, thickness: float, phase: float) -> torch.Tensor:
    """(size, size) matrix that averages ``size`` unit voxels over slabs ``thickness`` voxels thick
    (the first starting ``phase`` of a slab before voxel 0; a slab cut by the edge averages what it
    covers) and interpolates the slabs back to the voxels linearly from their centres (constant
    beyond the outer ones). Each row sums to 1."""
    start = -phase * thickness
    edges = np.arange(start, size + thickness, thickness)
    low, high = np.clip(edges[:-1], 0, size), np.clip(edges[1:], 0, size)
    keep = high > low
    low, high = low[keep], high[keep]
    voxels = np.arange(size)
    # the share of voxel i's extent [i, i + 1) that falls in slab j, over slab j's width
    cover = np.clip(np.minimum(high[:, None], voxels + 1) - np.maximum(low[:, None], voxels), 0, None)
    average = cover / (high - low)[:, None]
    centres = (low + high) / 2
    back = np.stack([np.interp(voxels + 0.5, centres, unit) for unit in np.eye(len(centres))], axis=1)
    return torch.from_numpy(back @ average)


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
