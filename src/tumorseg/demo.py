"""``make demo``: the whole pipeline on synthetic phantoms, printing where each output is."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from tumorseg.data.prepare import prepare_store
from tumorseg.data.store import describe
from tumorseg.data.synth import synthesize
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.evaluate import evaluate_run
from tumorseg.evaluation.report import build_report
from tumorseg.inference.predict import predict
from tumorseg.inference.segmenter import Segmenter
from tumorseg.rundir import RunDir
from tumorseg.training.config import TrainConfig
from tumorseg.training.loop import train

DEMO_CASES = 8
DEMO_KAGGLE_VOLUMES = 2
DEMO_SHAPE = (96, 96, 64)
#: A small model and schedule that learns the phantoms in about a minute on 2 CPU cores.
DEMO_TRAINING = TrainConfig.of(
    channels=[8, 16, 32, 64], size=[96, 96], batch_size=8, epochs=6, workers=0, val_batch_size=64
)
OUTPUTS = ("phantoms", "kaggle", "store.h5", "run", "new-patient", "new-patient-seg.nii.gz",
           "new-patient-seg_volumes.json")  # fmt: skip


#: Left in the demo's folder, so that a re-run replaces only what a demo made.
MARKER = ".tumorseg-demo"


def run_demo(out: Path, seed: int = 0, overwrite: bool = False) -> None:
    start = time.perf_counter()
    if out.exists() and not out.is_dir():
        raise TumorsegError(f"{out}: is a file; the demo needs a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists() and not overwrite:
        raise TumorsegError(
            f"{out}: not empty and not made by the demo; choose another --out or pass --overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(
        "made by tumorseg demo; its outputs are replaced when the demo runs again\n", encoding="utf-8"
    )
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
    print(f"1/6 synthesize {DEMO_CASES} phantom cases and {DEMO_KAGGLE_VOLUMES} Kaggle-layout volumes")
    synthesize(out / "phantoms", DEMO_CASES, shape=DEMO_SHAPE, seed=seed)
    synthesize(
        out / "kaggle",
        DEMO_KAGGLE_VOLUMES,
        shape=DEMO_SHAPE,
        seed=seed,
        layout="kaggle",
        start=DEMO_CASES + 1,
    )
    print("2/6 prepare the HDF5 store from both layouts")
    prepare_store([out / "phantoms", out / "kaggle"], out / "store.h5")
    store = describe(out / "store.h5")
    print(f"    {len(store['cases'])} cases, {store['slices']} slices ({store['tumor_slices']} with tumor), "
          f"{store['size_bytes'] / 1e6:.1f} MB")  # fmt: skip
    print(f"3/6 train an Attention U-Net for {DEMO_TRAINING.epochs} epochs on the CPU")
    run = RunDir(out / "run")
    train(out / "store.h5", run.root, replace(DEMO_TRAINING, seed=seed))
    print("4/6 evaluate on the held-out test patients")
    result = evaluate_run(run, Segmenter(run.root))
    print(result.table)
    print("5/6 write the HTML report")
    report = build_report(run.root, result.out)
    print("6/6 segment a new synthetic patient (not in the store) to NIfTI")
    synthesize(
        out / "new-patient", 1, shape=DEMO_SHAPE, seed=seed, start=DEMO_CASES + DEMO_KAGGLE_VOLUMES + 1
    )
    new_case = next((out / "new-patient").iterdir())
    segmented = predict(new_case, out / "new-patient-seg.nii.gz", lambda: Segmenter(out / "run"))
    volumes = segmented.volumes[new_case.name]

    summary = result.summary
    dice = ", ".join(f"{r} {summary[f'dice_{r}']['mean']:.3f}" for r in ("WT", "TC", "ET"))
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Test Dice (mean over patients): {dice}; outputs:")
    rows = [
        (out / "store.h5", f"the HDF5 store of {DEMO_CASES + DEMO_KAGGLE_VOLUMES} phantoms"),
        (out / "run", "checkpoints, history.csv, training curves"),
        (result.out, "metrics.csv, summary.json, classification report, figures"),
        (report, "the report: open it in a browser"),
        (out / "new-patient-seg.nii.gz", f"labels of {new_case.name}: WT {volumes['WT']:.1f} mL, "
         f"TC {volumes['TC']:.1f} mL, ET {volumes['ET']:.1f} mL"),
    ]  # fmt: skip
    width = max(len(str(path)) for path, _ in rows)
    for path, what in rows:
        print(f"  {str(path):<{width}}  {what}")
