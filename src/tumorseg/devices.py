"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from tumorseg.errors import TumorsegError


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TumorsegError(
            f"device {name!r} asked for, but this machine has no CUDA device (use --device cpu)"
        )
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise TumorsegError(f"device {name!r} is not a device (auto, cpu, cuda or cuda:N)") from err
