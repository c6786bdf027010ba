"""The network and everything that moves it: optimizer, schedule, loss scale, objective, and the
state a resumed run restores."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from tumorseg.errors import TumorsegError, first_line
from tumorseg.models.network import check_numbers, create_network
from tumorseg.training import distributed
from tumorseg.training.config import TrainConfig
from tumorseg.training.objective import Objective


@dataclass
class Trainer:
    """The network and everything that moves it, plus the history of the epochs done so far."""

    config: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    objective: Objective
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    history: list[dict]
    epoch: int = 0  # the last finished epoch
    best: float = -1.0  # best validation Dice so far
    stale: int = 0  # epochs since the best

    @property
    def memory_format(self) -> torch.memory_format:
        return self.config.model.channels_last if self.config.channels_last else torch.contiguous_format

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)


def build(config: TrainConfig, steps_per_epoch: int, device: torch.device) -> Trainer:
    model = create_network(config.model).to(device)
    model = model.to(
        memory_format=config.model.channels_last if config.channels_last else torch.contiguous_format
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup, total = round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total, config.schedule)
    )
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    objective = Objective(config.model.target_spec())
    return Trainer(config, model, optimizer, scheduler, scaler, objective, device, dtype, history=[])


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warmup to 1, then cosine or poly (exponent 0.9) decay to 0 at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return (1 - progress) ** 0.9


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16 (with loss scaling); CPUs train in fp32."""
    if not config.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


#: What last.pt holds beyond the weights; best.pt (weights only) lacks them.
TRAINING_STATE = (
    "optimizer",
    "scheduler",
    "scaler",
    "rng",
    "history",
    "epoch",
    "best_metric",
    "epochs_since_best",
)


def restore(trainer: Trainer, checkpoint: dict, path: Path) -> None:
    """Continue from last.pt: weights, optimizer, schedule, loss scale, RNG, history, early stopping."""
    missing = [key for key in ("model", *TRAINING_STATE) if key not in checkpoint]
    if missing:
        raise TumorsegError(f"{path}: holds no training state ({', '.join(missing)}); is it a best.pt?")
    try:
        trainer.model.load_state_dict(checkpoint["model"])
        trainer.optimizer.load_state_dict(checkpoint["optimizer"])
        trainer.scheduler.load_state_dict(checkpoint["scheduler"])
        trainer.scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise TumorsegError(f"{path}: does not fit the run's config ({first_line(err)})") from err
    check_numbers(checkpoint["model"], trainer.model.state_dict(), str(path))  # after: same names
    trainer.history = [dict(row) for row in checkpoint["history"]]
    trainer.epoch = int(checkpoint["epoch"])
    trainer.best, trainer.stale = float(checkpoint["best_metric"]), int(checkpoint["epochs_since_best"])


def distributed_model(
    model: torch.nn.Module, context: distributed.Context, device: torch.device, compile: bool
):
    """The module the training steps call: DDP-wrapped across processes, compiled if asked."""
    net = model
    if context.active:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if compile else net
