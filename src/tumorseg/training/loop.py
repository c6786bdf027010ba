"""Training: build the network, (resume), then for each epoch: train on sampled slices, validate
on whole volumes, checkpoint. What the run directory holds is described in ``tumorseg.rundir``."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from tumorseg import interrupts
from tumorseg.checkpoint import load_checkpoint, save_checkpoint
from tumorseg.data.splits import load_split, save_split, split_cases
from tumorseg.data.store import Store
from tumorseg.devices import resolve_device
from tumorseg.errors import TumorsegError, first_line
from tumorseg.evaluation.metrics import dice_iou, overlap_counts
from tumorseg.files import write_json
from tumorseg.inference.segmenter import segment
from tumorseg.labels import REGION_NAMES, label_convention
from tumorseg.models.network import check_numbers, create_network
from tumorseg.rundir import RunDir
from tumorseg.training import distributed
from tumorseg.training.augment import BatchAugmentation
from tumorseg.training.config import TrainConfig, from_mapping, load_config, save_config
from tumorseg.training.history import plot_history, summary_line, write_history
from tumorseg.training.objective import Objective
from tumorseg.training.provenance import environment
from tumorseg.training.sampling import EpochData

#: Without a terminal (no progress bar), a progress line this often during an epoch.
PROGRESS_SECONDS = 30.0
#: The training loss is read from the device every this many steps (and at the end of an epoch):
#: a non-finite loss is caught within them, and the device is never stalled by a read every step.
LOSS_READ_STEPS = 10
#: Keys that may change when a run is resumed; the rest define the run.
RESUMABLE_KEYS = {"epochs", "patience", "workers", "device", "val_batch_size"}


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
    main, created = distributed.is_main_process(), not run.root.exists()
    try:
        with run.lock() if main else contextlib.nullcontext():
            config, store_path, checkpoint = resolve_run(
                store_path, run, config, resume, overrides or {}, main
            )
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


def resolve_run(
    store_path: Path | None,
    run: RunDir,
    config: TrainConfig | None,
    resume: bool,
    overrides: dict,
    main: bool,
) -> tuple[TrainConfig, Path, dict | None]:
    """The configuration, the store and (when resuming) the last checkpoint of the run. A run that
    never finished an epoch is started again by ``train --out`` (the main process says so)."""
    if resume:
        if run.started_only():
            raise TumorsegError(
                f"{run.root}: no last.pt to resume from: the run never finished an epoch; "
                f"start it again with `tumorseg train --data STORE --out {run.root}`"
            )
        saved = from_mapping(load_config(run.config), str(run.config))
        wanted = from_mapping(overrides, "command line", saved)
        before = saved.flat()
        changed = sorted(k for k, v in wanted.flat().items() if k not in RESUMABLE_KEYS and before[k] != v)
        if changed:
            raise TumorsegError(
                f"{run.root}: cannot change {', '.join(changed)} when resuming "
                f"(only {', '.join(sorted(RESUMABLE_KEYS))})"
            )
        return wanted, store_path or run.store(), load_checkpoint(run.last)
    if store_path is None:
        raise TumorsegError("train: --data STORE is required (or --resume RUN)")
    config = from_mapping(overrides, "command line", config) if overrides else config or TrainConfig()
    if main and run.started_only():
        print(f"{run.root}: the run there never finished an epoch; starting it again", flush=True)
        run.clear_start()
    elif main and run.holds_run():
        raise TumorsegError(
            f"{run.root}: already holds a run; continue it with --resume or choose another --out"
        )
    elif main and (foreign := run.foreign_files()):
        raise TumorsegError(
            f"{foreign[0]}: a run would write over this file, which no run wrote "
            f"(there is no {run.record.name}); choose another --out"
        )
    return config, store_path, None


def seed_everything(config: TrainConfig, device: torch.device) -> None:
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)


def make_split(config: TrainConfig, store: Store, run: RunDir, resume: bool) -> dict[str, list[str]]:
    if resume:
        return load_split(run.split)
    if config.split:
        split = load_split(Path(config.split))
        unknown = sorted(set(split["train"] + split["val"]) - set(store.case_ids))
        if unknown:
            raise TumorsegError(f"{config.split}: cases not in {store.path}: {unknown[:5]}")
    else:
        split = split_cases(
            store.labeled_case_ids,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
            folds=config.folds,
            fold=config.fold,
        )
    if not split["val"]:
        raise TumorsegError("the split has no validation patients; set val_fraction > 0")
    return split


def record_run(
    run: RunDir,
    config: TrainConfig,
    split: dict,
    store_path: Path,
    device: torch.device,
    world: int,
    fresh: bool,
) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    if fresh:  # first: the record marks the directory as a run (RunDir.started_only)
        write_json(
            run.record, {"store": str(store_path.resolve()), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        )
    save_config(config, run.config)
    save_split(run.split, split, seed=config.seed, folds=config.folds, fold=config.fold)
    write_json(run.environment, environment(device, world))


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
    target, device = trainer.objective.target, trainer.device
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
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        if augmentation is not None:
            x, y = augmentation(x, y)
        with trainer.autocast():
            outputs = net(x.contiguous(memory_format=trainer.memory_format))
        loss = trainer.objective(outputs, y)
        optimizer_step(trainer, loss)
        losses.append((loss.detach(), len(x)))
        main = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
        prediction = target.decode(target.activate(main.detach().float()))
        correct += (prediction == y).sum()
        counts += overlap_counts(prediction, y)
        seen += len(x)
        voxels += y.numel()
        if len(losses) < LOSS_READ_STEPS and step < len(loader):
            continue
        loss_sum += read_losses(losses, step, epoch, run)
        losses = []
        rate = seen / (time.perf_counter() - started)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", slices_per_s=f"{rate:.0f}")
        if lines and time.perf_counter() - last_line > PROGRESS_SECONDS:
            progress_line = (
                f"step {step}/{len(loader)}, loss {loss_sum / seen:.4f}, {rate:.0f} {unit(trainer.config)}/s"
            )
            print(f"  epoch {epoch}: {progress_line}", flush=True)
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
