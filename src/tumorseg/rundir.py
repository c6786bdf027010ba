"""The run directory: the one place that knows the names of a run's files.

config.yaml       the resolved training configuration (with the model's own section)
run.json          the run's id, the store it trained on, and when (written first: it marks the
                  folder as a run); the id is in split.json and every checkpoint too
environment.json  versions of Python, torch, MONAI, CUDA, the device, the git commit
split.json        the patient-level split
history.csv       one row per finished epoch; loss_accuracy.png, dice_iou.png drawn from it
last.pt           the state after the last finished epoch (resume from here)
best.pt           the weights with the best mean validation Dice
evaluation-SPLIT/ what ``tumorseg evaluate`` wrote for that part of the split
report.html       what ``tumorseg report`` wrote
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tumorseg.errors import TumorsegError
from tumorseg.files import load_json


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def of(cls, source: Path) -> RunDir:
        """The run a directory is, or the run a checkpoint file lies in."""
        source = Path(source)
        return cls(source if source.is_dir() else source.parent)

    config = property(lambda self: self.root / "config.yaml")
    record = property(lambda self: self.root / "run.json")
    environment = property(lambda self: self.root / "environment.json")
    split = property(lambda self: self.root / "split.json")
    history = property(lambda self: self.root / "history.csv")
    last = property(lambda self: self.root / "last.pt")
    best = property(lambda self: self.root / "best.pt")
    report = property(lambda self: self.root / "report.html")
    figures = property(lambda self: (self.root / "loss_accuracy.png", self.root / "dice_iou.png"))

    @property
    def inputs(self) -> list[Path]:
        """The files that make the run: what commands reading a run may never write over."""
        return [self.config, self.record, self.environment, self.split, self.history, self.last, self.best,
                *self.figures, *self.root.glob("*.pt"), *self.root.glob("*.onnx")]  # fmt: skip

    def evaluation(self, split: str, variant: str = "") -> Path:
        """Where an evaluation of one part of the split goes; ``variant`` (see ``variant_name``)
        keeps evaluations made another way (TTA, sequences left out) apart."""
        return self.root / f"evaluation-{split}{variant}"

    def holds_run(self) -> bool:
        return self.last.exists() or self.record.exists()

    def foreign_files(self) -> list[Path]:
        """Files named as a run's in a directory that holds no run: someone else's, never replaced."""
        names = (
            self.config,
            self.environment,
            self.split,
            self.history,
            self.best,
            *self.figures,
            self.report,
        )
        return [] if self.holds_run() else [path for path in names if path.exists()]

    def started_only(self) -> bool:
        """A run that was begun but never finished an epoch: its record (written first), no last.pt."""
        return self.record.exists() and not self.last.exists()

    def clear_start(self) -> None:
        """Remove what a run that never finished an epoch wrote, so that it can start again."""
        for path in (self.config, self.record, self.environment, self.split, self.history, *self.figures):
            path.unlink(missing_ok=True)

    @property
    def identity(self) -> str | None:
        """The run's id, which run.json records and its split and checkpoints carry; None for a run
        of tumorseg 0.1, which recorded none."""
        try:
            value = load_json(self.record).get("run_id")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def check_owns(self, path: Path, recorded: object, required: bool = True) -> None:
        """Refuse a file in this run that carries another run's id (or, when ``required``, none where
        the run has one): it was copied in from another run, and would continue or measure that run
        inside this one."""
        if self.identity is None or recorded == self.identity or (recorded is None and not required):
            return
        whose = f"run {recorded}" if isinstance(recorded, str) else "no run"
        raise TumorsegError(
            f"{path}: belongs to {whose}, not to the run in {self.root} (run {self.identity}); "
            "it was copied in from another run"
        )

    def check_split(self) -> None:
        """Refuse a split.json that another run wrote (``check_owns``); one written by hand, which
        carries no id, is the user's to give."""
        try:
            provenance = load_json(self.split).get("provenance", {})
        except (OSError, ValueError, AttributeError):
            return  # reading the split itself says what is wrong with it
        recorded = provenance.get("run_id") if isinstance(provenance, dict) else None
        self.check_owns(self.split, recorded, required=False)

    def store(self) -> Path:
        """The store the run trained on, as run.json records it."""
        try:
            return Path(load_json(self.record)["store"])
        except FileNotFoundError as err:
            raise TumorsegError(f"{self.record}: missing; give the store with --data") from err
        except (ValueError, KeyError, TypeError) as err:
            raise TumorsegError(
                f"{self.record}: not a run record ({err}); give the store with --data"
            ) from err


def model_checkpoints(source: Path) -> list[Path]:
    """The models a source names: a file, a run's checkpoint, or one per run in a folder of runs (the
    folds of a cross-validation: an ensemble)."""
    source = Path(source)
    if source.is_dir() and not RunDir(source).split.is_file():
        runs = [p for p in sorted(source.iterdir()) if p.is_dir() and RunDir(p).split.is_file()]
        if runs:
            return [model_checkpoint(run) for run in runs]
    return [model_checkpoint(source)]


def model_checkpoint(source: Path) -> Path:
    """A run directory means its best.pt (else last.pt); a file means itself."""
    source = Path(source)
    if not source.is_dir():
        return source
    run = RunDir(source)
    for path in (run.best, run.last):
        if path.is_file():
            return path
    raise TumorsegError(f"{source}: no best.pt or last.pt in this run directory")


def variant_name(
    tta: bool = False,
    absent: tuple[str, ...] = (),
    postprocessed: bool = False,
    last: bool = False,
    step: int = 1,
) -> str:
    """The suffix naming an evaluation of last.pt, made with TTA, without some sequences, coarse to
    fine (a ``step`` above 1) or with a post-processing given apart from the model: "-last",
    "-tta-without-t1ce", "-coarse-step-4", "-postprocessed"."""
    return (
        ("-last" if last else "")
        + ("-tta" if tta else "")
        + ("-without-" + "-".join(absent) if absent else "")
        + (f"-coarse-step-{step}" if step > 1 else "")
        + ("-postprocessed" if postprocessed else "")
    )
