"""What a run records about where it ran: versions, device, processes, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tumorseg import __version__


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
        "device": f"{device} ({torch.cuda.get_device_name(device)})"
        if device.type == "cuda"
        else str(device),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processes": world,
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
