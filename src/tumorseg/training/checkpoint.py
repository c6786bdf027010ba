"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)`` only.

A checkpoint holds plain containers, numbers, strings and tensors, nothing that needs
unpickling code, so a file from elsewhere cannot run anything when loaded.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from tumorseg import __version__
from tumorseg.errors import TumorsegError

FORMAT = "tumorseg-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` beside ``path`` and rename it over ``path``: the old file stays valid on failure."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "tumorseg_version": __version__, **state}
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        raise TumorsegError(
            f"{path}: could not write checkpoint ({err}); the previous one is unchanged"
        ) from None


def load_checkpoint(path: Path) -> dict:
    """Read a tumorseg checkpoint safely, or say why it is not one."""
    path = Path(path)
    if not path.is_file():
        raise TumorsegError(f"{path}: checkpoint does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"(?i)[^\n]*unsupported global[^\n]*", str(err))
        if found:
            raise TumorsegError(
                f"{path}: refused to load: it holds objects other than tensors and plain data ({found[0]})"
            ) from None
        raise TumorsegError(f"{path}: not a readable checkpoint (not a torch.save file)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TumorsegError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TumorsegError(f"{path}: not a tumorseg checkpoint")
    if state.get("format_version", 0) > FORMAT_VERSION:
        version = state["format_version"]
        raise TumorsegError(
            f"{path}: checkpoint format {version} is newer than this tumorseg reads ({FORMAT_VERSION})"
        )
    return state
