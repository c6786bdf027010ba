"""``tumorseg evaluate``: segment every patient of a split and measure it as BraTS does.

Writes into the output folder:

    metrics.csv                 one row per patient: Dice, IoU, HD95, sensitivity, specificity
                                for WT, TC, ET and the labels NCR/NET and edema
    summary.json                mean, std, median and quartiles of every metric column
    classification_report.txt   per-voxel precision, recall, F1, support per class (also .csv)
    confusion_matrix.csv        counts; confusion_matrix.png row-normalized
    boxplots.png, overlays.png  per-patient Dice/IoU; best, median and worst patient
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tumorseg.data.splits import load_split
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.figures import plot_boxplots, plot_confusion, plot_overlays
from tumorseg.evaluation.metrics import (
    METRICS,
    STRUCTURES,
    classification_report,
    confusion_matrix,
    patient_metrics,
)
from tumorseg.files import write_csv, write_json, write_text
from tumorseg.inference.model import Segmenter, probabilities_to_classes
from tumorseg.labels import CLASS_NAMES


def run_directory(source: Path) -> Path:
    return source if source.is_dir() else source.parent


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
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
    lines = [f"{'metric':<12}" + "".join(f"{name:>17}" for name in names)]
    for metric in METRICS:
        cells = []
        for name in names:
            stats = summary[f"{metric}_{name}"]
            cells.append(
                f"{stats['mean']:>9.3f} ± {stats['std']:<5.3f}"
                if metric != "hd95"
                else f"{stats['mean']:>8.2f} ± {stats['std']:<6.2f}"
            )
        lines.append(f"{metric + (' mm' if metric == 'hd95' else ''):<12}" + "".join(cells))
    return "\n".join(lines)


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
    store: Store, case_id: str, prediction: np.ndarray, segmenter: Segmenter, title: str
) -> dict:
    """The axial slice with the most reference tumor, with the finest gate's attention if available."""
    info = store.info(case_id)
    z = int(np.argmax(info.tumor_voxels))
    image, reference = store.read_slice(case_id, z)
    sample = {
        "title": title,
        "flair": image[0],
        "t1ce": image[2],
        "reference": reference,
        "prediction": prediction[z],
    }
    model = segmenter.model
    if hasattr(model, "head"):  # tumorseg's model returns its gates' coefficients
        with torch.inference_mode():
            x = torch.from_numpy(image[None]).contiguous(memory_format=torch.channels_last)
            _, maps = model(x.to(segmenter.device), return_attention=True)
        sample["attention"] = maps[0][0, 0].float().cpu().numpy()
    return sample


def evaluate(
    source: Path,
    store_path: Path | None = None,
    split: str = "test",
    out: Path | None = None,
    tta: bool = False,
    device: str = "cpu",
    progress: bool | None = None,
) -> dict:
    """Evaluate the model of a run (or checkpoint) on one part of its split; return the summary."""
    segmenter = Segmenter(source, device=device, tta=tta)
    run = run_directory(Path(source))
    if not (run / "split.json").exists():
        raise TumorsegError(f"{run}: no split.json beside the model; evaluate needs the run's split")
    case_ids = load_split(run / "split.json")[split]
    if not case_ids:
        raise TumorsegError(f"{run / 'split.json'}: the {split} part is empty")
    if store_path is None:
        store_path = Path(json.loads((run / "run.json").read_text())["store"])
    out = out or run / f"evaluation-{split}"
    out.mkdir(parents=True, exist_ok=True)

    rows, predictions = [], {}
    confusion = np.zeros((4, 4), dtype=np.int64)
    with Store(store_path) as store:
        missing = [c for c in case_ids if c not in store.case_ids]
        if missing:
            raise TumorsegError(
                f"{store_path}: lacks {len(missing)} {split} cases of the run, e.g. {missing[0]}"
            )
        for case_id in tqdm(
            case_ids,
            desc=f"evaluate {split}",
            unit="case",
            disable=None if progress is None else not progress,
        ):
            info = store.info(case_id)
            if not info.has_label:
                raise TumorsegError(f"{store_path}: case {case_id} has no labels to evaluate against")
            volume, reference = store.read_volume(case_id)
            prediction = probabilities_to_classes(segmenter.probabilities(volume), segmenter.target)
            spacing = info.attrs["spacing"]
            outside = int(np.prod(info.attrs["original_shape"])) - prediction.size
            # stored axes are (k, i, j) of the source array: spacing in that order
            row = patient_metrics(prediction, reference, (spacing[2], spacing[0], spacing[1]), outside)
            rows.append({"case_id": case_id, **row})
            confusion += confusion_matrix(prediction, reference)
            confusion[0, 0] += outside
            predictions[case_id] = prediction

        write_csv(out / "metrics.csv", rows, list(rows[0]))
        summary = summarize(rows)
        report = classification_report(confusion)
        write_json(out / "summary.json", {"split": split, "cases": len(rows), "metrics": summary})
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
        plot_boxplots(out / "metrics.csv", out / "boxplots.png")
        mean_dice = [np.mean([r[f"dice_{k}"] for k in ("WT", "TC", "ET")]) for r in rows]
        order = np.argsort(mean_dice)
        chosen = {"best": order[-1], "median": order[len(order) // 2], "worst": order[0]}
        samples = []
        for label, index in chosen.items():
            case_id = rows[index]["case_id"]
            title = f"{label}: {case_id} (Dice {mean_dice[index]:.3f})"
            samples.append(overlay_sample(store, case_id, predictions[case_id], segmenter, title))
        plot_overlays(samples, out / "overlays.png")
    return {"out": out, "summary": summary, "report": report, "table": format_table(summary)}
