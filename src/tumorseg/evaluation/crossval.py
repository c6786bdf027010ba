"""Cross-validation: pool the out-of-fold evaluations of K fold runs, as nnU-Net does.

A folds directory holds one run per fold (``tumorseg train --folds K --fold i``), each of which
validated on its own fifth of the patients. Each fold's model is evaluated on its validation
patients (``evaluation-val`` in the fold's run), and the per-patient rows are pooled, so every
patient is scored exactly once by a model that never saw it. The summary gives the mean and
spread over patients and the spread of the fold means, which says how much a recipe's score
depends on the split. The same out-of-fold label maps choose the post-processing thresholds
(``choose_fold_postprocessing``).

Several folds directories trained on the same folds (other recipes, other seeds) are scored as an
ensemble: each patient by the mean probabilities of the fold models, one per directory, that never
saw it. That is how an ensemble is measured on patients none of its members saw.
"""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tumorseg.checkpoint import check_run_identity
from tumorseg.data.splits import load_split, site_of
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.evaluate import Predictor, evaluate_run, statistics
from tumorseg.files import load_json, write_csv, write_json
from tumorseg.metrics import LEGEND, metric_cell, metric_label
from tumorseg.postprocessing.choice import Choice, OutOfFoldMap, choose_postprocessing
from tumorseg.rundir import RunDir

TABLE_STRUCTURES = ("WT", "TC", "ET")
TABLE_METRICS = ("dice", "hd95", "nsd", "lesion_dice", "lesion_hd95")


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
        run.check_split()
        for checkpoint in (run.best, run.last):
            if checkpoint.is_file():
                check_run_identity(checkpoint)
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


def fold_groups(roots: Sequence[Path]) -> list[list[RunDir]]:
    """Per fold of ``roots[0]``, its run and the run of every other root that validates the same
    patients: the members of that fold's ensemble."""
    groups = [[run] for run in fold_runs(roots[0])]
    for root in roots[1:]:
        by_patients = {frozenset(load_split(run.split)["val"]): run for run in fold_runs(root)}
        for group in groups:
            patients = frozenset(load_split(group[0].split)["val"])
            if patients not in by_patients:
                raise TumorsegError(
                    f"{root}: no fold validates the patients {group[0].root} does (an ensemble's members "
                    "train on the same folds: --split FOLD/split.json)"
                )
            group.append(by_patients[patients])
    return groups


def ensemble_suffix(roots: Sequence[Path]) -> str:
    """What names the ensemble of ``roots[0]`` with the others: "-with-cv-seed1"."""
    return "".join(f"-with-{root.name}" for root in roots[1:])


def cross_validate(
    roots: Sequence[Path],
    predictor_of: Callable[[list[RunDir]], Predictor],
    store_path: Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    variant: str = "",
) -> CrossValidation:
    """Evaluate each fold's model (or ensemble, with several ``roots``) on its validation patients
    and pool them into ``ROOT/crossval[VARIANT]`` (a variant: with TTA, or with sequences left
    out; an ensemble's adds ``ensemble_suffix``), ROOT being the first of ``roots``."""
    groups = fold_groups(roots)
    variant = ensemble_suffix(roots) + variant
    out = roots[0] / f"crossval{variant}"
    rows: list[dict] = []
    for index, group in enumerate(groups):
        run = group[0]
        metrics = run.evaluation("val", variant) / "metrics.csv"
        predictor = predictor_of(group)
        if overwrite or not evaluated_by(metrics.parent, predictor, group):
            evaluate_run(
                run,
                predictor,
                store_path,
                "val",
                overwrite=True,  # the fold's own evaluation, stale: by an older model or other settings
                progress=progress,
                variant=variant,
            )
        with open(metrics, newline="", encoding="utf-8") as handle:
            rows += [{"fold": index, **row} for row in csv.DictReader(handle)]
    numeric = [{k: float(v) for k, v in row.items() if k not in ("fold", "case_id")} for row in rows]
    summary = statistics(numeric)
    by_fold = [
        [values for values, row in zip(numeric, rows, strict=True) if row["fold"] == i]
        for i in range(len(groups))
    ]
    for key, stats in summary.items():
        stats["fold_means"] = [float(np.mean([values[key] for values in fold])) for fold in by_fold]
        stats["fold_std"] = float(np.std(stats["fold_means"]))
    out.mkdir(exist_ok=True)
    write_csv(out / "metrics.csv", rows, list(rows[0]))
    folds_are, sites = grouping(groups), site_means(rows, numeric)
    record = {"folds": len(groups), "patients": len(rows), "grouping": folds_are, "sites": sites}
    write_json(out / "summary.json", {**record, "metrics": summary})
    table = format_table(summary, len(rows), len(groups), folds_are)
    if folds_are.startswith("grouped"):
        table += "\nmean Dice WT / TC / ET per site: " + "; ".join(
            f"{site} ({means['patients']}) "
            + " / ".join(f"{means[f'dice_{r}']:.3f}" for r in TABLE_STRUCTURES)
            for site, means in sites.items()
        )
    return CrossValidation(out, len(groups), summary, table)


def site_means(rows: list[dict], numeric: list[dict]) -> dict[str, dict[str, float]]:
    """Each site's patients (the site read from the case id) and their mean Dice per region, the
    largest site first: how far the estimate depends on where the patients come from."""
    sites = [site_of(row["case_id"]) for row in rows]
    means = {}
    for site in sorted(set(sites), key=lambda name: (-sites.count(name), name)):
        values = [value for value, where in zip(numeric, sites, strict=True) if where == site]
        dice = {f"dice_{r}": float(np.mean([v[f"dice_{r}"] for v in values])) for r in TABLE_STRUCTURES}
        means[site] = {"patients": len(values), **dice}
    return means


def evaluated_by(folder: Path, predictor: Predictor, group: list[RunDir]) -> bool:
    """Whether ``folder`` holds an evaluation by this very predictor (the same models, TTA and
    post-processing) made since the folds' checkpoints were saved: then it is not made again."""
    try:
        summary = load_json(folder / "summary.json")
    except (OSError, ValueError):
        return False
    metrics = folder / "metrics.csv"
    saved = [path.stat().st_mtime for run in group for path in (run.best, run.last) if path.is_file()]
    newer = metrics.is_file() and all(metrics.stat().st_mtime >= time for time in saved)
    return newer and summary.get("model") == getattr(predictor, "description", None)


def grouping(groups: list[list[RunDir]]) -> str:
    """How the folds split the patients: by site only when every fold says so (``group_by``) and no
    fold's validation sites appear among its training patients, as an estimate for new sites needs."""
    for group in groups:
        provenance = load_json(group[0].split).get("provenance", {})
        split = load_split(group[0].split)
        unseen = not {site_of(c) for c in split["val"]} & {site_of(c) for c in split["train"]}
        if not (isinstance(provenance, dict) and provenance.get("group_by") == "site" and unseen):
            return "patients shuffled across sites"
    return "grouped by site: each patient scored by a model that never saw its site"


def format_table(summary: dict, patients: int, folds: int, grouped: str = "") -> str:
    """Mean ± std over patients, and (in brackets) the std of the fold means, per BraTS region."""
    folds_are = f" ({grouped})" if grouped else ""
    lines = [f"{patients} patients, {folds} folds{folds_are}: mean ± std over patients [std over folds]"]
    lines.append(f"{'metric':<16}" + "".join(f"{name:>24}" for name in TABLE_STRUCTURES))
    for metric in TABLE_METRICS:
        cells = [
            metric_cell(summary[f"{metric}_{name}"], metric, " [{fold_std:.{d}f}]")
            for name in TABLE_STRUCTURES
        ]
        lines.append(f"{metric_label(metric):<16}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join([*lines, textwrap.fill(LEGEND, 110)])


@dataclass
class OutOfFold:
    """One patient as scored by the fold model (or ensemble) that never saw it."""

    fold: int
    case_id: str
    predictor: Predictor
    volume: np.ndarray  # z-scored (Z, 4, H, W)
    probabilities: np.ndarray
    reference: np.ndarray
    voxel_ml: float


def out_of_fold(
    groups: list[list[RunDir]],
    predictor_of: Callable[[list[RunDir]], Predictor],
    store_path: Path | None,
    progress: bool | None,
) -> Iterator[OutOfFold]:
    """Each patient's probabilities by the fold model (or ensemble) that never saw it."""
    bar = tqdm(total=sum(len(load_split(g[0].split)["val"]) for g in groups), desc="out-of-fold", unit="case",
               disable=None if progress is None else not progress)  # fmt: skip
    for fold, group in enumerate(groups):
        predictor = predictor_of(group)
        with Store(store_path or group[0].store()) as store:
            for case_id in load_split(group[0].split)["val"]:
                volume, reference = store.read_volume(case_id)
                probabilities, voxel_ml = predictor.probabilities(volume), store.info(case_id).voxel_ml
                yield OutOfFold(fold, case_id, predictor, volume, probabilities, reference, voxel_ml)
                bar.update()
    bar.close()


def choose_fold_postprocessing(
    roots: Sequence[Path],
    predictor_of: Callable[[list[RunDir]], Predictor],
    store_path: Path | None = None,
    progress: bool | None = None,
    variant: str = "",
) -> tuple[Choice, Path]:
    """Choose the post-processing on the out-of-fold predictions of the folds under ``roots`` (one
    folder, or several as an ensemble); write the rule to ``ROOT/postprocessing[SUFFIX].json`` (for
    ``tumorseg pack``; SUFFIX names the ensemble and ``variant``) and every candidate's Dice beside
    it as .csv; return both."""
    patients = out_of_fold(fold_groups(roots), predictor_of, store_path, progress)
    choice = choose_postprocessing(out_of_fold_map(patient) for patient in patients)
    rule = roots[0] / f"postprocessing{ensemble_suffix(roots)}{variant}.json"
    write_csv(rule.with_suffix(".csv"), choice.rows, list(choice.rows[0]))
    write_json(rule, choice.chosen.to_dict())
    return choice, rule


def out_of_fold_map(patient: OutOfFold) -> OutOfFoldMap:
    """What the choice of post-processing needs of a patient scored out of fold."""
    target, probabilities = patient.predictor.target, patient.probabilities
    return OutOfFoldMap(
        target.decode(probabilities).astype(np.uint8),
        target.core_probability(probabilities),
        patient.reference,
        patient.voxel_ml,
        patient.fold,
        (target.region_probabilities(probabilities), patient.volume),
    )
