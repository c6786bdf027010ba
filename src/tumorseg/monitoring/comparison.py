"""What a comparison of two visits holds (``Visit``, ``Comparison``) and how it is measured
(``measure``): volumes and bidimensional products per visit, the change map, new lesions, the
responses by both rules, and the repeatability each change is weighed against."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from tumorseg import __version__
from tumorseg.data.case import voxel_spacing
from tumorseg.geometry import voxel_ml
from tumorseg.inference.writing import Writer
from tumorseg.monitoring import measures, response
from tumorseg.monitoring.alignment import Alignment

REPEATABILITY = "repeatability.json"


@dataclass
class Visit:
    """One visit in the space it is compared in (axes L, P, S: axial slices along the third)."""

    name: str  # "baseline" or "followup"
    case_id: str
    source: str
    image: np.ndarray  # (4, X, Y, Z) sequences
    classes: np.ndarray  # (X, Y, Z) internal classes
    affine: np.ndarray
    volumes_ml: dict[str, float]  # counted on the grid of the label map written (a raw visit's: native)
    absent: tuple[str, ...] = ()
    raw: str | None = None  # why it went through the raw pipeline
    writers: list[tuple[Path, Writer]] = field(default_factory=list)  # its label maps, when segmented here

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)


@dataclass
class Comparison:
    baseline: Visit
    followup: Visit
    alignment: Alignment
    change: np.ndarray  # measures.change_map on the baseline's grid
    bidimensional: dict[str, measures.Bidimensional]
    new_lesions: list[measures.Bidimensional]
    responses: list[response.Response]
    noise: dict[str, dict]  # per region, the repeatability coefficient, when known
    written: list[Path] = field(default_factory=list)

    def regions(self) -> list[dict]:
        """Per region: volumes at both visits, the change, and whether it is within measurement
        noise; no change for a region one visit's sequences cannot show (``not_shown`` says why)."""
        rows = []
        for region in measures.VOLUME_REGIONS:
            before, after = self.baseline.volumes_ml[region], self.followup.volumes_ml[region]
            known = noise_ml(self.noise, region, before)
            hidden = hidden_at(region, (self.baseline, self.followup))
            shown = hidden is None
            rows.append({
                "region": region,
                "baseline_ml": before,
                "followup_ml": after,
                "change_ml": after - before if shown else None,
                "change_percent": 100 * (after - before) / before if before > 0 and shown else None,
                "repeatability_ml": known,
                "within_noise": abs(after - before) < known if known is not None and shown else None,
                "not_shown": hidden,
            })  # fmt: skip
        return rows

    def record(self) -> dict:
        changed = {
            name: float(np.count_nonzero(self.change == value) * voxel_ml(self.baseline.affine))
            for value, name in enumerate(measures.CHANGE_NAMES) if value
        }  # fmt: skip
        return {
            "tumorseg": __version__,
            "visits": {
                visit.name: {
                    "case_id": visit.case_id,
                    "source": visit.source,
                    "raw": visit.raw,
                    "missing": list(visit.absent),
                    "not_shown": measures.not_shown(visit.absent),
                    "volumes_ml": visit.volumes_ml,
                    "bidimensional": self.bidimensional[visit.name].record(),
                }  # fmt: skip
                for visit in (self.baseline, self.followup)
            },
            "registration": {
                "sequence": self.alignment.sequence,
                "brain_overlap": self.alignment.overlap,
                "aligned": self.alignment.aligned,
                "euler3d": self.alignment.parameters,
            },
            "regions": self.regions(),
            "change_ml": changed if self.alignment.aligned else None,
            "new_enhancing_lesions": [lesion.record() for lesion in self.new_lesions],
            "responses": [r.record() for r in self.responses],
            "rules": [response.BIDIMENSIONAL.text(), response.VOLUMETRIC.text()],
            "repeatability": self.noise,
        }


def hidden_at(region: str, visits: tuple[Visit, ...]) -> str | None:
    """Why ``region`` cannot be compared between ``visits`` (a visit lacks every sequence that shows
    one of its outlines), or None."""
    lacking = [visit for visit in visits if region in measures.not_shown(visit.absent)]
    if not lacking:
        return None
    missing = sorted({m.upper() for visit in lacking for m in visit.absent})
    names = " and ".join("follow-up" if visit.name == "followup" else visit.name for visit in lacking)
    return f"not shown without {', '.join(missing)} at the {names}"


def repeatability() -> dict[str, dict]:
    """The repeatability coefficients that ship (``benchmarks/repeatability.py``), per region."""
    path = resources.files("tumorseg.monitoring") / REPEATABILITY
    return json.loads(path.read_text(encoding="utf-8"))["regions"] if path.is_file() else {}


def noise_ml(coefficients: dict[str, dict], region: str, baseline_ml: float) -> float | None:
    """The change (mL) of ``region`` that measurement noise reaches from ``baseline_ml``: the larger
    of the repeatability coefficient in mL and in % of the volume. Noise grows with a tumor's
    surface, less than its volume, so for a tumor smaller than those measured the mL coefficient
    bounds it from above and the % one from below, and the other way round for a larger one: the
    larger of the two calls a change real only when it beats either bound."""
    known = coefficients.get(region)
    return None if known is None else max(known["rc_ml"], known["rc_percent"] / 100 * baseline_ml)


def measure(before: Visit, after: Visit, alignment: Alignment) -> Comparison:
    """Everything ``compare`` reports, from two visits and the follow-up's alignment to the baseline."""
    change = measures.change_map(before.classes, alignment.labels)
    # the follow-up is measured on the baseline's axial slices once registered, so that both visits
    # are cut alike: a head tilted by 7 degrees between two visits of one tumor changed its own
    # axial diameters from 55.9 x 21.8 to 61.0 x 19.8 mm
    followup = (alignment.labels, before.spacing) if alignment.aligned else (after.classes, after.spacing)
    products = {"baseline": measures.bidimensional(before.classes, before.spacing),
                "followup": measures.bidimensional(*followup)}  # fmt: skip
    new = [lesion for lesion in measures.new_lesions(before.classes, alignment.labels, before.spacing)
           if lesion.measurable] if alignment.aligned else []  # fmt: skip
    options = {
        "new_lesions": len(new),
        "aligned": alignment.aligned,
        "hidden": hidden_at("ET", (before, after)),
    }
    noise = repeatability()
    responses = [
        response.categorize(response.BIDIMENSIONAL, products["baseline"].product_mm2,
                            products["followup"].product_mm2, measurable=products["baseline"].measurable,
                            **options),
        response.categorize(response.VOLUMETRIC, before.volumes_ml["ET"], after.volumes_ml["ET"],
                            measurable=before.volumes_ml["ET"] >= response.MEASURABLE_ML,
                            noise=noise_ml(noise, "ET", before.volumes_ml["ET"]), **options),
    ]  # fmt: skip
    return Comparison(before, after, alignment, change, products, new, responses, noise)
