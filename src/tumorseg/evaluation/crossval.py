"""Cross-validation: pool the out-of-fold evaluations of K fold runs, as nnU-Net does.

A folds directory holds one run per fold (``tumorseg train --folds K --fold i``), each of which
validated on its own fifth of the patients. Each fold's model is evaluated on its validation
patients (``evaluation-val`` in the fold's run), and the per-patient rows are pooled, so every
patient is scored exactly once by a model that never saw it. The summary gives the mean and
spread over patients and the spread of the fold means, which says how much a recipe's score
depends on the split. The same out-of-fold label maps choose the post-processing thresholds
(``choose_fold_postprocessing``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tumorseg.data.splits import load_split
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.evaluate import Predictor, evaluate_run, statistics
from tumorseg.evaluation.metrics import METRICS
from tumorseg.evaluation.postprocessing import Choice, choose_postprocessing
from tumorseg.files import write_csv, write_json
from tumorseg.rundir import RunDir

TABLE_STRUCTURES = ("WT", "TC", "ET")


@dataclass
class CrossValidation:
    out: Path
    folds: int
    summary: dict[str, dict[str, float]]
    table: str


def fold_runs(root: Path) -> list[RunDir]:
    """The fold runs under ``root``, checked to be the K folds of one split of the same patients."""
    if not root.is_dir():
        raise TumorsegError(f"{root}: not a folder of fold runs")
    runs = [RunDir(p) for p in sorted(root.iterdir()) if p.is_dir() and RunDir(p).split.is_file()]
    if len(runs) < 2:
        raise TumorsegError(f"{root}: holds {len(runs)} fold runs; cross-validation needs 2 or more")
    seen: dict[str, Path] = {}
    patients = None
    for run in runs:
        split = load_split(run.split)
        everyone = set(split["train"]) | set(split["val"])
        if patients is not None and everyone != patients:
            raise TumorsegError(f"{run.split}: other patients than the other folds")
        patients = everyone
        for case_id in split["val"]:
            if case_id in seen:
                raise TumorsegError(f"{run.split}: {case_id} also validates in {seen[case_id]}")
            seen[case_id] = run.root
    missing = sorted(patients - set(seen))
    if missing:
        raise TumorsegError(
            f"{root}: no fold validates {len(missing)} patients, e.g. {missing[0]} (a fold missing?)"
        )
    return runs


def cross_validate(
    root: Path,
    predictor_of: Callable[[RunDir], Predictor],
    store_path: Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    variant: str = "",
) -> CrossValidation:
    """Evaluate each fold's model on its validation patients and pool them into
    ``root/crossval[VARIANT]`` (a variant: with TTA, or with sequences left out)."""
    runs = fold_runs(root)
    out = root / f"crossval{variant}"
    rows: list[dict] = []
    for index, run in enumerate(runs):
        metrics = run.evaluation("val", variant) / "metrics.csv"
        predictor = predictor_of(run)
        if overwrite or not evaluated_by(metrics.parent, predictor, run):
            evaluate_run(
                run,
                predictor,
                store_path,
                "val",
                overwrite=True,  # the fold's own evaluation, stale: by an older model or other settings
                progress=progress,
                variant=variant,
            )
        with open(metrics, newline="") as handle:
            rows += [{"fold": index, **row} for row in csv.DictReader(handle)]
    numeric = [{k: float(v) for k, v in row.items() if k not in ("fold", "case_id")} for row in rows]
    summary = statistics(numeric)
    by_fold = [
        [values for values, row in zip(numeric, rows, strict=True) if row["fold"] == i]
        for i in range(len(runs))
    ]
    for key, stats in summary.items():
        stats["fold_means"] = [float(np.mean([values[key] for values in fold])) for fold in by_fold]
        stats["fold_std"] = float(np.std(stats["fold_means"]))
    out.mkdir(exist_ok=True)
    write_csv(out / "metrics.csv", rows, list(rows[0]))
    write_json(out / "summary.json", {"folds": len(runs), "patients": len(rows), "metrics": summary})
    return CrossValidation(out, len(runs), summary, format_table(summary, len(rows), len(runs)))


def evaluated_by(folder: Path, predictor: Predictor, run: RunDir) -> bool:
    """Whether ``folder`` holds an evaluation by this very predictor (the same model, TTA and
    post-processing) made since the fold's best.pt was saved: then it is not made again."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    metrics = folder / "metrics.csv"
    newer = metrics.is_file() and metrics.stat().st_mtime >= run.best.stat().st_mtime
    return newer and summary.get("model") == getattr(predictor, "description", None)


def format_table(summary: dict, patients: int, folds: int) -> str:
    """Mean ± std over patients, and (in brackets) the std of the fold means, per BraTS region."""
    lines = [f"{patients} patients, {folds} folds: mean ± std over patients [std over folds]"]
    lines.append(f"{'metric':<10}" + "".join(f"{name:>24}" for name in TABLE_STRUCTURES))
    for metric in METRICS[:3]:
        cells = []
        for name in TABLE_STRUCTURES:
            stats = summary[f"{metric}_{name}"]
            digits = 2 if metric == "hd95" else 3
            cells.append(
                f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} [{stats['fold_std']:.{digits}f}]"
            )
        lines.append(
            f"{metric + (' mm' if metric == 'hd95' else ''):<10}" + "".join(f"{c:>24}" for c in cells)
        )
    return "\n".join(lines)


def out_of_fold(
    runs: list[RunDir],
    predictor_of: Callable[[RunDir], Predictor],
    store_path: Path | None,
    progress: bool | None,
) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    """Each patient's raw predicted classes by the fold model that never saw it, its reference and
    its voxel volume (mL)."""
    bar = tqdm(total=sum(len(load_split(r.split)["val"]) for r in runs), desc="out-of-fold", unit="case",
               disable=None if progress is None else not progress)  # fmt: skip
    for run in runs:
        predictor = predictor_of(run)
        with Store(store_path or run.store()) as store:
            for case_id in load_split(run.split)["val"]:
                volume, reference = store.read_volume(case_id)
                yield (
                    predictor.classes(predictor.probabilities(volume)),
                    reference,
                    store.info(case_id).voxel_ml,
                )
                bar.update()
    bar.close()


def choose_fold_postprocessing(
    root: Path,
    predictor_of: Callable[[RunDir], Predictor],
    store_path: Path | None = None,
    progress: bool | None = None,
) -> Choice:
    """Choose the post-processing on the out-of-fold predictions of the folds under ``root``; write
    the rule to ``root/postprocessing.json`` (for ``tumorseg pack``) and every candidate's Dice to
    ``root/postprocessing.csv``."""
    choice = choose_postprocessing(out_of_fold(fold_runs(root), predictor_of, store_path, progress))
    write_csv(root / "postprocessing.csv", choice.rows, list(choice.rows[0]))
    write_json(root / "postprocessing.json", choice.chosen.to_dict())
    return choice
