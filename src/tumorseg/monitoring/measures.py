"""What is measured on one visit's label map, and between two: volumes, the bidimensional product
of the largest enhancing lesion, and the change map.

Everything here is pure NumPy and SciPy on internal class maps (``tumorseg.labels``) and voxel
sizes in mm; no file is read.

**Bidimensional product** (RANO, Wen et al., J Clin Oncol 2010; unchanged in RANO 2.0, Wen et al.,
J Clin Oncol 2023): on the axial slice where the enhancing lesion is largest, its longest diameter
times the longest diameter perpendicular to it. Here the lesion is the largest connected enhancing
component (26-connected); every axial slice it crosses is measured, and the slice of the largest
product is kept, as a reader scrolls to the slice that shows the lesion largest. A diameter is the
longest chord through the voxels' squares (not their centres), so that a lesion one voxel wide
measures one voxel. A lesion is measurable when both diameters are at least 10 mm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from tumorseg.geometry import bounding_box
from tumorseg.labels import EDEMA, ENHANCING, NECROSIS, REGIONS, region_volumes, unseen_regions

#: The regions a comparison measures: the three BraTS regions and the two classes inside them.
VOLUME_REGIONS: dict[str, tuple[int, ...]] = {**REGIONS, "NCR": (NECROSIS,), "edema": (EDEMA,)}
#: The BraTS regions whose outlines make each of ``VOLUME_REGIONS``: necrosis is the core less the
#: enhancing tumor, edema the whole tumor less the core.
OUTLINED_BY: dict[str, tuple[str, ...]] = {
    **{region: (region,) for region in REGIONS},
    "NCR": ("TC", "ET"),
    "edema": ("WT", "TC"),
}
#: RANO's smallest measurable lesion: both perpendicular diameters at least this long (mm).
MEASURABLE_MM = 10.0
#: The change map's values (on the baseline's grid).
UNCHANGED, VANISHED, PERSISTING, NEW = 0, 1, 2, 3
CHANGE_NAMES = ("none", "vanished", "persisting", "new")
#: Sampling step of a chord, in voxels: a chord's length is exact to a quarter voxel.
STEP = 0.25
_CONNECTIVITY = np.ones((3, 3, 3), bool)


def volumes(classes: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Volume in mL of each of ``VOLUME_REGIONS``."""
    return region_volumes(classes, voxel_ml, VOLUME_REGIONS)


def not_shown(absent: tuple[str, ...]) -> list[str]:
    """The ``VOLUME_REGIONS`` a visit lacking the sequences ``absent`` cannot show: those with an
    outline no sequence given shows (``labels.SHOWN_BY``)."""
    hidden = set(unseen_regions(absent))
    return [region for region, parts in OUTLINED_BY.items() if hidden & set(parts)]


@dataclass(frozen=True)
class Bidimensional:
    """The largest enhancing lesion's diameters (mm) on its largest axial slice, and their product."""

    longest_mm: float
    perpendicular_mm: float
    slice: int  # the axial index (third axis) where it was measured
    lesions: int  # connected enhancing lesions on the visit

    @property
    def product_mm2(self) -> float:
        return self.longest_mm * self.perpendicular_mm

    @property
    def measurable(self) -> bool:
        return min(self.longest_mm, self.perpendicular_mm) >= MEASURABLE_MM

    def record(self) -> dict:
        return {**asdict(self), "product_mm2": self.product_mm2, "measurable": self.measurable}


def lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The connected components (26-connected) of a mask, labelled 1..n, and n."""
    labelled, count = ndimage.label(mask, structure=_CONNECTIVITY)
    return labelled, int(count)


def largest_lesion(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest connected component of ``mask`` (all False when it is empty), and how many there are."""
    labelled, count = lesions(mask)
    if count == 0:
        return np.zeros(mask.shape, bool), 0
    sizes = np.bincount(labelled.ravel())[1:]
    return labelled == 1 + int(np.argmax(sizes)), count


def bidimensional(classes: np.ndarray, spacing: tuple[float, float, float]) -> Bidimensional:
    """RANO's two diameters of the largest enhancing lesion of an axial class map (X, Y, Z: the
    third axis runs inferior-superior); zeros when there is no enhancing tumor."""
    lesion, count = largest_lesion(classes == ENHANCING)
    best = Bidimensional(0.0, 0.0, -1, count)
    box = bounding_box(lesion)
    if box is None:
        return best
    lesion = lesion[box[0], box[1]]  # chords are sampled over the lesion's box only
    for z in np.flatnonzero(lesion.any(axis=(0, 1))):
        longest, perpendicular = diameters(lesion[:, :, z], spacing[:2])
        if longest * perpendicular > best.product_mm2 or best.slice < 0:
            best = Bidimensional(longest, perpendicular, int(z), count)
    return best


def diameters(region: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    """The longest chord of a 2D region (its pixels as squares of ``spacing`` mm) and the longest
    chord perpendicular to it, in mm."""
    pixels = np.argwhere(region).astype(np.float64)
    corners = (pixels[:, None, :] + np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])).reshape(
        -1, 2
    )
    points = corners * np.asarray(spacing, np.float64)
    points = points[ConvexHull(points).vertices]  # squares have an area: the hull is never flat
    gaps = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    i, j = np.unravel_index(np.argmax(gaps), gaps.shape)
    longest = float(gaps[i, j])
    axis = (points[j] - points[i]) / longest
    return longest, _longest_perpendicular_chord(region, spacing, points[i], axis, longest)


def _longest_perpendicular_chord(
    region: np.ndarray, spacing: tuple[float, float], start: np.ndarray, axis: np.ndarray, length: float
) -> float:
    """The longest run of the region along lines perpendicular to ``axis`` (mm), sampled every
    ``STEP`` of the finer voxel size along the axis and along each line."""
    spacing = np.asarray(spacing, np.float64)
    step = STEP * float(spacing.min())
    normal = np.array([-axis[1], axis[0]])
    reach = float(np.linalg.norm(np.array(region.shape) * spacing))
    along = np.arange(0.0, length + step, step)
    across = np.arange(-reach, reach + step, step)
    # every sample point (mm), as (positions along the axis, positions across, 2)
    points = start + along[:, None, None] * axis + across[None, :, None] * normal
    index = np.floor(points / spacing + 0.5).astype(np.int64)  # the pixel whose square holds it
    inside = np.all((index >= 0) & (index < np.array(region.shape)), axis=-1)
    index = np.where(inside[..., None], index, 0)
    hit = inside & region[index[..., 0], index[..., 1]]
    return float(_longest_run(hit).max() * step) if hit.any() else 0.0


def _longest_run(hits: np.ndarray) -> np.ndarray:
    """Per row, the length of the longest run of True (in samples)."""
    padded = np.pad(hits.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    runs = np.zeros(len(hits), np.int64)
    for row in np.flatnonzero(hits.any(axis=1)):
        starts, stops = np.flatnonzero(edges[row] == 1), np.flatnonzero(edges[row] == -1)
        runs[row] = int((stops - starts).max())
    return runs


def change_map(baseline: np.ndarray, followup: np.ndarray) -> np.ndarray:
    """Where the whole tumor vanished, persisted or is new, from two class maps on one grid."""
    before, after = np.isin(baseline, REGIONS["WT"]), np.isin(followup, REGIONS["WT"])
    change = np.zeros(baseline.shape, np.uint8)
    change[before & ~after] = VANISHED
    change[before & after] = PERSISTING
    change[~before & after] = NEW
    return change


def new_lesions(
    baseline: np.ndarray, followup: np.ndarray, spacing: tuple[float, float, float]
) -> list[Bidimensional]:
    """The follow-up's enhancing lesions (on the baseline's grid) that touch no enhancing tumor of
    the baseline, each measured as ``bidimensional`` measures one."""
    labelled, count = lesions(followup == ENHANCING)
    before = baseline == ENHANCING
    found = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        lesion = labelled[box] == index
        if (lesion & before[box]).any():
            continue
        # two perpendicular chords of 10 mm span at least 10 / sqrt(2) mm along both in-plane axes:
        # a smaller lesion is new but not measurable, and measuring it would only cost time
        extent = [(s.stop - s.start) * size for s, size in zip(box[:2], spacing[:2], strict=True)]
        if min(extent) < MEASURABLE_MM / np.sqrt(2):
            found.append(Bidimensional(0.0, 0.0, -1, 1))
            continue
        measured = bidimensional(np.where(lesion, ENHANCING, 0), spacing)
        found.append(replace(measured, slice=measured.slice + box[2].start))  # on the whole grid
    return found
