"""Pure functions that run a network over a whole volume, as nnU-Net's sliding-window prediction.

``segment`` takes a volume of z-scored slices (Z, 4, H, W), as the store and the preprocessing
give it, runs any forward function on it and returns the scores (Z, C, H, W): for a 2D network a
batch of slices at a time (``segment_volume``: each slice with its neighbours for a 2.5D network,
each batch zero-padded to the network's stride and cropped back), or only near the tumor
(``segment_coarse_to_fine``), for a 3D network patch by patch (``segment_patches``: a
Gaussian-weighted sliding window), optionally averaged over flips.

A forward function takes a batch of the network's input and returns its scores, whatever runs
the network; nothing here loads a model or knows PyTorch from ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tumorseg.data.preprocess import neighbours, with_context
from tumorseg.errors import TumorsegError
from tumorseg.geometry import box_around

if TYPE_CHECKING:
    from tumorseg.models import ModelConfig

#: Scores of a batch of the network's input (B, C, ...) -> (B, C', ...), whatever runs it.
Forward = Callable[[np.ndarray], np.ndarray]
NO_FLIPS: tuple[tuple[int, ...], ...] = ((),)
#: The four in-plane flips of test-time augmentation (the last two axes of a batch, 2D or 3D).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))
#: Predict's default: a 2D network first segments every COARSE_STEP-th slice, then only near the
#: tumor it found: the slices closer than COARSE_STEP, within the tumor's in-plane box widened by
#: FINE_MARGIN pixels (``segment_coarse_to_fine``; chosen on the 28 shared cases, see docs/results.md).
#: Evaluation segments every slice (step 1), so it reproduces the validation of training exactly.
COARSE_STEP, FINE_MARGIN = 4, 32
#: The first pass segments each slice within its brain's box (where any sequence of the slice, or
#: of a neighbour it comes with, is non-zero) widened by BRAIN_MARGIN pixels; outside is background.
BRAIN_MARGIN = 16
#: Patches per forward pass when a 3D network slides over a volume.
PATCHES_PER_FORWARD = 2
#: Overlap of neighbouring patches of the sliding window (as nnU-Net: half a patch).
PATCH_OVERLAP = 0.5


@dataclass(frozen=True)
class Search:
    """How a 2D network's volume is searched: every slice (``step`` 1), or coarse to fine
    (``segment_coarse_to_fine``): every ``step``-th slice within its brain widened by
    ``brain_margin`` pixels, then near the tumor found, within its box widened by ``margin``."""

    step: int = 1
    margin: int = FINE_MARGIN
    brain_margin: int = BRAIN_MARGIN

    def __post_init__(self) -> None:
        if self.step < 1:
            raise TumorsegError(f"--coarse-step must be at least 1, not {self.step}")


#: The search evaluation and validation use: every slice, whole.
EVERY_SLICE = Search()


def segment(
    forward: Forward,
    volume: np.ndarray,
    config: ModelConfig,
    batch_size: int,
    flips: tuple[tuple[int, ...], ...] = NO_FLIPS,
    search: Search = EVERY_SLICE,
    tumor: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Scores (Z, C, H, W) of the network ``config`` describes over a volume (Z, 4, H, W): slice by
    slice for a 2D network (``segment_volume``; with a ``search`` step above 1, only near the
    ``tumor`` found on every step-th slice: ``segment_coarse_to_fine``), patch by patch for a 3D
    one (``segment_patches``)."""
    if config.dims == 3:
        return segment_patches(forward, volume, patch=config.patch, flips=flips)
    options = {"batch_size": batch_size, "multiple": config.stride, "flips": flips, "context": config.context}
    if search.step > 1 and tumor is not None:
        return segment_coarse_to_fine(
            forward,
            volume,
            step=search.step,
            tumor=tumor,
            margin=search.margin,
            brain_margin=search.brain_margin,
            background=config.target_spec().background,
            **options,
        )
    return segment_volume(forward, volume, **options)


def flip_averaged(forward: Forward, batch: np.ndarray, flips: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """The scores of ``batch``, averaged over its ``flips`` (each flipped back)."""
    if flips == NO_FLIPS:
        return forward(batch)
    total: np.ndarray | float = 0.0
    for axes in flips:
        total = total + np.flip(forward(np.flip(batch, axes)), axes)
    return total / len(flips)


def zero_padded(batch: np.ndarray, multiple: int) -> np.ndarray:
    """``batch`` (B, C, ...) zero-padded at the ends of its spatial axes to multiples of ``multiple``."""
    pad = [(0, 0)] * 2 + [(0, (-side) % multiple) for side in batch.shape[2:]]
    return np.pad(batch, pad) if any(after for _, after in pad) else batch


def segment_patches(
    forward: Forward,
    volume: np.ndarray,
    *,
    patch: list[int],
    flips: tuple[tuple[int, ...], ...] = NO_FLIPS,
) -> np.ndarray:
    """Scores (Z, C, H, W) of a 3D ``forward`` over a volume (Z, 4, H, W): MONAI's sliding window
    of ``patch``-sized boxes overlapping by half, each weighted by a Gaussian centred on it (its
    rim, which saw least context, counts least); a volume smaller than the patch is zero-padded."""
    import torch  # here: MONAI's window slides over tensors
    from monai.inferers import sliding_window_inference  # here: a 2D predict never pays for importing MONAI

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(flip_averaged(forward, batch.numpy(), flips)))

    image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, 1, 0), dtype=np.float32))[None]
    scores = sliding_window_inference(
        image,
        roi_size=list(patch),
        sw_batch_size=PATCHES_PER_FORWARD,
        predictor=predictor,
        overlap=PATCH_OVERLAP,
        mode="gaussian",
    )
    return np.moveaxis(torch.as_tensor(scores)[0].numpy(), 1, 0)


def segment_volume(
    forward: Forward,
    volume: np.ndarray,
    *,
    batch_size: int,
    multiple: int,
    flips: tuple[tuple[int, ...], ...] = NO_FLIPS,
    context: int = 0,
    z: np.ndarray | None = None,
) -> np.ndarray:
    """Scores (Z, C, H, W) of ``forward`` over a volume (Z, 4, H, W) (or over its slices ``z``
    only: (len(z), C, H, W)), ``batch_size`` slices at a time.

    Each slice comes with ``context`` neighbours on either side (``with_context``); each batch is
    zero-padded to a multiple of ``multiple`` and the scores cropped back; with several
    ``flips``, the scores of each flipped batch are flipped back and averaged.
    """
    depth, _, height, width = volume.shape
    z = np.arange(depth) if z is None else z
    out: np.ndarray | None = None
    for start in range(0, len(z), batch_size):
        chunk = np.asarray(with_context(volume, context, z[start : start + batch_size]), dtype=np.float32)
        scores = flip_averaged(forward, zero_padded(chunk, multiple), flips)[..., :height, :width]
        if out is None:
            out = np.empty((len(z), *scores.shape[1:]), dtype=scores.dtype)
        out[start : start + len(chunk)] = scores
    return out


def segment_within_brain(
    forward: Forward,
    volume: np.ndarray,
    *,
    z: np.ndarray,
    background: np.ndarray,
    multiple: int,
    context: int = 0,
    brain_margin: int = BRAIN_MARGIN,
    **options: object,
) -> np.ndarray:
    """Scores (len(z), C, H, W) of ``forward`` on the slices ``z`` of a volume (Z, 4, H, W), each
    segmented alone within the box of its brain (where any sequence is non-zero, in it or in a
    neighbour it comes with), widened by ``brain_margin`` pixels and on to a multiple of
    ``multiple``; ``background`` (C,) elsewhere, and on a slice without brain.

    The network's input is zero outside the brain anyway, and a slice's brain is smaller than the
    volume's box that the crop of preprocessing keeps (on the 28 shared cases about 80 % of its
    pixels, with 16 pixels of margin; docs/results.md, "Fast by default")."""
    depth, _, height, width = volume.shape
    out = np.empty((len(z), len(background), height, width), np.float32)
    out[:] = background[:, None, None]
    for index, at in enumerate(np.asarray(z)):
        brain = (volume[neighbours(np.array([at]), depth, context)[0]] != 0).any((0, 1))
        if not brain.any():
            continue
        rows, columns = box_around(brain, brain_margin, multiple)
        scores = segment_volume(forward, volume[..., rows, columns], z=np.array([at]), multiple=multiple,
                                context=context, **options)  # fmt: skip
        out[index, :, rows, columns] = scores[0]
    return out


def segment_coarse_to_fine(
    forward: Forward,
    volume: np.ndarray,
    *,
    step: int,
    tumor: Callable[[np.ndarray], np.ndarray],
    background: np.ndarray,
    margin: int = FINE_MARGIN,
    brain_margin: int = BRAIN_MARGIN,
    **options: object,
) -> np.ndarray:
    """``segment_volume`` that segments only near the tumor: every ``step``-th slice first (each
    within its brain widened by ``brain_margin`` pixels: ``segment_within_brain``, ``background``
    outside), then the slices closer than ``step`` to one where ``tumor`` (scores -> tumor mask)
    finds some, within the in-plane box of all tumor found, widened by ``margin`` pixels.

    Everything else takes the scores of the nearest slice of the first pass, which decode to no
    tumor there: a skipped slice lies between two tumor-free ones, and outside the box no slice of
    the first pass found tumor. Only a tumor thinner than ``step`` slices lying wholly between two
    tumor-free ones can be missed."""
    depth = len(volume)
    coarse = np.unique(np.r_[np.arange(0, depth, step), depth - 1])
    scores = segment_within_brain(
        forward, volume, z=coarse, background=background, brain_margin=brain_margin, **options
    )
    out = scores[np.abs(np.arange(depth)[:, None] - coarse[None]).argmin(1)]
    mask = tumor(scores)
    near = np.zeros(depth, bool)
    for z in coarse[mask.any((1, 2))]:
        near[max(z - step + 1, 0) : z + step] = True
    near[coarse] = False
    if near.any():
        rows, columns = box_around(mask.any(0), margin)
        fine = np.flatnonzero(near)
        out[fine, :, rows, columns] = segment_volume(forward, volume[..., rows, columns], z=fine, **options)
    return out
