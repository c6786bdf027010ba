"""Training configuration: defaults here, then a YAML file, then command-line flags."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import yaml

from tumorseg.errors import TumorsegError
from tumorseg.files import write_text
from tumorseg.training.objective import TARGETS


def option(default: object, help: str) -> object:
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # data
    size: list = option([192, 192], "slice height and width after zero-padding/center-cropping")
    tumor_fraction: float = option(
        0.5, "fraction of training slices drawn from slices with tumor (0: natural)"
    )
    augment: bool = option(True, "random flips, rotation, scaling, intensity scale and shift")
    val_fraction: float = option(0.2, "fraction of patients for validation")
    test_fraction: float = option(0.2, "fraction of patients held out for testing")
    folds: int = option(0, "k-fold cross-validation with K folds (0: off)")
    fold: int = option(0, "which fold validates (0..K-1)")
    split: str = option("", "a split JSON (from `tumorseg split`) instead of a seeded split")
    samples_per_epoch: int = option(0, "training slices drawn per epoch (0: as many as there are)")
    workers: int = option(2, "DataLoader worker processes")
    # model
    model: str = option("attention_unet", "attention_unet, or monai_attention_unet for comparisons")
    channels: list = option([16, 32, 64, 128, 256], "feature widths from the first stage to the bottom")
    norm: str = option("batch", "batch or instance normalization")
    deep_supervision: bool = option(False, "add losses on the coarser decoder stages")
    target: str = option(
        "regions", "regions: sigmoid WT/TC/ET with Dice+BCE; labels: softmax classes, Dice+CE"
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

    def validate(self, where: str = "config") -> TrainConfig:
        """Raise a TumorsegError naming the first value out of range."""
        checks = [
            (
                len(self.size) == 2 and all(isinstance(s, int) and s >= 16 for s in self.size),
                "size",
                "two ints >= 16",
            ),
            (0 <= self.tumor_fraction < 1, "tumor_fraction", "in [0, 1)"),
            (0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)"),
            (0 <= self.test_fraction < 1, "test_fraction", "in [0, 1)"),
            (self.folds == 0 or self.folds >= 2, "folds", "0 or >= 2"),
            (self.folds == 0 or 0 <= self.fold < self.folds, "fold", "in 0..folds-1"),
            (self.samples_per_epoch >= 0, "samples_per_epoch", ">= 0"),
            (self.workers >= 0, "workers", ">= 0"),
            (
                self.model in ("attention_unet", "monai_attention_unet"),
                "model",
                "attention_unet or monai_attention_unet",
            ),
            (
                len(self.channels) >= 2 and all(isinstance(c, int) and c > 0 for c in self.channels),
                "channels",
                "2+ positive ints",
            ),
            (self.norm in ("batch", "instance"), "norm", "batch or instance"),
            (self.target in TARGETS, "target", " or ".join(TARGETS)),
            (self.epochs >= 1, "epochs", ">= 1"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.lr > 0, "lr", "> 0"),
            (self.weight_decay >= 0, "weight_decay", ">= 0"),
            (self.warmup_epochs >= 0, "warmup_epochs", ">= 0"),
            (self.schedule in ("cosine", "poly"), "schedule", "cosine or poly"),
            (self.grad_clip >= 0, "grad_clip", ">= 0"),
            (self.patience >= 0, "patience", ">= 0"),
            (
                self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                "device",
                "auto, cpu or cuda[:N]",
            ),
            (self.val_batch_size >= 1, "val_batch_size", ">= 1"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise TumorsegError(
                    f"{where}: {key} = {getattr(self, key)!r} is out of range (expected {expected})"
                )
        if self.model == "monai_attention_unet" and self.deep_supervision:
            raise TumorsegError(f"{where}: deep_supervision needs model attention_unet")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


FIELDS = {f.name: f for f in fields(TrainConfig)}


def _default(key: str) -> object:
    spec = FIELDS[key]
    return spec.default if spec.default is not MISSING else spec.default_factory()


def _coerce(key: str, value: object, where: str) -> object:
    kind = type(_default(key))
    if kind is bool:
        if not isinstance(value, bool):
            raise TumorsegError(f"{where}: {key} must be true or false, not {value!r}")
        return value
    if kind is list:
        if not isinstance(value, list | tuple):
            raise TumorsegError(f"{where}: {key} must be a list, not {value!r}")
        return [int(v) for v in value]
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise TumorsegError(f"{where}: {key} must be {kind.__name__}, not {value!r}") from None


def from_mapping(values: dict, where: str, base: TrainConfig | None = None) -> TrainConfig:
    """Apply ``values`` on top of ``base`` (or the defaults); unknown keys are an error."""
    config = base.to_dict() if base else TrainConfig().to_dict()
    for key, value in values.items():
        if key not in FIELDS:
            close = [k for k in FIELDS if key.replace("-", "_") == k]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise TumorsegError(f"{where}: unknown config key {key!r}{hint}")
        config[key] = _coerce(key, value, where)
    return TrainConfig(**config).validate(where)


def load_config(path: Path) -> dict:
    try:
        values = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise TumorsegError(f"{path}: config file does not exist") from None
    except yaml.YAMLError as err:
        raise TumorsegError(f"{path}: not valid YAML ({err})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise TumorsegError(f"{path}: a config file is a mapping of key: value")
    return values


def save_config(config: TrainConfig, path: Path) -> None:
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config key (--batch-size, --amp/--no-amp, ...); unset flags stay unset."""
    group = parser.add_argument_group("configuration (override the config file)")
    for name, spec in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        default = _default(name)
        help_text = f"{spec.metadata['help']} (default {default})"
        if isinstance(default, bool):
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        elif isinstance(default, list):
            group.add_argument(
                flag, type=int, nargs="+", default=argparse.SUPPRESS, help=help_text, metavar="N"
            )
        else:
            group.add_argument(flag, type=type(default), default=argparse.SUPPRESS, help=help_text)


def overrides(args: argparse.Namespace) -> dict:
    """The config keys given on the command line."""
    return {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
