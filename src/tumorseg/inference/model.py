"""Loading a trained model from a run directory or a checkpoint, and running it on volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from tumorseg.data.case import MODALITIES
from tumorseg.errors import TumorsegError
from tumorseg.models import build_model
from tumorseg.training.checkpoint import load_checkpoint
from tumorseg.training.config import from_mapping
from tumorseg.training.objective import decode, out_channels


def checkpoint_path(source: Path) -> Path:
    """A run directory means its best.pt (else last.pt); a file means itself."""
    source = Path(source)
    if source.is_dir():
        for name in ("best.pt", "last.pt"):
            if (source / name).is_file():
                return source / name
        raise TumorsegError(f"{source}: no best.pt or last.pt in this run directory")
    return source


class Segmenter:
    """A trained network with what it needs to turn normalized slices into probabilities.

    ``probabilities`` takes a volume (Z, 4, H, W) of z-scored slices, as the store holds them,
    and returns (Z, C, H, W) float32: sigmoid region probabilities (WT, TC, ET) or softmax class
    probabilities, depending on what the model was trained on.
    """

    def __init__(self, source: Path, device: str = "cpu", batch_size: int = 32, tta: bool = False):
        path = checkpoint_path(source)
        state = load_checkpoint(path)
        if "model" not in state or "config" not in state:
            raise TumorsegError(f"{path}: checkpoint lacks model weights or config")
        modalities = tuple(state.get("modalities", MODALITIES))
        if modalities != MODALITIES:
            wanted = list(MODALITIES)
            raise TumorsegError(f"{path}: model was trained on modalities {list(modalities)}, not {wanted}")
        self.config = from_mapping(state["config"], f"{path} (config)")
        self.path = path
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.tta = tta
        model = build_model(
            self.config.model,
            out_channels=out_channels(self.config.target),
            channels=self.config.channels,
            norm=self.config.norm,
            deep_supervision=self.config.deep_supervision,
        )
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise TumorsegError(
                f"{path}: weights do not fit the model its config describes ({first})"
            ) from None
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)

    @property
    def target(self) -> str:
        return self.config.target

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.target == "regions" else F.softmax(logits, dim=1)

    @torch.inference_mode()
    def probabilities(self, volume: np.ndarray) -> np.ndarray:
        out = np.empty((volume.shape[0], out_channels(self.target), *volume.shape[2:]), dtype=np.float32)
        flips = [(), (2,), (3,), (2, 3)] if self.tta else [()]
        for start in range(0, volume.shape[0], self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(volume[start : start + self.batch_size])).to(
                self.device
            )
            x = x.contiguous(memory_format=torch.channels_last)
            total = None
            for dims in flips:
                probs = self._activate(self.model(x.flip(dims) if dims else x).float())
                probs = probs.flip(dims) if dims else probs
                total = probs if total is None else total + probs
            out[start : start + len(x)] = (total / len(flips)).cpu().numpy()
        return out


def probabilities_to_classes(probabilities: np.ndarray, target: str) -> np.ndarray:
    """(Z, C, H, W) probabilities -> (Z, H, W) internal classes (uint8)."""
    return decode(torch.from_numpy(probabilities), target, threshold=0.5).numpy().astype(np.uint8)
