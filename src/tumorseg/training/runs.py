"""A run's start: its configuration and store (new, or resumed and checked against what it was),
its split of the patients, and the record it writes before the first epoch."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import torch

from tumorseg.checkpoint import load_checkpoint
from tumorseg.data.splits import load_split, save_split, split_cases
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.files import write_json
from tumorseg.rundir import RunDir
from tumorseg.training.config import TrainConfig, from_mapping, load_config, save_config
from tumorseg.training.provenance import environment

#: Keys that may change when a run is resumed; the rest define the run.
RESUMABLE_KEYS = {"epochs", "patience", "workers", "device", "val_batch_size"}


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
        checkpoint = load_checkpoint(run.last)
        run.check_owns(run.last, checkpoint.get("run_id"))
        run.check_split()
        return wanted, store_path or run.store(), checkpoint
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
            group_by=config.group_by,
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
            run.record,
            {
                "run_id": uuid.uuid4().hex,  # every file of the run carries it (RunDir.check_owns)
                "store": str(store_path.resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    save_config(config, run.config)
    save_split(
        run.split,
        split,
        seed=config.seed,
        folds=config.folds,
        fold=config.fold,
        group_by=config.group_by,
        run_id=run.identity,
    )
    write_json(run.environment, environment(device, world))
