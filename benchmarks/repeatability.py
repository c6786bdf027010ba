"""Repeatability of the shipped models' volumes: the same visit segmented again after the head moved.

Each shared patient is segmented ``--moves`` times, each time after a random rigid move (up to 10
degrees about each axis and 10 mm along it, about the image centre) resampled linearly onto the
same 1 mm grid, as a patient repositioned in the scanner and brought to atlas space again. The
tumor did not change, so any difference between the volumes is measurement noise. Every visit a
clinic compares has been resampled so (the BraTS pipeline resamples each visit to the atlas), so
the coefficient is computed among the moved copies; the patient as BraTS ships it is segmented
too, and the mean difference of the moved copies from it is printed apart (interpolation smooths
the images, which moves the volumes by a bias of its own).

Per region it prints the within-patient standard deviation and the repeatability coefficient
(Bland and Altman, Stat Methods Med Res 1999: RC = 1.96 * sqrt(2) * within-patient SD, the
difference two measurements of one unchanged tumor stay under for 95 % of pairs), in mL and, from
the within-patient coefficient of variation, in % of the volume. ``--write FILE`` writes them as
``tumorseg compare`` reads them (``src/tumorseg/monitoring/repeatability.json``); ``--volumes
FILE`` keeps every patient's volumes, from which ``--again FILE`` computes the same figures without
segmenting. Real cases come from $TUMORSEG_REAL_DATA or ../shared/data/brats2018-sample.

    python benchmarks/repeatability.py [--cases 28] [--moves 4] [--seed 0] [--write FILE] [--volumes FILE]
    python benchmarks/repeatability.py --again VOLUMES [--write FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from data_io import real_root  # this folder's benchmarks; scripts run from here
from tumorseg.data.brats import find_case_files, find_case_folders, read_case
from tumorseg.data.case import Case
from tumorseg.geometry import voxel_ml
from tumorseg.inference.predict import segment
from tumorseg.inference.segmenter import Segmenter
from tumorseg.monitoring.measures import VOLUME_REGIONS, volumes

MAX_DEGREES = 10.0
MAX_MM = 10.0
#: RC = 1.96 * sqrt(2) * within-patient SD
RC_FACTOR = 1.96 * np.sqrt(2.0)


def random_move(rng: np.random.Generator, case: Case) -> tuple[np.ndarray, np.ndarray]:
    """A random rigid move about the case's centre, as ``ndimage.affine_transform``'s matrix and
    offset (output voxel p takes the input at R (p - c) + c + t)."""
    rotation = Rotation.from_euler("xyz", rng.uniform(-MAX_DEGREES, MAX_DEGREES, 3), degrees=True).as_matrix()
    shift = rng.uniform(-MAX_MM, MAX_MM, 3) / np.asarray(case.spacing)
    centre = (np.array(case.image.shape[1:]) - 1) / 2
    return rotation, centre - rotation @ centre + shift


def moved(case: Case, move: tuple[np.ndarray, np.ndarray]) -> Case:
    """The case's sequences after ``move`` (``random_move``), resampled linearly onto its own grid."""
    image = np.stack(
        [ndimage.affine_transform(c.astype(np.float32), *move, order=1, cval=0.0) for c in case.image]
    )
    image[:, (image == 0).any(axis=0)] = 0  # the brain is where every sequence has signal, as in BraTS
    return Case(case.case_id, image, None, case.affine, case.sources)


def coefficients(values: np.ndarray) -> dict[str, float]:
    """Within-patient SD and RC (mL), and RC (%) from the within-patient coefficient of variation,
    of ``values`` (patients, measurements).

    The percentage pools only the patients whose region was found in every measurement: a region
    found in some copies and not in others was not measured with a proportional error but called
    present or absent (the post-processing removes an enhancing tumor under 1 mL), and one such
    patient, 0 / 0 / 1.0 / 1.0 mL, has a coefficient of variation of 115 %, which alone would set
    the pooled percentage of 28 patients to 60. Those patients still count in the mL figures, and
    their number is returned as ``flips``."""
    sd = float(np.sqrt(values.var(axis=1, ddof=1).mean()))
    means = values.mean(axis=1)
    measured = (values > 0).all(axis=1)
    flips = int(((means > 0) & ~measured).sum())
    cv = values[measured].var(axis=1, ddof=1) / means[measured] ** 2
    cv_rms = float(np.sqrt(cv.mean())) if measured.any() else 0.0
    return {"within_sd_ml": sd, "rc_ml": RC_FACTOR * sd, "rc_percent": 100 * RC_FACTOR * cv_rms,
            "flips": flips}  # fmt: skip


def measure(folders: list[Path], moves: int, seed: int) -> np.ndarray:
    """Each patient's volumes (patients, 1 + moves, regions): as BraTS ships it, then moved copies."""
    segmenter = Segmenter(None)
    measured = []
    for index, folder in enumerate(folders):
        start = time.perf_counter()
        case = read_case(find_case_files(folder))
        case = Case(case.case_id, case.image, None, case.affine, case.sources)
        rng = np.random.default_rng([seed, index])
        visits = [case] + [moved(case, random_move(rng, case)) for _ in range(moves)]
        rows = [volumes(segment(v, segmenter).classes, voxel_ml(case.affine)) for v in visits]
        measured.append([[row[r] for r in VOLUME_REGIONS] for row in rows])
        shown = "   ".join(f"{r} {rows[0][r]:.2f}, moved " + " ".join(f"{row[r]:.2f}" for row in rows[1:])
                           for r in ("WT", "ET"))  # fmt: skip
        print(f"{folder.name:<22} as shipped {shown} mL   {time.perf_counter() - start:.1f} s", flush=True)
    return np.array(measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=28)
    parser.add_argument("--moves", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", type=Path, help="write the coefficients as tumorseg compare reads them")
    parser.add_argument("--volumes", type=Path, help="write every patient's volumes (mL) to this JSON file")
    parser.add_argument("--again", type=Path, metavar="VOLUMES",
                        help="the coefficients from what --volumes wrote, without segmenting")  # fmt: skip
    args = parser.parse_args()
    if args.again:  # the seed comes with the volumes, so that --write records the run that made them
        saved = json.loads(args.again.read_text(encoding="utf-8"))
        seed, per_patient = saved["seed"], saved["volumes"]
        names = list(per_patient)
        values = np.array([[per_patient[n][r] for r in VOLUME_REGIONS] for n in names]).transpose(0, 2, 1)
    else:
        folders = find_case_folders(real_root())[: args.cases]
        seed, names = args.seed, [f.name for f in folders]
        values = measure(folders, args.moves, seed)
    if args.volumes:
        per_patient = {n: {r: values[i, :, k].round(3).tolist() for k, r in enumerate(VOLUME_REGIONS)}
                       for i, n in enumerate(names)}  # fmt: skip
        saved = {"seed": seed, "volumes": per_patient}
        args.volumes.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")
    shipped, values = values[:, 0], values[:, 1:]
    patients, moves = values.shape[:2]
    print(f"\n{patients} patients, {moves} moved copies each (flips: patients whose region is found in some "
          "copies and not in others, left out of RC %):")  # fmt: skip
    print(f"{'region':<8}{'mean mL':>9}{'within SD mL':>14}{'RC mL':>8}{'RC %':>7}{'flips':>7}   "
          "moved - shipped, mL (s.e.)")  # fmt: skip
    result = {}
    for r, name in enumerate(VOLUME_REGIONS):
        found = result[name] = coefficients(values[:, :, r])
        bias = values[:, :, r].mean(axis=1) - shipped[:, r]
        se = bias.std(ddof=1) / np.sqrt(len(bias)) if len(bias) > 1 else 0.0
        print(f"{name:<8}{values[:, :, r].mean():9.2f}{found['within_sd_ml']:14.3f}{found['rc_ml']:8.3f}"
              f"{found['rc_percent']:7.2f}{found['flips']:7d}   {bias.mean():+.2f} ({se:.2f})")  # fmt: skip
    if args.write:
        record = {
            "what": "repeatability coefficient (Bland and Altman 1999) of the shipped models' volumes",
            "command": f"python benchmarks/repeatability.py --cases {patients} --moves {moves} "
            f"--seed {seed} --write FILE",
            "patients": patients,
            "measurements_per_patient": moves,
            "move": f"random rigid, up to {MAX_DEGREES:g} degrees and {MAX_MM:g} mm per axis, "
            "resampled linearly",
            "rc_percent": "pooled over the patients whose region was found in every copy; flips: the others",
            "regions": {name: {k: round(v, 4) for k, v in found.items()} for name, found in result.items()},
        }
        args.write.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
