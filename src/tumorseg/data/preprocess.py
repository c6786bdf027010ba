"""Preprocessing shared by ``prepare`` (training data) and ``predict`` (new patients).

One case in memory becomes what a network reads, in five steps:

1. **orientation**: the arrays are turned to the axis order and directions of the BraTS files
   (LPS), so that every stored slice is axial and seen the same way, whatever the source;
2. **crop** to the brain: the bounding box of voxels non-zero in any modality or labeled;
3. **resampling** (prediction only, when asked): the crop is resampled (linearly) to the voxel
   size a model was trained on, when the case's differs by more than 1 %;
4. **int16**: intensities kept exactly when they are int16-exact (BraTS files are), else
   scaled to fit, the factor recorded;
5. **z-score statistics** per modality over the brain (non-zero voxels), applied when read.

``Preprocessed.to_source_spacing`` undoes step 3 and ``Preprocessed.restore`` steps 1-2 for a
network's output, putting it back on the source's own grid. ``with_context`` gives a 2.5D
network each slice with its neighbours, for training and inference alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from nibabel import orientations
from scipy import ndimage

from tumorseg.data.case import MODALITIES, Case, check_grid, voxel_spacing
from tumorseg.errors import TumorsegError
from tumorseg.geometry import bounding_box, voxel_ml
from tumorseg.labels import NUM_CLASSES

#: Axis codes of the BraTS files, and so of the slices the models learn from.
TRAINING_AXES = ("L", "P", "S")
#: The orientation transform (nibabel's) that leaves each axis where and as it is.
UNCHANGED = np.array([[0, 1], [1, 1], [2, 1]])
INT16_MAX = np.iinfo(np.int16).max
#: Voxel sizes closer than this (relative) count as the same: no resampling.
SPACING_TOLERANCE = 0.01
#: The least share of a sequence's voxels that must be 0. Skull-stripped images (BraTS
#: preprocessing) are 0 outside the brain: 80 % and more of the shared cases' volumes, and over
#: 40 % of the tightest box around a brain. Less, and the image is not skull-stripped or its
#: background is not 0; the brain is then everything and the z-scores meaningless (one shared
#: case shifted by -500 came out as 913 mL of tumor).
MIN_BACKGROUND = 0.05
#: The most mL a skull-stripped sequence's non-zero voxels may span. Brains span 1146 to 1729 mL in
#: the shared cases; a head with its skull 6 L and more (the raw glioma scans of the project's raw
#: data: 5954 to 6417 mL; a healthy head with its neck 10.6 L), even where its air is 0 and passes
#: MIN_BACKGROUND (a T1ce whose air is 10 % zeros; a T1 FLASH, 6.5 %).
MAX_BRAIN_ML = 2500.0
#: An intensity farther than this many robust standard deviations (1.4826 x the median absolute
#: deviation of the brain's intensities) from the brain's median is no tissue but an artefact (a
#: voxel saturated at the int16 ceiling, a spike). Before anything else it takes the median of its
#: neighbours that are no outliers (``despike``), so that it neither squashes the int16 scale nor
#: sets the z-scores nor shows the network a spot. Tissue stays far inside: the 112 sequences of
#: the 28 shared patients reach at most 31.5 (enhancing tumor on T1ce).
OUTLIER_SDS = 50.0
DESPIKE_CHUNK = 65536


@dataclass
class Preprocessed:
    """A case as the store holds it and the networks read it.

    ``image`` is (Z, 4, H, W) int16 and ``label`` (Z, H, W) internal classes (or None): Z, H, W
    run along the reoriented grid's axes 3, 1, 2, inside ``bbox``. ``affine`` and ``shape`` are
    those of the whole reoriented grid; ``source_orientation`` is the source's (nibabel ornt).
    When the crop was resampled, ``resampled_to`` is the voxel size of ``image`` (X, Y, Z mm).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    shape: tuple[int, int, int]
    bbox: np.ndarray
    intensity_scale: np.ndarray
    norm_mean: np.ndarray
    norm_std: np.ndarray
    source_orientation: np.ndarray
    sources: list[str]
    label_convention: str = "brats"
    absent: tuple[str, ...] = ()  # sequences not acquired: zero channels, z-scored to zero
    resampled_to: tuple[float, float, float] | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the reoriented grid's axes (of the source, before any resampling)."""
        return voxel_spacing(self.affine)

    def to_source_spacing(self, stored: np.ndarray) -> np.ndarray:
        """A map on the stored axes, (Z, H, W) or (Z, C, H, W), from the resampled crop back onto the
        crop at the source's voxel size: linear for real values, nearest for integer labels."""
        if self.resampled_to is None:
            return stored
        (x0, x1), (y0, y1), (z0, z1) = self.bbox
        shape = (z1 - z0, x1 - x0, y1 - y0)
        order = 1 if np.issubdtype(stored.dtype, np.floating) else 0
        if stored.ndim == 3:
            return resample(stored, shape, order)
        return np.stack([resample(stored[:, c], shape, order) for c in range(stored.shape[1])], axis=1)

    @property
    def label_counts(self) -> np.ndarray:
        """Voxels of each class in each stored slice, (Z, 4); zeros when unlabeled."""
        counts = np.zeros((self.image.shape[0], NUM_CLASSES), dtype=np.int64)
        if self.label is None:
            return counts
        flat = self.label.reshape(self.label.shape[0], -1).astype(np.int64)
        flat += np.arange(self.label.shape[0])[:, None] * NUM_CLASSES
        return np.bincount(flat.ravel(), minlength=counts.size).reshape(counts.shape)

    def normalized(self) -> np.ndarray:
        """The image as z-scores (Z, 4, H, W) float32, as the store returns it."""
        return normalize(self.image, *zscore_coefficients(self.norm_mean, self.norm_std))

    def restore(self, stored: np.ndarray) -> np.ndarray:
        """A map on the stored axes, (Z, H, W) or (Z, C, H, W), back on the source's grid:
        (X, Y, Z) or (X, Y, Z, C), zero outside the crop, in the source's array order."""
        extra = stored.ndim - 3
        grid = np.moveaxis(stored, [0, *range(1, 1 + extra)], [2, *range(3, 3 + extra)])
        full = np.zeros((*self.shape, *grid.shape[3:]), dtype=stored.dtype)
        full[tuple(slice(a, b) for a, b in self.bbox)] = grid
        back = orientations.ornt_transform(orientations.axcodes2ornt(TRAINING_AXES), self.source_orientation)
        return orientations.apply_orientation(full, back)


def training_orientation(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform from an affine's array axes to TRAINING_AXES."""
    return orientations.ornt_transform(
        orientations.io_orientation(affine), orientations.axcodes2ornt(TRAINING_AXES)
    )


def to_training_axes(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """An array on the grid of ``affine`` (any extra trailing axes kept), turned to TRAINING_AXES."""
    return orientations.apply_orientation(array, training_orientation(affine))


def reorient(case: Case) -> Case:
    """The case with its arrays and affine turned to TRAINING_AXES (the same voxels in space); the
    case itself when it lies so already (as BraTS cases do: no copy)."""
    transform = training_orientation(case.affine)
    if np.array_equal(transform, UNCHANGED):
        return case
    shape = case.image.shape[1:]
    image = np.stack([orientations.apply_orientation(volume, transform) for volume in case.image])
    label = None if case.label is None else orientations.apply_orientation(case.label, transform)
    affine = case.affine @ orientations.inv_ornt_aff(transform, shape)
    return Case(case.case_id, image, label, affine, case.sources, case.label_convention, case.absent)


def robust_spread(brain: np.ndarray) -> tuple[float, float]:
    """The median of brain intensities and their robust standard deviation (1.4826 x the median
    absolute deviation), from every 8th voxel (as exact as all of them, to well under 1 %)."""
    sample = brain[::8].astype(np.float64)
    median = float(np.median(sample))
    return median, 1.4826 * float(np.median(np.abs(sample - median)))


def despike(volume: np.ndarray) -> np.ndarray:
    """``volume`` with each non-zero intensity farther than OUTLIER_SDS robust standard deviations
    from the brain's median replaced by the median of its (up to 26) neighbours that are none, or,
    inside a patch of outliers, clipped to the bound it passed; the very array when none is."""
    inside = volume != 0
    brain = volume[inside]
    if brain.size < 2:
        return volume
    median, sd = robust_spread(brain)
    low, high = median - OUTLIER_SDS * sd, median + OUTLIER_SDS * sd
    if sd == 0 or (brain.min() >= low and brain.max() <= high):
        return volume
    integer = np.issubdtype(volume.dtype, np.integer)
    if integer:
        low, high = np.ceil(low), np.floor(high)
    outlier = inside & ((volume < low) | (volume > high))
    at = np.argwhere(outlier)  # (N, 3)
    replaced = np.clip(volume[outlier].astype(np.float64), low, high)
    offsets = np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3)
    for start in range(0, len(at), DESPIKE_CHUNK):  # a bounded memory, however many outliers
        around = at[start : start + DESPIKE_CHUNK, None, :] + offsets[None]  # (n, 27, 3)
        where = tuple(np.moveaxis(np.clip(around, 0, np.array(volume.shape) - 1), -1, 0))
        values = volume[where].astype(np.float64)
        usable = ~outlier[where] & (values != 0)
        rows = usable.any(axis=1)
        medians = np.nanmedian(np.where(usable[rows], values[rows], np.nan), axis=1)
        replaced[start : start + len(around)][rows] = medians
    out = volume.copy()
    out[outlier] = np.round(replaced) if integer else replaced
    return out


def to_int16(volume: np.ndarray) -> tuple[np.ndarray, float]:
    """Intensities as int16: exactly when they are int16-exact, else scaled to fit (and the scale)."""
    lo, hi = volume.min(), volume.max()
    exact = np.issubdtype(volume.dtype, np.integer) or np.array_equal(volume, np.round(volume))
    if exact and lo >= -INT16_MAX - 1 and hi <= INT16_MAX:
        return volume.astype(np.int16), 1.0
    scale = INT16_MAX / float(max(abs(lo), abs(hi)))
    return np.round(volume.astype(np.float64) * scale).astype(np.int16), scale


def resample(volume: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """``volume`` resampled onto ``shape`` voxels spanning the same extent (voxels as boxes, edges
    aligned), by linear (order 1) or nearest (order 0) interpolation."""
    factors = [new / old for new, old in zip(shape, volume.shape, strict=True)]
    values = volume.astype(np.float32) if order else volume
    out = ndimage.zoom(values, factors, order=order, mode="nearest", grid_mode=True)
    return out.astype(volume.dtype) if not order else out


def differs(spacing: tuple[float, ...], target: tuple[float, ...] | list[float]) -> bool:
    """Whether two voxel sizes differ by more than SPACING_TOLERANCE on any axis."""
    return not np.allclose(spacing, target, rtol=SPACING_TOLERANCE, atol=0)


def not_stripped(voxels: np.ndarray, affine: np.ndarray) -> str | None:
    """Why a sequence is not skull-stripped with a background of 0 (MIN_BACKGROUND, MAX_BRAIN_ML),
    or None when it may be."""
    nonzero = np.count_nonzero(voxels)
    zero = 1 - nonzero / voxels.size
    if zero < MIN_BACKGROUND:
        return f"{zero:.1%} of its voxels are 0"
    spanned = nonzero * voxel_ml(affine)
    if spanned > MAX_BRAIN_ML:
        return f"its non-zero voxels span {spanned:.0f} mL, more than a brain ({MAX_BRAIN_ML:.0f})"
    return None


def check_background(case: Case) -> None:
    """Refuse a case whose sequences are not skull-stripped with a background of 0 (``not_stripped``)."""
    for index, modality in enumerate(MODALITIES):
        if modality in case.absent:
            continue
        why = not_stripped(case.image[index], case.affine)
        if why:
            raise TumorsegError(
                f"{case.source(modality)}: {why}; tumorseg expects skull-stripped images whose "
                "background is 0 (BraTS preprocessing), which predict --preprocess raw runs"
            )


def preprocess(case: Case, spacing: tuple[float, float, float] | list[float] | None = None) -> Preprocessed:
    """Orient, crop to the brain, (resample to ``spacing``), make int16, and compute the z-score
    statistics of each modality.

    The crop keeps every voxel that is non-zero in any modality or labeled as tumor, so nothing
    but background is ever cut away. Only an unlabeled case is resampled.
    """
    where = case.sources[0] if case.sources else case.case_id
    source_orientation = orientations.io_orientation(case.affine)
    case = reorient(case)
    keep = (case.image != 0).any(axis=0)
    if not keep.any():
        raise TumorsegError(f"{where}: every voxel of every modality is zero")
    if case.label is not None:
        keep |= case.label > 0
    crop = bounding_box(keep)
    bbox = np.array([[piece.start, piece.stop] for piece in crop], dtype=np.int64)
    volumes = [volume[crop] for volume in case.image]
    resampled_to = None
    if spacing is not None and differs(case.spacing, spacing):
        if case.label is not None:
            raise TumorsegError(f"{where}: a labeled case is not resampled")
        resampled_to = tuple(float(s) for s in spacing)
        sides = zip(volumes[0].shape, case.spacing, spacing, strict=True)
        shape = tuple(max(1, round(n * old / new)) for n, old, new in sides)
        mm = " x ".join(f"{s:g}" for s in resampled_to)  # 20 mm voxels resampled to 1 mm are 8,000
        check_grid(shape, where, f"resampled to the model's {mm} mm voxels, makes")
        volumes = [resample(volume, shape, order=1) for volume in volumes]
    stored, scales, means, stds = [], [], [], []
    for modality, volume in zip(MODALITIES, volumes, strict=True):
        values, scale = to_int16(despike(volume))
        brain = values[values != 0].astype(np.float64)
        if modality in case.absent:
            brain = np.array([-1.0, 1.0])  # statistics that leave the zero channel at zero
        elif brain.size < 2 or brain.std() == 0:
            raise TumorsegError(f"{case.source(modality)}: modality {modality} is empty or constant")
        stored.append(values)
        scales.append(scale)
        means.append(brain.mean())
        stds.append(brain.std())
    label = None if case.label is None else np.ascontiguousarray(np.moveaxis(case.label[crop], 2, 0))
    return Preprocessed(
        case_id=case.case_id,
        image=np.ascontiguousarray(np.moveaxis(np.stack(stored), 3, 0)),  # (Z, 4, H, W)
        label=label,
        affine=np.asarray(case.affine, dtype=np.float64),
        shape=tuple(int(n) for n in case.image.shape[1:]),
        bbox=bbox,
        intensity_scale=np.asarray(scales),
        norm_mean=np.asarray(means),
        norm_std=np.asarray(stds),
        source_orientation=source_orientation,
        sources=list(case.sources),
        label_convention=case.label_convention,
        absent=tuple(case.absent),
        resampled_to=resampled_to,
    )


def zscore_coefficients(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per modality, shaped to broadcast over axis -3: z = v * scale + offset."""
    scale = (1 / np.asarray(std, dtype=np.float64)).astype(np.float32).reshape(-1, 1, 1)
    offset = (-np.asarray(mean, dtype=np.float64) / std).astype(np.float32).reshape(-1, 1, 1)
    return scale, offset


def normalize(stored: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """z-score each modality (axis -3) of stored intensities; zero (outside the brain) stays zero."""
    out = stored * scale
    out += offset
    out *= stored != 0
    return out


def neighbours(z: np.ndarray, depth: int, context: int) -> np.ndarray:
    """The slices (len(z), 2 * context + 1) around each of ``z`` in a volume of ``depth`` slices,
    lowest first; beyond either end the end slice repeats."""
    return np.clip(np.asarray(z)[:, None] + np.arange(-context, context + 1), 0, depth - 1)


def with_context(volume: np.ndarray, context: int, z: np.ndarray | None = None) -> np.ndarray:
    """Slices ``z`` (default all) of a volume (Z, C, H, W), each with its ``context`` neighbours on
    either side as extra channels: (len(z), (2 * context + 1) * C, H, W), neighbour-major, so
    that channel k holds modality k % C."""
    z = np.arange(len(volume)) if z is None else np.asarray(z)
    if context == 0:
        return volume[z]
    stacked = volume[neighbours(z, len(volume), context)]  # (len(z), 2N + 1, C, H, W)
    return stacked.reshape(len(z), -1, *volume.shape[2:])


#: An array or a tensor: ``narrowed`` slices either alike.
Stack = TypeVar("Stack")


def narrowed(slices: Stack, context: int, channels: int = len(MODALITIES)) -> Stack:
    """Slices stacked by ``with_context`` (B, (2N + 1) * channels, H, W), with any N, cut to
    ``context`` neighbours on either side: the middle channels. An ensemble of networks that
    learned from different contexts gets one stack, the widest, and each its own part of it."""
    have = (slices.shape[1] // channels - 1) // 2
    if context > have:
        raise ValueError(f"slices hold {have} neighbours a side, not {context}")
    return slices[:, (have - context) * channels : (have + context + 1) * channels]
