"""Which torch device a command runs on, and whether this process is a torchrun job's rank 0.

PyTorch is imported only when a device is made: predicting on a CPU with ONNX Runtime never needs
it, and importing it takes longer than segmenting a patient.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tumorseg.errors import TumorsegError

if TYPE_CHECKING:
    import torch

#: Where the NVIDIA (CUDA) and AMD (ROCm) drivers show themselves on Linux; nvidia-smi elsewhere.
GPU_DRIVERS = (Path("/proc/driver/nvidia"), Path("/dev/kfd"))


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU; asking for CUDA without one is an error."""
    import torch

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


def runs_on_cpu(name: str) -> bool:
    """Whether the device ``name`` is the CPU, asking PyTorch only when ``auto`` might be a GPU: with
    no GPU driver on the machine, PyTorch would find no GPU either."""
    if name == "auto" and (shutil.which("nvidia-smi") or any(path.exists() for path in GPU_DRIVERS)):
        return resolve_device(name).type == "cpu"
    return name in ("auto", "cpu")


def is_main_process() -> bool:
    """Whether this process is rank 0 of a torchrun job (or the only one), read from what torchrun
    sets, before any process group exists and without PyTorch: rank 0 alone writes and locks."""
    return int(os.environ.get("RANK", "0")) == 0
