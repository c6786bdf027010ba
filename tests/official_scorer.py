"""The official BraTS scorer (brats-evaluation's glioma configuration, on panoptica), run in its own
interpreter on the pairs of a folder: ``PYTHON official_scorer.py FOLDER`` prints JSON.

Each pair is ``NAME__pred.nii.gz`` and ``NAME__ref.nii.gz`` in BraTS 2018 values (0, 1, 2, 4), given
to the scorer in its own (enhancing tumor 3). For each of WT, TC and ET it prints the scorer's
global (whole-region) figures and the parts of its lesion-wise ones: tp, fp, fn and the mean Dice
and HD95 of the matched lesions. Not part of tumorseg: the comparison test runs it.
"""

import json
import sys
import warnings
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
from panoptica import Panoptica_Evaluator

KEYS = ("tp", "fp", "fn", "sq_dsc", "sq_hd95", "global_bin_dsc", "global_bin_hd95", "global_bin_nsd")


def main(folder: Path) -> dict:
    warnings.filterwarnings("ignore")
    config = Path(str(files("brats_evaluation").joinpath("configs", "config_gli.yaml")))
    evaluator = Panoptica_Evaluator.load_from_config(config)
    results = {}
    for prediction in sorted(folder.glob("*__pred.nii.gz")):
        arrays = []
        for path in (prediction, prediction.with_name(prediction.name.replace("__pred", "__ref"))):
            labels = np.asarray(nib.load(path).dataobj).astype(np.uint8)
            labels[labels == 4] = 3
            arrays.append(labels)
        groups = evaluator.evaluate(*arrays, verbose=False)
        name = prediction.name.removesuffix("__pred.nii.gz")
        results[name] = {
            group: {key: float(getattr(groups[group], key)) for key in KEYS} for group in ("wt", "tc", "et")
        }
    return results


if __name__ == "__main__":
    print("JSON:" + json.dumps(main(Path(sys.argv[1]))))
