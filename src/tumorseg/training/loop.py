"""Training: build the network, (resume), then for each epoch: train on sampled slices, validate
on whole volumes, checkpoint. What the run directory holds is described in ``tumorseg.rundir``."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tumorseg import interrupts
from tumorseg.checkpoint import save_checkpoint
from tumorseg.data.store import Store
from tumorseg.devices import is_main_process, resolve_device
from tumorseg.errors import TumorsegError
from tumorseg.inference.sliding_window import segment
from tumorseg.labels import REGION_NAMES, label_convention
from tumorseg.metrics import dice_iou, overlap_counts
from tumorseg.rundir import RunDir
from tumorseg.training import distributed
from tumorseg.training.augment import BatchAugmentation
from tumorseg.training.config import TrainConfig
from tumorseg.training.history import plot_history, summary_line, write_history
from tumorseg.training.runs import make_split, record_run, resolve_run, seed_everything
from tumorseg.training.sampling import EpochData
from tumorseg.training.trainer import Trainer, build, distributed_model, restore

#: Without a terminal (no progress bar), a progress line this often during an epoch.
PROGRESS_SECONDS = 30.0
#: The training loss is read from the device every this many steps (and at the end of an epoch):
#: a non-finite loss is caught within them, and the device is never stalled by a read every step.
LOSS_READ_STEPS = 10


def train(
    store_path: Path | None,
    run_path: Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overrides: dict | None = None,
    stop_after: int = 0,
    progress: bool | None = None,
) -> dict:
    """Train (or continue) the run in ``run_path``; return the last history row.

    ``stop_after`` > 0 ends this invocation after that many epochs (resume later), for jobs
    that must fit a time slot.
    """
    run = RunDir(Path(run_path))
    if run.root.exists() and not run.root.is_dir():
        raise TumorsegError(f"{run.root}: is a file; a run is a directory")
    if resume and not run.last.exists() and not run.started_only():
        raise TumorsegError(f"{run.root}: no last.pt to resume from")
    main, created = is_main_process(), not run.root.exists()
    try:
        config, store_path, checkpoint = resolve_run(store_path, run, config, resume, overrides or {}, main)
        device = resolve_device(config.device)
        context = distributed.setup(device.type)
        if context.active and device.type == "cuda":
            device = torch.device("cuda", context.local_rank)
            torch.cuda.set_device(device)
        try:
            return fit(config, Path(store_path), run, device, context, checkpoint, stop_after, progress)
        finally:
            distributed.teardown(context)
    finally:
        if main and created and run.root.is_dir() and not any(run.root.iterdir()):
            run.root.rmdir()  # failed before writing anything: leave no empty directory


def fit(
    config: TrainConfig,
    store_path: Path,
    run: RunDir,
    device: torch.device,
    context: distributed.Context,
    checkpoint: dict | None,
    stop_after: int,
    progress: bool | None,
) -> dict:
    seed_everything(config, device)
    store = Store(store_path)
    split = make_split(config, store, run, resume=checkpoint is not None)
    if checkpoint is None:  # the model records the voxel size it learns, for predict to resample to
        spacing = store.spacing(split["train"] + split["val"])
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, spacing=spacing))
    if context.is_main:
        record_run(run, config, split, store_path, device, context.world, fresh=checkpoint is None)
    data = EpochData(store_path, split["train"], config, context.world, device)
    trainer = build(config, data.steps_per_epoch, device)
    if checkpoint is not None:
        restore(trainer, checkpoint, run.last)
        if context.is_main:  # drop rows of an epoch that never checkpointed
            write_history(run.history, trainer.history)
    net = distributed_model(trainer.model, context, device, config.compile)
    if context.is_main:
        print(header(trainer, split, data, context, run), flush=True)

    first = trainer.epoch + 1
    for epoch in range(first, config.epochs + 1):
        if config.patience and trainer.stale >= config.patience:
            break
        started = time.perf_counter()
        quiet = True if not context.is_main else (None if progress is None else not progress)  # None: auto
        loader = data.loader(epoch, context, device)
        row = {"epoch": epoch, **train_epoch(trainer, net, loader, data.augmentation, epoch, run, quiet)}
        stop = False
        if context.is_main:
            row |= validate(trainer, store, split["val"])
            row["train_slices_per_s"] = row.pop("train_slices") * context.world / row.pop("train_seconds")
            row["seconds"] = time.perf_counter() - started
            stop = end_epoch(trainer, row, run)
        if distributed.broadcast(context, stop) or (stop_after and epoch - first + 1 >= stop_after):
            break
    store.close()
    distributed.barrier(context)
    return trainer.history[-1] if trainer.history else {}


def header(trainer: Trainer, split: dict, data: EpochData, context: distributed.Context, run: RunDir) -> str:
    """The line that opens a training: where it runs, on what, how much, and from which epoch."""
    config, dtype = trainer.config, trainer.dtype
    precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.") + " autocast"
    start = f"resuming at epoch {trainer.epoch + 1}" if trainer.epoch else "from epoch 1"
    augmented = f"augmented on {trainer.device.type}" if data.augmentation else "not augmented"
    return (
        f"train {run.root}: {trainer.device} ({precision}), {context.world} process(es), "
        f"{data.workers} loader worker(s), batches {augmented}; "
        f"{len(split['train'])} training and {len(split['val'])} validation patients; "
        f"{data.samples} {unit(config)} per epoch; {start} of {config.epochs}"
    )


def train_epoch(
    trainer: Trainer,
    net: torch.nn.Module,
    loader: DataLoader,
    augmentation: BatchAugmentation | None,
    epoch: int,
    run: RunDir,
    quiet: bool | None,
) -> dict:
    """One pass over the epoch's sampled slices; training loss, accuracy, Dice and IoU (pooled).
    Metrics add up on the device; the loss is read every LOSS_READ_STEPS steps. ``quiet``
    disables the progress bar (None: show it only on a terminal)."""
    net.train()
    device = trainer.device
    losses: list[tuple[torch.Tensor, int]] = []  # (loss, slices) of the steps not read yet
    loss_sum, seen, voxels = 0.0, 0, 0
    correct = torch.zeros((), dtype=torch.long, device=device)
    counts = torch.zeros(3, 3, dtype=torch.long, device=device)
    bar = tqdm(
        loader, desc=f"epoch {epoch}/{trainer.config.epochs}", unit="batch", disable=quiet, leave=False
    )
    started = last_line = time.perf_counter()
    lines = quiet is None and not sys.stdout.isatty()  # no bar (logs, CI, notebooks): progress lines
    for step, batch in enumerate(bar, start=1):
        interrupts.check()
        y, loss, prediction = train_step(trainer, net, batch, augmentation)
        losses.append((loss, len(y)))
        correct += (prediction == y).sum()
        counts += overlap_counts(prediction, y)
        seen += len(y)
        voxels += y.numel()
        if len(losses) < LOSS_READ_STEPS and step < len(loader):
            continue
        loss_sum += read_losses(losses, step, epoch, run)
        losses = []
        rate = seen / (time.perf_counter() - started)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", slices_per_s=f"{rate:.0f}")
        if lines and time.perf_counter() - last_line > PROGRESS_SECONDS:
            done = (
                f"step {step}/{len(loader)}, loss {loss_sum / seen:.4f}, {rate:.0f} {unit(trainer.config)}/s"
            )
            print(f"  epoch {epoch}: {done}", flush=True)
            last_line = time.perf_counter()
    dice, iou = dice_iou(counts)
    return {
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "train_loss": loss_sum / max(seen, 1),
        "train_accuracy": int(correct) / max(voxels, 1),
        "train_dice": float(dice.mean()),
        "train_iou": float(iou.mean()),
        "train_slices": seen,
        "train_seconds": time.perf_counter() - started,
    }


def train_step(
    trainer: Trainer, net: torch.nn.Module, batch: dict, augmentation: BatchAugmentation | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch (augmented on the device); its labels, its loss (not read from
    the device) and the prediction the network made of it."""
    x = batch["image"].to(trainer.device, non_blocking=True)
    y = batch["label"].to(trainer.device, non_blocking=True)
    if augmentation is not None:
        x, y = augmentation(x, y)
    with trainer.autocast():
        outputs = net(x.contiguous(memory_format=trainer.memory_format))
    loss = trainer.objective(outputs, y)
    optimizer_step(trainer, loss)
    main = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
    target = trainer.objective.target
    return y, loss.detach(), target.decode(target.activate(main.detach().float()))


def read_losses(losses: list[tuple[torch.Tensor, int]], step: int, epoch: int, run: RunDir) -> float:
    """The summed loss x slices of the steps up to ``step``, read from the device at once; the first
    non-finite one stops training, named by its step."""
    values = torch.stack([loss.float() for loss, _ in losses]).tolist()
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            raise TumorsegError(
                f"loss became {value} at epoch {epoch}, step {step - len(values) + offset + 1}; stopped. "
                f"{run.last} holds the last good state (epoch {epoch - 1}); try a lower --lr"
            )
    return sum(value * n for value, (_, n) in zip(values, losses, strict=True))


def unit(config: TrainConfig) -> str:
    """What a training sample is: a slice for a 2D network, a patch for a 3D one."""
    return "patches" if config.model.dims == 3 else "slices"


def optimizer_step(trainer: Trainer, loss: torch.Tensor) -> None:
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    if trainer.config.grad_clip:
        trainer.scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.config.grad_clip)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.scheduler.step()


@torch.no_grad()
def validate(trainer: Trainer, store: Store, case_ids: list[str]) -> dict[str, float]:
    """Loss, pixel accuracy, and per-patient Dice and IoU per region (averaged over patients), each
    patient segmented whole by ``segment``, as evaluation and prediction do."""
    trainer.model.eval()
    target = trainer.objective.target

    def forward(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(trainer.device)
        with trainer.autocast():
            return trainer.model(x.contiguous(memory_format=trainer.memory_format)).float().cpu().numpy()

    loss_sum, slices, correct, voxels = 0.0, 0, 0, 0
    dices, ious = [], []
    for case_id in case_ids:
        image, label = store.read_volume(case_id)
        # segment works on arrays (as prediction does): a GPU's logits come back to it for the loss
        scores = segment(forward, image, trainer.config.model, trainer.config.val_batch_size)
        logits = torch.from_numpy(scores).to(trainer.device)
        y = torch.from_numpy(label).long().to(trainer.device)
        loss_sum += trainer.objective(logits, y).item() * len(y)
        slices += len(y)
        prediction = target.decode(target.activate(logits))
        correct += int((prediction == y).sum())
        voxels += y.numel()
        dice, iou = dice_iou(overlap_counts(prediction, y))
        dices.append(dice)
        ious.append(iou)
    dice, iou = np.mean(dices, axis=0), np.mean(ious, axis=0)
    metrics = {"val_loss": loss_sum / slices, "val_accuracy": correct / voxels}
    metrics["val_dice"], metrics["val_iou"] = float(dice.mean()), float(iou.mean())
    for index, region in enumerate(REGION_NAMES):
        metrics[f"val_dice_{region}"] = float(dice[index])
        metrics[f"val_iou_{region}"] = float(iou[index])
    return metrics


def end_epoch(trainer: Trainer, row: dict, run: RunDir) -> bool:
    """Record the epoch: history, last.pt, best.pt if it improved, figures, a line. True: stop early."""
    config = trainer.config
    trainer.history.append(row)
    trainer.epoch = row["epoch"]
    improved = row["val_dice"] > trainer.best
    trainer.best, trainer.stale = (row["val_dice"], 0) if improved else (trainer.best, trainer.stale + 1)
    network = {
        "model_config": config.model.to_dict(),
        "model": trainer.model.state_dict(),
        "epoch": trainer.epoch,
        "labels": label_convention(),
        "run_id": run.identity,
    }
    save_checkpoint(
        {
            **network,
            "train_config": config.to_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "history": trainer.history,
            "best_metric": trainer.best,
            "epochs_since_best": trainer.stale,
        },
        run.last,
    )
    if improved:
        save_checkpoint({**network, "metrics": row}, run.best)
    write_history(run.history, trainer.history)
    plot_history(run.history, run.root)
    print(summary_line(row, config.epochs, improved, unit(config)), flush=True)
    stop = bool(config.patience and trainer.stale >= config.patience)
    if stop:
        print(f"early stop: no better validation Dice for {trainer.stale} epochs (best {trainer.best:.4f})")
    return stop
