"""Training: each epoch trains on sampled slices, validates on whole volumes, then checkpoints.

The run directory holds everything needed to read, trust and continue a run:

    config.yaml       the resolved configuration
    run.json          the store it trained on, and when
    environment.json  versions of Python, torch, MONAI, CUDA, the device, the git commit
    split.json        the patient-level split
    history.csv       one row per finished epoch, rewritten after each epoch
    loss_accuracy.png, dice_iou.png   drawn from history.csv alone
    last.pt           the state after the last finished epoch (resume from here)
    best.pt           the weights with the best mean validation Dice
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from tumorseg import __version__
from tumorseg.data.case import MODALITIES
from tumorseg.data.dataset import SliceDataset, augmentation, seed_worker, tumor_weights
from tumorseg.data.splits import load_split, save_split, split_cases
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.evaluation.figures import plot_history
from tumorseg.evaluation.metrics import REGION_NAMES, dice_iou, overlap_counts
from tumorseg.files import write_csv, write_json
from tumorseg.labels import label_convention
from tumorseg.models import build_model, forward_padded
from tumorseg.training import distributed
from tumorseg.training.checkpoint import load_checkpoint, save_checkpoint
from tumorseg.training.config import TrainConfig, from_mapping, load_config, save_config
from tumorseg.training.objective import Objective, decode, init_output_bias, out_channels

HISTORY_FIELDS = [
    "epoch", "lr", "train_loss", "train_accuracy", "train_dice", "train_iou",
    "val_loss", "val_accuracy", "val_dice", "val_iou",
    *[f"val_dice_{r}" for r in REGION_NAMES], *[f"val_iou_{r}" for r in REGION_NAMES],
    "train_slices_per_s", "seconds",
]  # fmt: skip
#: Keys that may change when a run is resumed; the rest define the run.
RESUMABLE_KEYS = {"epochs", "patience", "workers", "device", "val_batch_size"}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TumorsegError(
            f"device {name!r} asked for, but this machine has no CUDA device (use --device cpu)"
        )
    return torch.device(name)


def git_commit() -> str | None:
    try:
        run = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() or None


def environment(device: torch.device, world: int) -> dict:
    import h5py
    import monai

    return {
        "tumorseg": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processes": world,
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


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


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    store: Store,
    case_ids: list[str],
    objective: Objective,
    config: TrainConfig,
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, float]:
    """Loss, pixel accuracy, and per-case Dice and IoU per region (averaged over cases)."""
    model.eval()
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    multiple = 2 ** (len(config.channels) - 1)
    loss_sum, slices, correct, voxels = 0.0, 0, 0, 0
    dices, ious = [], []
    for case_id in case_ids:
        image, label = store.read_volume(case_id)
        counts = torch.zeros(3, 3, dtype=torch.long)
        for start in range(0, image.shape[0], config.val_batch_size):
            x = torch.from_numpy(image[start : start + config.val_batch_size]).to(device)
            y = torch.from_numpy(label[start : start + config.val_batch_size]).long().to(device)
            with autocast(device, dtype):
                logits = forward_padded(model, x.contiguous(memory_format=memory_format), multiple)
            loss_sum += objective(logits, y).item() * len(x)
            slices += len(x)
            prediction = decode(logits.float(), config.target)
            correct += int((prediction == y).sum())
            voxels += y.numel()
            counts += overlap_counts(prediction, y)
        dice, iou = dice_iou(counts)
        dices.append(dice)
        ious.append(iou)
    dice, iou = np.mean(dices, axis=0), np.mean(ious, axis=0)
    metrics = {"val_loss": loss_sum / slices, "val_accuracy": correct / voxels}
    metrics["val_dice"], metrics["val_iou"] = float(dice.mean()), float(iou.mean())
    for index, region in enumerate(REGION_NAMES):
        metrics[f"val_dice_{region}"] = float(dice[index])
        metrics[f"val_iou_{region}"] = float(iou[index])
    return metrics


def prepare_run(
    store_path: Path | None, run: Path, config: TrainConfig | None, resume: bool, overrides: dict
) -> tuple[TrainConfig, Path, dict | None]:
    """Resolve the configuration, the store and (when resuming) the last checkpoint."""
    if resume:
        if not (run / "last.pt").exists():
            raise TumorsegError(f"{run}: no last.pt to resume from")
        saved = load_config(run / "config.yaml")
        changed = sorted(k for k, v in overrides.items() if k not in RESUMABLE_KEYS and saved.get(k) != v)
        if changed:
            raise TumorsegError(
                f"{run}: cannot change {', '.join(changed)} when resuming "
                f"(only {', '.join(sorted(RESUMABLE_KEYS))})"
            )
        config = from_mapping({**saved, **overrides}, str(run / "config.yaml"))
        store_path = store_path or Path(json.loads((run / "run.json").read_text())["store"])
        return config, store_path, load_checkpoint(run / "last.pt")
    if store_path is None:
        raise TumorsegError("train: --data STORE is required (or --resume RUN)")
    if (run / "last.pt").exists() or (run / "config.yaml").exists():
        raise TumorsegError(f"{run}: already holds a run; continue it with --resume or choose another --out")
    return config or TrainConfig(), store_path, None


def make_split(config: TrainConfig, store: Store, run: Path, resume: bool) -> dict[str, list[str]]:
    if resume:
        return load_split(run / "split.json")
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
    run = Path(run_path)
    overrides = overrides or {}
    if not resume and overrides:
        config = from_mapping(overrides, "command line", config)
    config, store_path, checkpoint = prepare_run(store_path, run, config, resume, overrides)
    device = resolve_device(config.device)
    context = distributed.setup(device.type)
    if context.active and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    try:
        return _train(config, Path(store_path), run, device, context, checkpoint, stop_after, progress)
    finally:
        distributed.teardown(context)


def _train(
    config: TrainConfig,
    store_path: Path,
    run: Path,
    device: torch.device,
    context: distributed.Context,
    checkpoint: dict | None,
    stop_after: int,
    progress: bool | None,
) -> dict:
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)

    store = Store(store_path)
    split = make_split(config, store, run, checkpoint is not None)
    if context.is_main:
        run.mkdir(parents=True, exist_ok=True)
        save_config(config, run / "config.yaml")
        save_split(run / "split.json", split, seed=config.seed, folds=config.folds, fold=config.fold)
        write_json(run / "environment.json", environment(device, context.world))
        if checkpoint is None:
            write_json(
                run / "run.json",
                {"store": str(store_path.resolve()), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            )

    train_set = SliceDataset(
        store_path,
        split["train"],
        size=tuple(config.size),
        transform=augmentation(config.seed) if config.augment else None,
    )
    if len(train_set) == 0:
        raise TumorsegError(f"{store_path}: the training patients hold no labeled slices")
    weights = tumor_weights(train_set.has_tumor, config.tumor_fraction)
    samples = config.samples_per_epoch or len(train_set)
    steps_per_epoch = max(1, samples // context.world // config.batch_size)

    model = build_model(
        config.model,
        out_channels=out_channels(config.target),
        channels=config.channels,
        norm=config.norm,
        deep_supervision=config.deep_supervision,
    )
    init_output_bias(model, config.target)
    model = model.to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup, total = round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total, config.schedule)
    )
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    objective = Objective(config.target)

    history: list[dict] = []
    start_epoch, best, stale = 1, -1.0, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        history = [dict(row) for row in checkpoint["history"]]
        start_epoch = checkpoint["epoch"] + 1
        best, stale = checkpoint["best_metric"], checkpoint["epochs_since_best"]
        if context.is_main:
            write_csv(
                run / "history.csv", history, HISTORY_FIELDS
            )  # drop rows of an epoch that never checkpointed
    net: torch.nn.Module = model
    if context.active:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)

    last_row: dict = history[-1] if history else {}
    for epoch in range(start_epoch, config.epochs + 1):
        if config.patience and stale >= config.patience:
            break
        started = time.perf_counter()
        epoch_seed = distributed.seed_for(config.seed, epoch)
        if train_set.transform is not None:
            train_set.transform.set_random_state(epoch_seed % 2**32)
        sampler = distributed.EpochSampler(
            len(train_set), samples, config.seed, epoch, weights, context.rank, context.world
        )
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(epoch_seed),
            pin_memory=device.type == "cuda",
            drop_last=len(sampler) > config.batch_size,
            persistent_workers=False,
        )
        net.train()
        loss_sum, seen, correct, voxels = 0.0, 0, 0, 0
        counts = torch.zeros(3, 3, dtype=torch.long)
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=True if not context.is_main else (None if progress is None else not progress),
            leave=False,
        )
        train_started = time.perf_counter()
        for step, batch in enumerate(bar):
            x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = batch["label"].to(device, non_blocking=True)
            with autocast(device, dtype):
                outputs = net(x)
            loss = objective(outputs, y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TumorsegError(
                    f"loss became {loss_value} at epoch {epoch}, step {step + 1}; stopped. "
                    f"{run / 'last.pt'} holds the last good state (epoch {epoch - 1}); try a lower --lr"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            main = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
            prediction = decode(main.detach().float(), config.target)
            correct += int((prediction == y).sum())
            voxels += y.numel()
            counts += overlap_counts(prediction, y)
            loss_sum += loss_value * len(x)
            seen += len(x)
            rate = seen / (time.perf_counter() - train_started)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", slices_per_s=f"{rate:.0f}")
        train_seconds = time.perf_counter() - train_started
        train_dice, train_iou = dice_iou(counts)

        stop = False
        if context.is_main:
            metrics = validate(model, store, split["val"], objective, config, device, dtype)
            row = {
                "epoch": epoch,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(voxels, 1),
                "train_dice": float(train_dice.mean()),
                "train_iou": float(train_iou.mean()),
                **metrics,
                "train_slices_per_s": seen * context.world / train_seconds,
                "seconds": time.perf_counter() - started,
            }
            history.append(row)
            improved = row["val_dice"] > best
            best, stale = (row["val_dice"], 0) if improved else (best, stale + 1)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "rng": {"torch": torch.get_rng_state()},
                "config": config.to_dict(),
                "modalities": list(MODALITIES),
                "labels": label_convention(),
                "history": history,
                "best_metric": best,
                "epochs_since_best": stale,
            }
            save_checkpoint(state, run / "last.pt")
            if improved:
                keep = ("model", "epoch", "config", "modalities", "labels")
                save_checkpoint({**{k: state[k] for k in keep}, "metrics": row}, run / "best.pt")
            write_csv(run / "history.csv", history, HISTORY_FIELDS)
            plot_history(run / "history.csv", run)
            print(summary_line(row, config.epochs, improved), flush=True)
            last_row = row
            stop = bool(config.patience and stale >= config.patience)
            if stop:
                print(f"early stop: no better validation Dice for {stale} epochs (best {best:.4f})")
        if distributed.broadcast(context, stop) or (stop_after and epoch - start_epoch + 1 >= stop_after):
            break
    store.close()
    distributed.barrier(context)
    return last_row


def summary_line(row: dict, epochs: int, improved: bool) -> str:
    regions = " ".join(f"{r} {row[f'val_dice_{r}']:.3f}" for r in REGION_NAMES)
    return (
        f"epoch {int(row['epoch'])}/{epochs}  train loss {row['train_loss']:.4f} dice {row['train_dice']:.3f}"
        f" | val loss {row['val_loss']:.4f} dice {row['val_dice']:.3f} ({regions}) iou {row['val_iou']:.3f}"
        f" acc {row['val_accuracy']:.4f} | {row['train_slices_per_s']:.0f} slices/s, {row['seconds']:.0f} s"
        + ("  *best" if improved else "")
    )
