"""The post-processing rule of a model: what it does to a decoded label map, applied here only.

First, if fitted, tumor growth (``growth``): the whole tumor's rim voxels that a logistic
model of intensities and probabilities calls tumor become edema. Then three rules, each off at 0;
the volumes in mL, so that they mean the same at any voxel size:

- ``min_island_ml``: tumor components (26-connected) smaller than this become background,
  except the largest one. A 2D network segments slice by slice and leaves false-positive
  islands far from the tumor, which dominate HD95.
- ``min_core_probability``: tumor-core components (26-connected), except the largest, whose mean
  core probability is below this become edema. The island rule cannot reach a false piece of
  core inside the edema, and a size cannot tell it from a true one (many cores are in pieces),
  while the probability the model gives the piece tells some apart (docs/results.md, "The core rule").
- ``min_et_ml``: a patient whose enhancing tumor is smaller than this in total has it relabeled
  necrosis (the BraTS rule: many low-grade gliomas have no enhancing tumor, and a few predicted
  voxels then score ET Dice 0 instead of 1).

The growth's weights are fitted and the thresholds picked on out-of-fold predictions (``choice``,
by ``tumorseg cv --choose-postprocessing``) and stored in the model file (``tumorseg pack``), from
which predict and evaluate read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorseg.errors import TumorsegError, first_line
from tumorseg.files import load_json
from tumorseg.geometry import bounding_box
from tumorseg.labels import BACKGROUND, EDEMA, ENHANCING, NECROSIS
from tumorseg.postprocessing import growth


@dataclass(frozen=True)
class PostProcessing:
    min_island_ml: float = 0.0
    min_core_probability: float = 0.0
    min_et_ml: float = 0.0
    tumor_growth: tuple[float, ...] = ()  # the growth model's weights; none: off

    @classmethod
    def from_mapping(cls, mapping: object, where: str) -> PostProcessing:
        if not isinstance(mapping, dict) or set(mapping) - set(cls.__dataclass_fields__):
            raise TumorsegError(
                f"{where}: post-processing must map min_island_ml, min_core_probability and min_et_ml "
                "to numbers (and tumor_growth to a list of weights)"
            )
        values: dict = {}
        for key, value in mapping.items():
            if key == "tumor_growth":
                values[key] = growth_weights(value, where)
                continue
            probability = key == "min_core_probability"
            top, what = (1, "a probability in [0, 1)") if probability else (1e6, "a volume in mL >= 0")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < top:
                raise TumorsegError(f"{where}: post-processing {key} must be {what}")
            values[key] = float(value)
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path) -> PostProcessing:
        """A rule saved as JSON (``tumorseg cv --choose-postprocessing`` writes one)."""
        try:
            mapping = load_json(path)
        except (OSError, ValueError) as err:
            raise TumorsegError(f"{path}: not a readable post-processing file ({first_line(err)})") from err
        return cls.from_mapping(mapping, str(path))

    def to_dict(self) -> dict:
        return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}

    def __str__(self) -> str:
        rules = []
        if self.tumor_growth:
            rules.append(f"tumor grown into its {growth.RIM:g}-voxel rim")
        if self.min_island_ml:
            rules.append(f"tumor islands < {self.min_island_ml:g} mL removed")
        if self.min_core_probability:
            rules.append(f"core pieces of mean probability < {self.min_core_probability:g} to edema")
        if self.min_et_ml:
            rules.append(f"enhancing tumor < {self.min_et_ml:g} mL relabeled necrosis")
        return "; ".join(rules) or "none"

    def apply(
        self,
        classes: np.ndarray,
        voxel_ml: float,
        core_probability: np.ndarray | None = None,
        evidence: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``classes`` (internal, any shape) with the rules applied: a new array, or the same if none
        applies. ``core_probability`` (the shape of ``classes``) is needed by the core rule only,
        ``evidence`` by growth only: the region probabilities (Z, 3, H, W) and the z-scored
        sequences (Z, 4, H, W) that ``classes`` (Z, H, W) was decoded from."""
        out = classes
        if self.tumor_growth:
            if evidence is None:
                raise ValueError("tumor growth needs the region probabilities and the sequences")
            out = growth.grow(out, *evidence, self.tumor_growth)
        if self.min_island_ml:
            out = relabel_pieces(
                out, out > 0, BACKGROUND, lambda sizes, _: sizes * voxel_ml < self.min_island_ml
            )
        if self.min_core_probability:
            if core_probability is None:
                raise ValueError("the core rule needs the core probabilities")
            core = (out == NECROSIS) | (out == ENHANCING)
            mean_below = lambda sizes, sums: sums / np.maximum(sizes, 1) < self.min_core_probability  # noqa: E731
            out = relabel_pieces(out, core, EDEMA, mean_below, core_probability)
        et = out == ENHANCING
        if self.min_et_ml and 0 < np.count_nonzero(et) * voxel_ml < self.min_et_ml:
            out = out.copy()
            out[et] = NECROSIS
        return out


def growth_weights(value: object, where: str) -> tuple[float, ...]:
    """A stored growth model: ``growth.WEIGHTS`` finite numbers, or none (off)."""
    if (
        not isinstance(value, list)
        or len(value) not in (0, growth.WEIGHTS)
        or not all(isinstance(w, int | float) and not isinstance(w, bool) and np.isfinite(w) for w in value)
    ):
        raise TumorsegError(f"{where}: post-processing tumor_growth must be {growth.WEIGHTS} finite numbers")
    return tuple(float(w) for w in value)


def relabel_pieces(
    classes: np.ndarray,
    mask: np.ndarray,
    value: int,
    drop: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """``classes`` with the pieces of ``mask`` (26-connected) that ``drop`` picks, never the
    largest, set to ``value``: a new array, or ``classes`` itself if none is picked. ``drop`` maps
    the pieces' sizes in voxels and, given ``weights`` (the shape of ``classes``), the sums of the
    weights over each piece, to a boolean per piece (index 0, outside every piece, is ignored).
    Labeled within ``mask``'s box, often a small part of the volume."""
    box = bounding_box(mask)
    if box is None:
        return classes
    components, count = ndimage.label(mask[box], structure=np.ones((3,) * mask.ndim))
    if count < 2:
        return classes
    sizes = np.bincount(components.ravel())
    sums = None if weights is None else np.bincount(components.ravel(), weights=weights[box].ravel())
    picked = np.asarray(drop(sizes, sums), bool)
    picked[0] = False
    picked[sizes[1:].argmax() + 1] = False
    if not picked.any():
        return classes
    out = classes.copy()
    out[box][picked[components]] = value
    return out
