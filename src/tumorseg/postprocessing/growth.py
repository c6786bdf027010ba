"""Tumor growth: a logistic model that adds to the predicted whole tumor the voxels of its rim that
the network missed.

Where the whole tumor scores low out of fold, the network misses it rather than overdraws it: the
faint edema at the tumor's border (FLAIR z-scores around 1, against 2 in what it found and 0 in
the brain), to which it mostly gives a probability under 0.05, so no threshold recovers it. The intensities
still tell much of it apart. Within ``RIM`` voxels of the predicted tumor, each voxel is described by
``FEATURES`` (the region probabilities, the four z-scores, FLAIR, T2 and the tumor probability
smoothed at two scales, the distance to the tumor), and the voxels the model calls tumor become
edema. The model is fitted on out-of-fold predictions (``tumorseg cv --choose-postprocessing``)
and stored with the rest of the post-processing as its weights. ``grown`` is the one place that
adds the voxels: predict reaches it through ``grow``, the choice on folds through the rims it kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from tumorseg.geometry import Box, bounding_box, shifted_into, widened
from tumorseg.labels import EDEMA

#: How far (voxels, Euclidean) beyond the predicted tumor growth may add.
RIM = 4.0
#: The Gaussians' widths (voxels) of the smoothed features.
SIGMAS = (2.0, 4.0)
FEATURES = (
    "p_WT", "p_TC", "p_ET", "FLAIR", "T1", "T1ce", "T2",
    *(f"{name} smoothed {sigma:g}" for sigma in SIGMAS for name in ("FLAIR", "T2", "p_WT")),
    "distance / 10",
)  # fmt: skip
#: Weights stored: an intercept, then one per feature.
WEIGHTS = len(FEATURES) + 1
#: Of the voxels around a tumor, the box the features are computed in: the rim and the smoothing's reach.
MARGIN = int(RIM + 3 * max(SIGMAS))
#: L2 penalty on the standardized weights: keeps the fit unique when a feature is constant.
PENALTY = 1e-4


def rim_features(
    tumor: np.ndarray, regions: np.ndarray, volume: np.ndarray
) -> tuple[Box, np.ndarray, np.ndarray]:
    """The voxels growth may add and what describes them: the box (of ``tumor``'s shape) that holds
    them, their mask within it, and their features (N, ``len(FEATURES)``) float32. ``tumor``
    (Z, H, W) is the predicted whole tumor, ``regions`` (Z, 3, H, W) the WT / TC / ET probabilities,
    ``volume`` (Z, 4, H, W) the z-scored sequences."""
    found = bounding_box(tumor)
    if found is None:
        nothing = tuple(slice(0, 0) for _ in tumor.shape)
        return nothing, np.zeros((0,) * tumor.ndim, bool), np.zeros((0, len(FEATURES)), np.float32)
    box, wide = (widened(found, tumor.shape, margin) for margin in (int(np.ceil(RIM)), MARGIN))
    inner = shifted_into(box, wide)
    regions = regions[(wide[0], slice(None), *wide[1:])].astype(np.float32)
    volume = volume[(wide[0], slice(None), *wide[1:])].astype(np.float32)
    distance = ndimage.distance_transform_edt(~tumor[box])  # exact: the box holds the whole tumor
    maps = [*regions.transpose(1, 0, 2, 3), *volume.transpose(1, 0, 2, 3)]
    maps = [image[inner] for image in maps]
    for sigma in SIGMAS:  # over the wider box, so that the rim's values see all they weigh
        maps += [smoothed(image, sigma, inner) for image in (volume[:, 0], volume[:, 3], regions[:, 0])]
    rim = (distance > 0) & (distance <= RIM) & np.any([image != 0 for image in maps[3:7]], axis=0)
    maps.append(distance / 10)
    return box, rim, np.stack([image[rim] for image in maps], axis=1).astype(np.float32)


def smoothed(image: np.ndarray, sigma: float, inner: tuple[slice, ...]) -> np.ndarray:
    """``ndimage.gaussian_filter(image, sigma)[inner]``, axis by axis, each cropped to ``inner`` once
    it is smoothed: the same values, for a fraction of the work."""
    for axis, piece in enumerate(inner):
        image = ndimage.gaussian_filter1d(image, sigma, axis=axis)
        image = image[(slice(None),) * axis + (piece,)]
    return image


def grow(
    classes: np.ndarray, regions: np.ndarray, volume: np.ndarray, weights: Sequence[float]
) -> np.ndarray:
    """``classes`` (Z, H, W) grown by the model ``weights`` into the rim of its tumor (``grown``),
    described by ``regions`` (Z, 3, H, W) and ``volume`` (Z, 4, H, W) as in ``rim_features``."""
    return grown(classes, *rim_features(classes > 0, regions, volume), weights)


def grown(
    classes: np.ndarray, box: Box, rim: np.ndarray, features: np.ndarray, weights: Sequence[float]
) -> np.ndarray:
    """``classes`` with the voxels of the ``rim`` (a mask of ``classes[box]``, its voxels described
    by ``features``) that the model ``weights`` calls tumor set to edema: a new array, or
    ``classes`` itself if none is."""
    tumor = is_tumor(features, weights)
    if not tumor.any():
        return classes
    out = classes.copy()
    added = np.zeros_like(rim)
    added[rim] = tumor
    out[box][added] = EDEMA
    return out


def is_tumor(features: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Which rim voxels (rows of ``features``) the model ``weights`` calls tumor."""
    weights = np.asarray(weights, np.float32)
    return features @ weights[1:] + weights[0] > 0


def fit(samples: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """The weights of a logistic model fitted on ``samples``: per patient, its rim voxels' features
    (N, F) and whether each is tumor in the reference (N,). Every patient weighs the same, however
    large its rim; the fit (L-BFGS on standardized features) is deterministic."""
    samples = [(x, y) for x, y in samples if len(x)]
    if not samples:
        return []
    x = np.concatenate([x for x, _ in samples]).astype(np.float64)
    y = np.concatenate([y for _, y in samples]).astype(np.float64)
    each = np.concatenate([np.full(len(x_), 1 / len(x_)) for x_, _ in samples]) / len(samples)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = np.hstack([np.ones((len(x), 1)), (x - mean) / std])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        p = 1 / (1 + np.exp(-z))
        value = np.sum(each * (np.logaddexp(0, z) - y * z)) + PENALTY * w[1:] @ w[1:]
        grad = x.T @ (each * (p - y)) + 2 * PENALTY * np.r_[0, w[1:]]
        return float(value), grad

    from scipy import optimize  # here: importing it takes longer than predict's growth of a patient

    w = optimize.minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B").x
    slopes = w[1:] / std  # back to the features as they come
    return [float(w[0] - slopes @ mean), *map(float, slopes)]
