"""The training history: one row per finished epoch in history.csv, its figures and its summary line.

Training figures are drawn from history.csv alone, so they can be redrawn from the file. Note
that the training Dice is pooled over the epoch's sampled (augmented, tumor-oversampled)
slices, while the validation Dice is the mean over validation patients of each one's Dice on
its whole volume: the two curves measure different things, and the figure says so.
"""

from __future__ import annotations

import csv
from pathlib import Path

from matplotlib.figure import Figure

from tumorseg.evaluation.figures import save_figure
from tumorseg.files import write_csv
from tumorseg.labels import REGION_NAMES

HISTORY_FIELDS = [
    "epoch", "lr", "train_loss", "train_accuracy", "train_dice", "train_iou",
    "val_loss", "val_accuracy", "val_dice", "val_iou",
    *[f"val_dice_{r}" for r in REGION_NAMES], *[f"val_iou_{r}" for r in REGION_NAMES],
    "train_slices_per_s", "seconds",
]  # fmt: skip
CURVE_LABELS = {
    "train": "training (pooled over the epoch's sampled slices)",
    "val": "validation (mean over patients, whole volumes)",
}


def write_history(path: Path, rows: list[dict]) -> None:
    write_csv(path, rows, HISTORY_FIELDS)


def read_history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            {k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def plot_history(history_csv: Path, out_dir: Path) -> list[Path]:
    """Two figures: "loss and accuracy" and "Dice and IoU", training and validation per epoch."""
    rows = read_history(history_csv)
    epochs = [r["epoch"] for r in rows]
    panels = {
        "loss_accuracy.png": ("Loss and accuracy", [("loss", "loss"), ("accuracy", "pixel accuracy")]),
        "dice_iou.png": ("Dice and IoU (mean of WT, TC, ET)", [("dice", "Dice"), ("iou", "IoU")]),
    }
    written = []
    for name, (title, metrics) in panels.items():
        fig = Figure(figsize=(10, 3.8))
        axes = fig.subplots(1, 2)
        for ax, (key, label) in zip(axes, metrics, strict=True):
            for part, style in (("train", "-o"), ("val", "-s")):
                values = [r.get(f"{part}_{key}", float("nan")) for r in rows]
                ax.plot(epochs, values, style, markersize=3, label=CURVE_LABELS[part])
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=2, frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        save_figure(fig, out_dir / name)
        written.append(out_dir / name)
    return written


def summary_line(row: dict, epochs: int, improved: bool, unit: str = "slices") -> str:
    regions = " ".join(f"{r} {row[f'val_dice_{r}']:.3f}" for r in REGION_NAMES)
    return (
        f"epoch {int(row['epoch'])}/{epochs}  train loss {row['train_loss']:.4f} dice {row['train_dice']:.3f}"
        f" | val loss {row['val_loss']:.4f} dice {row['val_dice']:.3f} ({regions}) iou {row['val_iou']:.3f}"
        f" acc {row['val_accuracy']:.4f} | {row['train_slices_per_s']:.0f} {unit}/s, {row['seconds']:.0f} s"
        + ("  *best" if improved else "")
    )
