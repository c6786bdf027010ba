"""``tumorseg report``: one self-contained HTML page (figures embedded) about a run."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

from tumorseg.errors import TumorsegError, first_line
from tumorseg.evaluation.viewer import SCRIPT as VIEWER_SCRIPT
from tumorseg.evaluation.viewer import STYLE as VIEWER_STYLE
from tumorseg.evaluation.viewer import viewer_block
from tumorseg.files import load_json, write_text
from tumorseg.labels import CLASS_NAMES
from tumorseg.metrics import LEGEND, METRICS, STRUCTURES, metric_cell, metric_label
from tumorseg.outputs import claim_outputs
from tumorseg.rundir import RunDir

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; } pre { background: #f6f6f6; padding: .8em; overflow-x: auto; }
.missing { color: #a00; } .scroll { overflow-x: auto; max-width: 100%; }
"""


def read_json(path: Path) -> dict:
    """A JSON record a run or an evaluation wrote, or a clear error if it is not one."""
    try:
        value = load_json(path)
    except ValueError as err:
        raise TumorsegError(f"{path}: not valid JSON ({first_line(err)})") from err
    if not isinstance(value, dict):
        raise TumorsegError(f"{path}: not a JSON record")
    return value


def image_tag(path: Path, alt: str) -> str:
    if not path.exists():
        return f'<p class="missing">{html.escape(path.name)} not found</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metrics_table(summary: dict) -> str:
    rows = []
    for metric in METRICS:
        cells = []
        for name in STRUCTURES:
            cells.append(metric_cell(summary[f"{metric}_{name}"], metric, " (median {median:.{d}f})"))
        rows.append([metric_label(metric, "{} (mm)"), *cells])
    return table(rows, ["metric", *STRUCTURES]) + f"<p>{html.escape(LEGEND)}</p>"


def csv_table(path: Path, counts: tuple[str, ...] = ()) -> str:
    """A CSV file as a table: columns named in ``counts`` as whole numbers, the rest to 4 decimals."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    formatted = [
        [_number(cell, name in counts) for name, cell in zip(header, row, strict=True)] for row in rows[1:]
    ]
    return f'<div class="scroll">{table(formatted, header)}</div>'


def _number(cell: str, count: bool) -> str:
    try:
        value = float(cell)
    except ValueError:
        return cell
    return f"{int(value):,}" if count else f"{value:.4f}"


def build_report(
    run: Path, evaluation: Path | None = None, out: Path | None = None, overwrite: bool = False
) -> Path:
    """Write ``RUN/report.html`` from the run's files and its evaluation folder."""
    run = RunDir(Path(run))
    if not run.config.exists():
        raise TumorsegError(f"{run.root}: not a run directory (no config.yaml)")
    evaluation = evaluation or run.evaluation("test")
    out = out or run.report
    read = [path for path in evaluation.iterdir() if path.is_file()] if evaluation.is_dir() else []
    claim_outputs([out], [*run.inputs, *read], overwrite)
    parts = [f"<h1>tumorseg run: {html.escape(run.root.name)}</h1>"]
    environment = read_json(run.environment) if run.environment.exists() else {}
    if environment:
        parts.append(table([[k, str(v)] for k, v in environment.items()], ["environment", "value"]))
    parts.append("<h2>Training curves</h2>")
    curves, overlaps = run.figures
    parts.append(image_tag(curves, "loss and accuracy per epoch"))
    parts.append(image_tag(overlaps, "Dice and IoU per epoch"))
    if (evaluation / "summary.json").exists():
        parts += evaluation_parts(evaluation)
    else:
        parts.append(
            f'<p class="missing">No evaluation in {html.escape(str(evaluation))}: run tumorseg evaluate.</p>'
        )
    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{html.escape(run.config.read_text(encoding='utf-8'))}</pre>")
    viewer = f"<script>{VIEWER_SCRIPT.read_text(encoding='utf-8')}</script><style>{VIEWER_STYLE}</style>"
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>tumorseg report: {html.escape(run.root.name)}</title><style>{STYLE}</style>{viewer}</head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
    write_text(out, page)
    return out


def evaluation_parts(evaluation: Path) -> list[str]:
    """The report's sections about an evaluation folder."""
    summary = read_json(evaluation / "summary.json")
    parts = [f"<h2>Evaluation: {summary['cases']} {html.escape(summary['split'])} patients</h2>"]
    if summary.get("model"):
        parts.append(f"<p>Model evaluated: {html.escape(str(summary['model']))}.</p>")
    parts.append("<p>Mean ± std over patients (BraTS rules for empty structures).</p>")
    parts.append(metrics_table(summary["metrics"]))
    parts.append(image_tag(evaluation / "boxplots.png", "per-patient Dice and IoU"))
    parts.append("<h2>Per-voxel classification report</h2>")
    parts.append(csv_table(evaluation / "classification_report.csv", counts=("support",)))
    parts.append("<h2>Confusion matrix</h2>")
    parts.append(csv_table(evaluation / "confusion_matrix.csv", counts=tuple(CLASS_NAMES)))
    parts.append(image_tag(evaluation / "confusion_matrix.png", "confusion matrix"))
    parts.append("<h2>Best, median and worst patient</h2>")
    parts.append(image_tag(evaluation / "overlays.png", "overlays of reference and prediction"))
    if (evaluation / "viewers.json").exists():
        parts.append(
            "<p>Scroll through them: click a plane to move the crosshair; the prediction is filled, the "
            "reference outlined.</p>"
        )
        try:
            viewers = load_json(evaluation / "viewers.json")
        except ValueError as err:
            raise TumorsegError(f"{evaluation / 'viewers.json'}: not valid JSON ({first_line(err)})") from err
        parts += [viewer_block(data, f"viewer-{i}") for i, data in enumerate(viewers)]
    if (evaluation / "uncertainty.json").exists():
        parts += uncertainty_parts(evaluation)
    parts.append("<h2>Per-patient metrics</h2>")
    parts.append(csv_table(evaluation / "metrics.csv"))
    return parts


def uncertainty_parts(evaluation: Path) -> list[str]:
    """Whether the model's uncertainty means something: error rate per bin, patients' correlation."""
    check = read_json(evaluation / "uncertainty.json")
    r, rho = check.get("pearson_r"), check.get("spearman_rho")
    said = (
        f"Across patients, mean uncertainty over the predicted tumor against mean Dice: Pearson r "
        f"{r:.2f}, Spearman &rho; {rho:.2f} (negative: the less sure, the worse)."
        if r is not None and rho is not None
        else "Too few patients (or no spread) for a correlation across patients."
    )
    return [
        "<h2>Uncertainty</h2>",
        "<p>Voxel-wise uncertainty is the largest binary entropy of the region probabilities (bits). "
        f"If it means something, voxels that are more uncertain are more often wrong. {said}</p>",
        image_tag(
            evaluation / "uncertainty.png", "error rate per uncertainty bin; patients' uncertainty and Dice"
        ),
    ]
