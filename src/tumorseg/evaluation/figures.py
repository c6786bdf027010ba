"""Evaluation figures: overlays, per-patient box plots (from metrics.csv alone), the confusion matrix."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import matplotlib.patches
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Figures are made with matplotlib.figure.Figure, not pyplot: nothing global holds them, so one
# that an error or an interrupt leaves unsaved is simply garbage, and no GUI backend is involved.


def save_figure(fig: Figure, path: Path) -> None:
    """Save ``fig``, written beside ``path`` and renamed over it (never half a PNG)."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


#: BraTS colors for NCR/NET, edema and enhancing tumor, as in most BraTS figures.
LABEL_COLORS = {
    1: ("NCR/NET", (0.9, 0.1, 0.1)),
    2: ("edema", (0.1, 0.8, 0.2)),
    3: ("enhancing", (1.0, 0.85, 0.0)),
}


def _overlay(ax: Axes, image: np.ndarray, labels: np.ndarray | None, title: str) -> None:
    """An axial slice of the store (LPS axes) as radiologists read it: anterior up, the patient's
    right on the viewer's left, marked R and L."""
    ax.imshow(image.T, cmap="gray", origin="upper")
    if labels is not None:
        shown = labels.T  # rows = second array axis, as the image
        rgba = np.zeros((*shown.shape, 4))
        for value, (_, color) in LABEL_COLORS.items():
            rgba[shown == value] = (*color, 0.45)
        ax.imshow(rgba, origin="upper")
    for x, text in ((0.02, "R"), (0.98, "L")):
        ax.text(x, 0.5, text, transform=ax.transAxes, color="white", fontsize=8, ha="center", va="center")
    ax.set_title(title, fontsize=9, parse_math=False)  # case ids may hold $
    ax.axis("off")


def plot_overlays(samples: list[dict], path: Path) -> Path:
    """One row per sample: FLAIR and T1ce, each with the reference and the prediction overlaid.

    A sample holds "title", "flair", "t1ce", "reference", "prediction" (2D arrays of one axial
    slice) and optionally "slice" (its index) and "attention" (the finest gate's coefficients).
    """
    columns = 5 if any("attention" in s for s in samples) else 4
    fig = Figure(figsize=(2.6 * columns, 2.8 * len(samples)))
    axes = fig.subplots(len(samples), columns, squeeze=False)
    for row, sample in zip(axes, samples, strict=True):
        where = f"axial slice {sample['slice']}: " if "slice" in sample else ""
        _overlay(row[0], sample["flair"], sample["reference"], f"{sample['title']}\n{where}FLAIR + reference")
        _overlay(row[1], sample["flair"], sample["prediction"], "FLAIR + prediction")
        _overlay(row[2], sample["t1ce"], sample["reference"], "T1ce + reference")
        _overlay(row[3], sample["t1ce"], sample["prediction"], "T1ce + prediction")
        if columns == 5:
            if "attention" in sample:
                shown = row[4].imshow(sample["attention"].T, cmap="magma", origin="lower", vmin=0, vmax=1)
                fig.colorbar(shown, ax=row[4], fraction=0.046)
            row[4].set_title("attention (finest gate)", fontsize=9)
            row[4].axis("off")
    handles = [matplotlib.patches.Patch(color=color, label=name) for name, color in LABEL_COLORS.values()]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(fig, path)
    return path


def plot_boxplots(metrics_csv: Path, path: Path, regions: tuple[str, ...] = ("WT", "TC", "ET")) -> Path:
    """Per-patient Dice and IoU per region, as read from metrics.csv."""
    with open(metrics_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("dice", "iou"), strict=True):
        data = [[float(r[f"{metric}_{region}"]) for r in rows] for region in regions]
        ax.boxplot(data, tick_labels=list(regions))
        for i, values in enumerate(data, start=1):
            ax.scatter(
                np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)), values, s=10, alpha=0.6
            )
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("BraTS region")
        ax.set_ylabel("Dice" if metric == "dice" else "IoU")
        ax.set_title(f"{'Dice' if metric == 'dice' else 'IoU'} per patient ({len(rows)} patients)")
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)
    return path


def plot_confusion(confusion: np.ndarray, names: list[str], path: Path) -> Path:
    """Row-normalized confusion matrix with the counts written in each cell."""
    counts = np.asarray(confusion, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    shown = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            color = "white" if normalized[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{normalized[i, j]:.3f}\n{int(counts[i, j]):,}",
                ha="center",
                va="center",
                fontsize=7,
                color=color,
            )
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    fig.colorbar(shown, ax=ax, fraction=0.046, label="fraction of the reference class")
    ax.set_title("Confusion matrix (per voxel)")
    save_figure(fig, path)
    return path


def plot_uncertainty(summary: dict, dice: list[float], path: Path) -> Path:
    """Left: error rate of voxels per uncertainty bin (with their count). Right: each patient's mean
    uncertainty over its predicted tumor against its mean Dice of WT, TC and ET."""
    fig = Figure(figsize=(9, 3.6))
    left, right = fig.subplots(1, 2)
    centers = (np.asarray(summary["bins"][:-1]) + np.asarray(summary["bins"][1:])) / 2
    rates = [np.nan if r is None else r for r in summary["error_rate"]]
    left.bar(centers, rates, width=0.08)
    for x, rate, count in zip(centers, rates, summary["voxels"], strict=True):
        if count:
            left.annotate(f"{count:,}", (x, rate), ha="center", va="bottom", fontsize=6, rotation=90)
    left.set(
        xlabel="uncertainty (bits)",
        ylabel="voxels wrong",
        title="error rate per uncertainty bin",
        ylim=(0, 1.15),
    )
    uncertainty = list(summary["patients"].values())
    right.scatter(uncertainty, dice, s=14)
    r = summary["pearson_r"]
    right.set(
        xlabel="mean uncertainty over the predicted tumor",
        ylabel="mean Dice (WT, TC, ET)",
        title="patients" + (f" (Pearson r {r:.2f})" if r is not None else ""),
    )
    fig.tight_layout()
    save_figure(fig, path)
    return path
