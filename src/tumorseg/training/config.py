"""Training configuration: defaults here, then a YAML file, then command-line flags.

It embeds the ``ModelConfig`` (what is trained) under ``model``; the rest says how. A config
file may give the model's keys in that section or flat beside the others (as tumorseg 0.1
wrote them), and every key of both is a flag.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from tumorseg import settings
from tumorseg.data.case import MAX_SIDE
from tumorseg.data.splits import GROUPINGS
from tumorseg.errors import TumorsegError, first_line, short
from tumorseg.files import write_text
from tumorseg.models import ModelConfig
from tumorseg.settings import option

#: Flags named otherwise than their ModelConfig key.
MODEL_FLAGS = {"name": "model"}


#: Upper bounds of the settings that size what training allocates or spawns: each setting that is
#: a number has a range, so that no config can ask for more than a machine has (tests check that
#: every one refuses a value of 40 digits).
MAX_EPOCHS, MAX_BATCH, MAX_SAMPLES, MAX_WORKERS, MAX_FOLDS = 100_000, 4096, 10_000_000, 64, 100


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # data
    size: list = option(
        [192, 192], "slice height and width after zero-padding/center-cropping (2D; 3D: see --patch)"
    )
    tumor_fraction: float = option(
        0.5, "fraction of training slices drawn from slices with tumor (0: natural)"
    )
    augment: bool = option(True, "random flips, rotation, scaling, intensity scale and shift")
    augment_rotation: float = option(15.0, "largest rotation in the axial plane, in degrees")
    augment_scaling: float = option(0.1, "largest change of size along an axis (0.1: 0.9x to 1.1x)")
    augment_intensity: float = option(
        0.1, "largest intensity scale and shift of z-scores (0.1: x0.9 to x1.1, -0.1 to +0.1)"
    )
    augment_per_sequence: bool = option(
        False, "scale and shift each sequence's intensities on its own, not a slice's all at once"
    )
    augment_scanner: bool = option(
        False,
        "what another scanner changes, per sequence: gamma, a smooth bias field, blur along each "
        "in-plane axis (thick slices, one more interpolation) and noise, then z-scored again",
    )
    augment_enhancement: bool = option(
        False,
        "weaker or stronger contrast enhancement: the T1ce's excess over the T1 times 0.5 to 1.5",
    )
    augment_thick_slices: bool = option(
        False,
        "thick slices across one in-plane axis: a sequence averaged over 2 to 5 mm slabs and "
        "interpolated back, as a sagittal or coronal series read on axial planes",
    )
    val_fraction: float = option(0.2, "fraction of patients for validation")
    test_fraction: float = option(0.2, "fraction of patients held out for testing")
    folds: int = option(0, "k-fold cross-validation with K folds (0: off)")
    fold: int = option(0, "which fold validates (0..K-1)")
    group_by: str = option(
        "",
        "keep each site's patients in one fold (site), so that each fold model is "
        "scored on patients from sites it never saw; empty: patients shuffled alone",
    )
    split: str = option("", "a split JSON (from `tumorseg split`) instead of a seeded split")
    samples_per_epoch: int = option(
        0, "training slices (3D: patches) drawn per epoch (0: one per slice, or per patient)"
    )
    workers: str = option(
        "auto", "loader worker processes: a number, or auto (on a GPU every spare core, on a CPU one)"
    )
    # optimization
    epochs: int = option(50, "training epochs")
    batch_size: int = option(16, "slices per optimizer step (per process)")
    lr: float = option(1e-3, "peak learning rate of AdamW")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    warmup_epochs: float = option(1.0, "linear learning-rate warmup, in epochs")
    schedule: str = option("cosine", "learning-rate decay after warmup: cosine or poly")
    grad_clip: float = option(12.0, "clip the gradient norm to this (0: off)")
    patience: int = option(0, "stop after this many epochs without a better validation Dice (0: never)")
    # execution
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = option(True, "mixed precision on CUDA (bf16 where supported, else fp16 with scaling)")
    channels_last: bool = option(True, "channels-last memory format (faster on CPU and GPU)")
    compile: bool = option(False, "torch.compile the model")
    deterministic: bool = option(False, "deterministic algorithms (slower on CUDA)")
    seed: int = option(0, "seed for the split, initialization, sampling and augmentation")
    val_batch_size: int = option(32, "slices per forward pass during validation")

    def __getattr__(self, name: str) -> object:
        """The model's keys read through, as they are given: ``config.channels``, ``config.target``."""
        if name != "model" and name in settings.keys(ModelConfig):
            return getattr(self.model, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def of(cls, **values: object) -> TrainConfig:
        """A checked config from keyword arguments, model keys flat among them."""
        return from_mapping(values, "arguments")

    def validate(self, where: str = "config") -> TrainConfig:
        """Raise a TumorsegError naming the first value out of range."""
        settings.check(
            [
                (len(self.size) == 2 and all(s >= 16 for s in self.size), "size", "two ints >= 16"),
                (all(s <= MAX_SIDE for s in self.size), "size", f"two ints <= {MAX_SIDE}"),
                (0 <= self.tumor_fraction < 1, "tumor_fraction", "in [0, 1)"),
                (0 <= self.augment_rotation <= 180, "augment_rotation", "in [0, 180]"),
                (0 <= self.augment_scaling < 1, "augment_scaling", "in [0, 1)"),
                (0 <= self.augment_intensity < 1, "augment_intensity", "in [0, 1)"),
                (0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)"),
                (0 <= self.test_fraction < 1, "test_fraction", "in [0, 1)"),
                (self.folds == 0 or 2 <= self.folds <= MAX_FOLDS, "folds", f"0 or 2..{MAX_FOLDS}"),
                (self.folds == 0 or 0 <= self.fold < self.folds, "fold", "in 0..folds-1"),
                (self.group_by in GROUPINGS, "group_by", "empty or site"),
                (0 <= self.samples_per_epoch <= MAX_SAMPLES, "samples_per_epoch", f"in 0..{MAX_SAMPLES:,}"),
                (
                    self.workers == "auto" or self.workers.isdigit() and int(self.workers) <= MAX_WORKERS,
                    "workers",
                    f"auto or an int in 0..{MAX_WORKERS}",
                ),
                (1 <= self.epochs <= MAX_EPOCHS, "epochs", f"in 1..{MAX_EPOCHS:,}"),
                (1 <= self.batch_size <= MAX_BATCH, "batch_size", f"in 1..{MAX_BATCH}"),
                (self.lr > 0, "lr", "> 0"),
                (self.lr <= 1000, "lr", "<= 1000"),
                (self.weight_decay >= 0, "weight_decay", ">= 0"),
                (self.weight_decay <= 10, "weight_decay", "<= 10"),
                (0 <= self.warmup_epochs <= MAX_EPOCHS, "warmup_epochs", f"in 0..{MAX_EPOCHS:,}"),
                (self.schedule in ("cosine", "poly"), "schedule", "cosine or poly"),
                (self.grad_clip >= 0, "grad_clip", ">= 0"),
                (self.grad_clip <= 1e6, "grad_clip", "<= 1e6 (0: off)"),
                (0 <= self.patience <= MAX_EPOCHS, "patience", f"in 0..{MAX_EPOCHS:,}"),
                (
                    self.device in ("auto", "cpu") or self.device.startswith("cuda"),
                    "device",
                    "auto, cpu or cuda[:N]",
                ),
                (1 <= self.val_batch_size <= MAX_BATCH, "val_batch_size", f"in 1..{MAX_BATCH}"),
                (0 <= self.seed < 2**63, "seed", "in 0..2**63-1"),
            ],
            self,
            where,
        )
        return self

    def to_dict(self) -> dict:
        """Plain data, the model's keys in their own section (as config.yaml holds it)."""
        return asdict(self)

    def flat(self) -> dict:
        """Every key at one level, the model's as their flags name them (``model`` is its name)."""
        values = {k: v for k, v in self.to_dict().items() if k != "model"}
        return {**values, **{MODEL_FLAGS.get(k, k): v for k, v in self.model.to_dict().items()}}


def from_mapping(values: dict, where: str, base: TrainConfig | None = None) -> TrainConfig:
    """Apply ``values`` on top of ``base`` (or the defaults); unknown keys are an error.

    The model's keys may come in a ``model`` section or flat; a flat ``model: NAME`` names the
    architecture, as in tumorseg 0.1's files.
    """
    values = sectioned(values)
    model_values = values.pop("model", {})
    model = ModelConfig.from_mapping(model_values, where, base.model if base else None)
    return TrainConfig(model=model, **settings.merged(TrainConfig, values, where, base)).validate(where)


#: How many ``base:`` files a config may stand on, one on another.
MAX_BASES = 8


def load_config(path: Path) -> dict:
    """A config file's keys. ``base: FILE`` (a path relative to the file) reads FILE first and lays
    this file's keys over it, the model's key by key, so that a recipe says only how it differs
    from the one it builds on."""
    return with_bases(Path(path), ())


def with_bases(path: Path, below: tuple[Path, ...]) -> dict:
    values = sectioned(settings.read_config(path))
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str) or not base:
        raise TumorsegError(f"{path}: base must name a config file")
    base_path = path.parent / base
    try:
        known = base_path.is_file()
        chain = (*below, path.resolve())
        looped = base_path.resolve() in chain
    except (OSError, ValueError) as err:
        raise TumorsegError(f"{path}: cannot read its base {short(base)} ({first_line(err)})") from err
    if not known:
        raise TumorsegError(f"{path}: its base {short(base)} is not a file")
    if looped or len(chain) > MAX_BASES:
        raise TumorsegError(f"{path}: base files nest in a loop or deeper than {MAX_BASES}")
    merged = with_bases(base_path, chain)
    model = {**merged.pop("model", {}), **values.pop("model", {})}
    return {**merged, **values, **({"model": model} if model else {})}


def sectioned(values: dict) -> dict:
    """The same keys with the model's in a ``model`` section (a name alone, as 0.1 wrote it, is
    the section's ``name``), so that two files merge key by key."""
    values = dict(values)
    section = values.pop("model", None)
    model = dict(section) if isinstance(section, dict) else {} if section is None else {"name": section}
    for key in settings.keys(ModelConfig):
        if key in values:
            model[key] = values.pop(key)
    return {**values, **({"model": model} if model else {})}


def save_config(config: TrainConfig, path: Path) -> None:
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config key (--batch-size, --amp/--no-amp, --channels, ...); unset flags stay unset."""
    settings.add_flags(
        parser.add_argument_group("model (override the config file)"), ModelConfig, MODEL_FLAGS
    )
    settings.add_flags(parser.add_argument_group("training (override the config file)"), TrainConfig)


def overrides(args: argparse.Namespace) -> dict:
    """The config keys given on the command line (the model's flat, by key)."""
    names = [*settings.keys(ModelConfig), *settings.keys(TrainConfig)]
    return {name: getattr(args, name) for name in names if hasattr(args, name)}
