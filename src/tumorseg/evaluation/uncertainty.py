"""Whether a model's uncertainty means something: the error rate of voxels by how uncertain they
were, and whether a patient's uncertainty tells how good its segmentation is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from tumorseg.evaluation.figures import plot_uncertainty
from tumorseg.files import write_json
from tumorseg.labels import REGION_NAMES

BINS = 10


class UncertaintyCheck:
    """Accumulates, patient by patient, voxels and errors per uncertainty bin (tenths of [0, 1]) and
    each patient's mean uncertainty over the tumor it predicted."""

    def __init__(self) -> None:
        self.voxels = np.zeros(BINS, dtype=np.int64)
        self.errors = np.zeros(BINS, dtype=np.int64)
        self.patients: dict[str, float] = {}

    def add(
        self, case_id: str, uncertainty: np.ndarray, prediction: np.ndarray, reference: np.ndarray
    ) -> None:
        bins = np.clip((uncertainty * BINS).astype(np.int64), 0, BINS - 1).ravel()
        self.voxels += np.bincount(bins, minlength=BINS)
        self.errors += np.bincount(bins[(prediction != reference).ravel()], minlength=BINS)
        tumor = prediction > 0
        self.patients[case_id] = float(uncertainty[tumor].mean()) if tumor.any() else 0.0

    def write(self, rows: list[dict], out: Path) -> dict:
        """uncertainty.json and uncertainty.png beside the evaluation's metrics; returns the summary."""
        dice = [float(np.mean([row[f"dice_{r}"] for r in REGION_NAMES])) for row in rows]
        mean = [self.patients[row["case_id"]] for row in rows]
        varied = len(rows) >= 3 and np.ptp(dice) > 0 and np.ptp(mean) > 0
        summary = {
            "bins": np.linspace(0, 1, BINS + 1).tolist(),
            "voxels": self.voxels.tolist(),
            "errors": self.errors.tolist(),
            "error_rate": [e / v if v else None for e, v in zip(self.errors, self.voxels, strict=True)],
            "patients": dict(zip([row["case_id"] for row in rows], mean, strict=True)),
            "pearson_r": float(stats.pearsonr(mean, dice)[0]) if varied else None,
            "spearman_rho": float(stats.spearmanr(mean, dice)[0]) if varied else None,
        }
        write_json(out / "uncertainty.json", summary)
        plot_uncertainty(summary, dice, out / "uncertainty.png")
        return summary
