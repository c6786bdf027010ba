"""``tumorseg evaluate``: segment every patient of a split and measure it as BraTS does.

Evaluation receives the model as a ``Predictor`` and builds none itself, so it depends only on
the data, the labels and the metrics below it.

Writes into the output folder:

    metrics.csv                 one row per patient: Dice, IoU, HD95, sensitivity, specificity
                                for WT, TC, ET and the labels NCR/NET and edema
    summary.json                mean, std, median and quartiles of every metric column
    classification_report.txt   per-voxel precision, recall, F1, support per class (also .csv)
    confusion_matrix.csv        counts; confusion_matrix.png row-normalized
    boxplots.png, overlays.png  per-patient Dice/IoU; best, median and worst patient
    uncertainty.json, .png      error rate per uncertainty bin; patients' uncertainty against Dice
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from tumorseg.data.splits import load_split
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.figures import plot_boxplots, plot_confusion, plot_overlays
from tumorseg.evaluation.uncertainty import UncertaintyCheck
from tumorseg.evaluation.viewer import stored_case_data
from tumorseg.files import write_csv, write_json, write_text
from tumorseg.labels import CLASS_NAMES, REGION_NAMES, Target
from tumorseg.metrics import (
    LEGEND,
    METRICS,
    STRUCTURES,
    classification_report,
    confusion_matrix,
    metric_cell,
    metric_label,
    patient_metrics,
)
from tumorseg.outputs import claim_outputs
from tumorseg.rundir import RunDir

OUTPUT_FILES = (
    "metrics.csv", "summary.json", "classification_report.txt", "classification_report.csv",
    "confusion_matrix.csv", "confusion_matrix.png", "boxplots.png", "overlays.png", "viewers.json",
    "uncertainty.json", "uncertainty.png",
)  # fmt: skip


class Predictor(Protocol):
    """What evaluation needs of a model; ``tumorseg.inference.Segmenter`` is one. Its ``target``
    says what its probabilities mean (cross-validation decodes them to choose post-processing)."""

    target: Target

    def probabilities(self, volume: np.ndarray) -> np.ndarray:
        """Z-scored slices (Z, 4, H, W) -> probabilities (Z, C, H, W)."""

    def segmentation(
        self, probabilities: np.ndarray, voxel_ml: float, volume: np.ndarray | None
    ) -> np.ndarray:
        """Probabilities (Z, C, H, W) of ``volume`` -> internal classes (Z, H, W) after the model's
        post-processing (``volume`` is needed only if it grows the tumor)."""

    def uncertainty(self, probabilities: np.ndarray) -> np.ndarray:
        """Probabilities (Z, C, H, W) -> voxel-wise uncertainty (Z, H, W) in [0, 1]."""

    def attention(self, volume: np.ndarray, z: int) -> np.ndarray | None:
        """The finest attention gate's coefficients on slice ``z`` of a volume (Z, 4, H, W), if the
        model has gates."""


@dataclass
class Evaluation:
    out: Path
    summary: dict[str, dict[str, float]]
    report: dict[str, dict[str, float]]
    table: str


def statistics(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean, std, median, quartiles and count of every numeric column over the patients."""
    summary = {}
    for key in rows[0]:
        if key == "case_id":
            continue
        values = np.array([row[key] for row in rows], dtype=np.float64)
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "median": float(median),
            "q1": float(q1),
            "q3": float(q3),
            "n": len(values),
        }
    return summary


def format_table(summary: dict) -> str:
    names = list(STRUCTURES)
    lines = [f"{'metric':<16}" + "".join(f"{name:>17}" for name in names)]
    for metric in METRICS:
        cells = "".join(f"{metric_cell(summary[f'{metric}_{name}'], metric):>17}" for name in names)
        lines.append(f"{metric_label(metric):<16}" + cells)
    return "\n".join([*lines, textwrap.fill(LEGEND, 110)])


def format_report(report: dict) -> str:
    lines = [f"{'':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>14}"]
    for name, values in report.items():
        if name == "accuracy":
            continue
        if name == "macro avg":
            lines.append("")
        lines.append(
            f"{name:<14}{values['precision']:>10.4f}{values['recall']:>10.4f}{values['f1']:>10.4f}{values['support']:>14,}"
        )
    lines.append(f"\n{'accuracy':<14}{report['accuracy']['value']:>30.4f}")
    return "\n".join(lines)


def overlay_sample(
    store: Store, case_id: str, prediction: np.ndarray, predictor: Predictor, title: str
) -> dict:
    """The axial slice with the most reference tumor, with the finest gate's attention if available."""
    z = int(np.argmax(store.info(case_id).tumor_voxels))
    volume, labels = store.read_volume(case_id)
    image, reference = volume[z], labels[z]
    sample = {
        "title": title,
        "slice": z,
        "flair": image[0],
        "t1ce": image[2],
        "reference": reference,
        "prediction": prediction[z],
    }
    attention = predictor.attention(volume, z)
    if attention is not None:
        sample["attention"] = attention
    return sample


def evaluate(
    predictor: Predictor,
    store_path: Path,
    case_ids: list[str],
    out: Path,
    *,
    split: str = "test",
    overwrite: bool = False,
    progress: bool | None = None,
) -> Evaluation:
    """Segment each case of the store with ``predictor`` and measure it against its labels."""
    if not case_ids:
        raise TumorsegError(f"{store_path}: no {split} cases to evaluate")
    if out.exists() and not out.is_dir():
        raise TumorsegError(f"{out}: is a file; evaluate writes a folder of results")
    claim_outputs([out / name for name in OUTPUT_FILES], [store_path], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    rows, predictions = [], {}
    confusion = np.zeros((4, 4), dtype=np.int64)
    check = UncertaintyCheck()
    with Store(store_path) as store:
        missing = [c for c in case_ids if c not in store.case_ids]
        if missing:
            raise TumorsegError(
                f"{store_path}: lacks {len(missing)} {split} cases of the run, e.g. {missing[0]}"
            )
        bar = tqdm(
            case_ids,
            desc=f"evaluate {split}",
            unit="case",
            disable=None if progress is None else not progress,
        )
        for case_id in bar:
            info = store.info(case_id)
            if not info.has_label:
                raise TumorsegError(f"{store_path}: case {case_id} has no labels to evaluate against")
            volume, reference = store.read_volume(case_id)
            probabilities = predictor.probabilities(volume)
            prediction = predictor.segmentation(probabilities, info.voxel_ml, volume)
            check.add(case_id, predictor.uncertainty(probabilities), prediction, reference)
            row = patient_metrics(prediction, reference, info.spacing, info.outside_voxels)
            rows.append({"case_id": case_id, **row})
            confusion += confusion_matrix(prediction, reference)
            confusion[0, 0] += info.outside_voxels
            predictions[case_id] = prediction
        chosen = overlay_choices(rows)
        samples = [
            overlay_sample(store, case_id, predictions[case_id], predictor, title)
            for case_id, title in chosen
        ]
        model = getattr(predictor, "description", "")
        evaluation = write_results(out, split, rows, confusion, model, samples)
        check.write(rows, out)
        write_viewers(store, chosen, predictions, out / "viewers.json")
    return evaluation


def write_results(
    out: Path, split: str, rows: list[dict], confusion: np.ndarray, model: str, samples: list[dict]
) -> Evaluation:
    """The tables and figures of an evaluation (all of OUTPUT_FILES but the viewers)."""
    summary, report = write_tables(out, split, rows, confusion, model)
    plot_boxplots(out / "metrics.csv", out / "boxplots.png")
    plot_overlays(samples, out / "overlays.png")
    return Evaluation(out, summary, report, format_table(summary))


def evaluate_run(
    run: RunDir,
    predictor: Predictor,
    store_path: Path | None = None,
    split: str = "test",
    out: Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    variant: str = "",
) -> Evaluation:
    """Evaluate ``predictor`` (a run's model) on one part of the run's split, from the run's store
    unless another is given, into ``RUN/evaluation-SPLIT[VARIANT]`` unless ``out`` says otherwise."""
    if not run.split.exists():
        raise TumorsegError(f"{run.root}: no split.json beside the model; evaluate needs the run's split")
    run.check_split()
    case_ids = load_split(run.split)[split]
    if not case_ids:
        raise TumorsegError(f"{run.split}: the {split} part is empty")
    out, store_path = out or run.evaluation(split, variant), store_path or run.store()
    return evaluate(predictor, store_path, case_ids, out, split=split, overwrite=overwrite, progress=progress)


def write_viewers(store: Store, chosen: list[tuple[str, str]], predictions: dict, path: Path) -> None:
    """The interactive viewers' data of the chosen patients, for the report to embed."""
    viewers = []
    for case_id, title in chosen:
        image, reference = store.read_volume(case_id)
        spacing = tuple(float(s) for s in store.info(case_id).attrs["spacing"])
        viewers.append(stored_case_data(image, reference, predictions[case_id], spacing, title))
    write_json(path, viewers)


def write_tables(
    out: Path, split: str, rows: list[dict], confusion: np.ndarray, model: str
) -> tuple[dict, dict]:
    """metrics.csv, summary.json, the classification report and the confusion matrix; returns the
    summary and the report."""
    write_csv(out / "metrics.csv", rows, list(rows[0]))
    summary = statistics(rows)
    report = classification_report(confusion)
    write_json(out / "summary.json", {"split": split, "cases": len(rows), "model": model, "metrics": summary})
    write_text(out / "classification_report.txt", format_report(report) + "\n")
    write_csv(
        out / "classification_report.csv",
        [{"class": name, **values} for name, values in report.items() if name != "accuracy"],
        ["class", "precision", "recall", "f1", "support"],
    )
    write_csv(
        out / "confusion_matrix.csv",
        [
            {"reference": name, **dict(zip(CLASS_NAMES, map(int, counts), strict=True))}
            for name, counts in zip(CLASS_NAMES, confusion, strict=True)
        ],
        ["reference", *CLASS_NAMES],
    )
    plot_confusion(confusion, list(CLASS_NAMES), out / "confusion_matrix.png")
    return summary, report


def overlay_choices(rows: list[dict]) -> list[tuple[str, str]]:
    """(case id, title) of the best, median and worst patient by mean Dice over WT, TC and ET; each
    patient once (with fewer than three patients, fewer rows)."""
    mean_dice = [np.mean([r[f"dice_{k}"] for k in REGION_NAMES]) for r in rows]
    order = np.argsort(mean_dice, kind="stable")
    chosen: dict[int, str] = {}
    for label, index in (("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])):
        chosen.setdefault(int(index), label)
    return [
        (rows[i]["case_id"], f"{label}: {rows[i]['case_id']} (mean Dice of WT, TC, ET {mean_dice[i]:.3f})")
        for i, label in sorted(chosen.items(), key=lambda item: -mean_dice[item[0]])
    ]
