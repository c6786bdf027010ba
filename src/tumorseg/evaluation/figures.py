"""Figures drawn from files a run wrote (history.csv, metrics.csv) and nothing else."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [
            {k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def _save(fig: plt.Figure, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def plot_history(history_csv: Path, out_dir: Path) -> list[Path]:
    """Two figures: "loss and accuracy" and "Dice and IoU", train and validation per epoch."""
    rows = read_history(history_csv)
    epochs = [r["epoch"] for r in rows]
    panels = {
        "loss_accuracy.png": ("Loss and accuracy", [("loss", "loss"), ("accuracy", "pixel accuracy")]),
        "dice_iou.png": ("Dice and IoU (mean of WT, TC, ET)", [("dice", "Dice"), ("iou", "IoU")]),
    }
    written = []
    for name, (title, metrics) in panels.items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, (key, label) in zip(axes, metrics, strict=True):
            for part, style in (("train", "-o"), ("val", "-s")):
                values = [r.get(f"{part}_{key}", float("nan")) for r in rows]
                ax.plot(
                    epochs, values, style, markersize=3, label="training" if part == "train" else "validation"
                )
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(title)
        _save(fig, out_dir / name)
        written.append(out_dir / name)
    return written
