"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)`` only.

A checkpoint holds plain containers, numbers, strings and tensors, nothing that needs
unpickling code, so a file from elsewhere cannot run anything when loaded. Nor can it declare
its own size: torch.load inflates compressed zip entries (torch.save writes them stored), so what
the zip directory says the entries hold is checked against MAX_CHECKPOINT_BYTES first, and the
zip-less format of old torch versions, whose tensors declare their sizes in the pickle, is not
read at all.

Format 2 keeps what a network *is* apart from how it was trained (as nanoGPT keeps
``model_args`` apart from its training config)::

    model_config   the ModelConfig as a mapping: enough to rebuild the network
    model          its weights (state dict)
    epoch, labels  the epoch it was saved after; the label convention
    metrics        (best.pt) the validation row that made it the best
    train_config, optimizer, scheduler, scaler, rng, history, best_metric, epochs_since_best
                   (last.pt) everything needed to resume

A checkpoint carries the SHA-256 of its weights (``weights_sha256``), checked when the network is
read, and each zip entry its CRC, checked before ``torch.load``: a file changed after it was
written, by a bit or by someone who rewrote the zip, is refused rather than run.

Format 1 (tumorseg 0.1) kept one flat training config and the modalities beside it; it is
read by turning it into format 2 in memory.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import torch

from tumorseg import __version__
from tumorseg.errors import TumorsegError, first_line, short
from tumorseg.interrupts import deferred
from tumorseg.rundir import RunDir

#: The most a checkpoint may hold once read: far above tumorseg's own (the shipped model 4 MB,
#: a last.pt with its optimizer state three times its weights).
MAX_CHECKPOINT_BYTES = 2**31
FORMAT = "tumorseg-checkpoint"
FORMAT_VERSION = 2
#: The keys of a format-1 flat config that describe the network, and their format-2 names.
V1_MODEL_KEYS = {"model": "name", "channels": "channels", "norm": "norm",
                 "deep_supervision": "deep_supervision", "target": "target"}  # fmt: skip


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` beside ``path`` and rename it over ``path``: the old file stays valid on failure."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "tumorseg_version": __version__, **state}
    weights = state.get("model")
    if isinstance(weights, dict) and all(map(holds_its_values, weights.values())):
        payload["weights_sha256"] = weights_digest(weights)
    try:
        with deferred(), open(tmp, "wb") as handle:  # torch.save turns an interrupt into a write error
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        raise TumorsegError(
            f"{path}: could not write checkpoint ({err}); the previous one is unchanged"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; removed here on any failure or interrupt


def check_declared_size(handle: BinaryIO, path: Path) -> None:
    """Refuse a file (open as ``handle``) that is no torch.save zip, or whose entries would fill more
    memory than any tumorseg checkpoint needs, from the zip directory alone."""
    try:
        with zipfile.ZipFile(handle) as archive:
            declared = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise TumorsegError(
            f"{path}: not a readable checkpoint (not a torch.save zip file: {first_line(err)})"
        ) from err
    if declared > MAX_CHECKPOINT_BYTES:
        raise TumorsegError(
            f"{path}: declares {declared / 2**20:,.0f} MiB once read; tumorseg reads checkpoints "
            f"of up to {MAX_CHECKPOINT_BYTES / 2**20:,.0f} MiB"
        )
    handle.seek(0)
    try:
        with zipfile.ZipFile(handle) as archive:
            damaged = archive.testzip()  # torch.load reads entries without checking their CRC
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as err:
        raise TumorsegError(f"{path}: damaged checkpoint ({first_line(err)})") from err
    if damaged is not None:
        raise TumorsegError(f"{path}: damaged checkpoint: its entry {short(damaged)} fails its checksum")


def load_checkpoint(path: Path) -> dict:
    """Read a tumorseg checkpoint safely, or say why it is not one."""
    path = Path(path)
    if not path.is_file():
        raise TumorsegError(f"{path}: checkpoint does not exist")
    try:
        # one open file for the check and the load: a file replaced after its check is not read
        with open(path, "rb") as handle:
            check_declared_size(handle, path)
            handle.seek(0)
            state = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"(?i)[^\n]*unsupported global[^\n]*", str(err))
        if found:
            raise TumorsegError(
                f"{path}: refused to load: it holds objects other than tensors and plain data ({found[0]})"
            ) from err
        raise TumorsegError(f"{path}: not a readable checkpoint (not a torch.save file)") from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise TumorsegError(f"{path}: not a readable checkpoint ({first_line(err)})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TumorsegError(f"{path}: not a tumorseg checkpoint")
    if state.get("format_version", 0) > FORMAT_VERSION:
        version = state["format_version"]
        raise TumorsegError(
            f"{path}: checkpoint format {version} is newer than this tumorseg reads ({FORMAT_VERSION})"
        )
    if state.get("format_version", 0) < 2:
        state = upgrade_v1(state, path)
    if "weights_sha256" in state:
        check_weights(state, path)
    return state


def load_network(path: Path) -> dict:
    """A checkpoint that holds a network: its weights, its config and a numeric epoch, checked."""
    state = load_checkpoint(path)  # which checks the weights already when they carry their digest
    if not isinstance(state.get("model_config"), dict):
        raise TumorsegError(f"{path}: checkpoint lacks model weights or config")
    if "weights_sha256" not in state:
        check_weights(state, path)
    if not isinstance(state.get("epoch", 0), int):
        raise TumorsegError(f"{path}: checkpoint epoch is not a number")
    return state


def check_weights(state: dict, path: Path) -> None:
    """The checkpoint's weights are tensors that hold their own values (a view or a sparse tensor can
    declare any size) and, when it carries their digest, the weights it was written with."""
    if not isinstance(state.get("model"), dict):
        raise TumorsegError(f"{path}: checkpoint lacks model weights or config")
    for name, weight in state["model"].items():
        if (
            not isinstance(weight, torch.Tensor)
            or weight.layout != torch.strided
            or weight.numel() * weight.element_size() > weight.untyped_storage().nbytes()
        ):
            raise TumorsegError(
                f"{path}: weight {short(str(name))} is not a tensor that holds its own values"
            )
    recorded = state.get("weights_sha256")
    if recorded is not None and recorded != weights_digest(state["model"]):
        raise TumorsegError(
            f"{path}: its weights do not match the digest it carries "
            "(the file was changed after it was written)"
        )


def holds_its_values(weight: object) -> bool:
    """A dense tensor whose values all lie in its storage (a view or a sparse tensor can declare
    any number of them)."""
    return (
        isinstance(weight, torch.Tensor)
        and weight.layout == torch.strided
        and weight.numel() * weight.element_size() <= weight.untyped_storage().nbytes()
    )


def weights_digest(weights: dict) -> str:
    """SHA-256 of a state dict: each tensor's name, type, shape and bytes, in order of names."""
    digest = hashlib.sha256()
    for name in sorted(weights, key=str):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def upgrade_v1(state: dict, path: Path) -> dict:
    """A format-1 checkpoint as format 2: the network's keys of its flat config become model_config."""
    config = state.get("config")
    if not isinstance(config, dict) or not all(key in config for key in V1_MODEL_KEYS):
        raise TumorsegError(f"{path}: format-1 checkpoint without the config that describes its network")
    upgraded = {key: value for key, value in state.items() if key not in ("config", "modalities")}
    model_config = {new: config[old] for old, new in V1_MODEL_KEYS.items()}
    if "modalities" in state:
        model_config["modalities"] = state["modalities"]
    upgraded["model_config"] = model_config
    upgraded["train_config"] = config
    upgraded["format_version"] = 2
    return upgraded


def check_run_identity(path: Path) -> None:
    """Refuse a checkpoint that lies in a run it does not belong to (``RunDir.check_owns``)."""
    run = RunDir.of(path)
    if run.identity is not None:
        run.check_owns(path, load_checkpoint(path).get("run_id"))
