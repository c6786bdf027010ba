"""Loading a trained model from a run directory or a checkpoint, and running it on volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from tumorseg.data.case import MODALITIES
from tumorseg.errors import TumorsegError
from tumorseg.models import build_model
from tumorseg.models.blocks import pad_to_multiple
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
    probabilities, depending on what the model was trained on. Slices are zero-padded to a
    multiple of the network's total stride and cropped back. ``engine="onnx"`` runs the model
    exported by ``tumorseg export`` with ONNX Runtime instead of PyTorch.
    """

    def __init__(
        self,
        source: Path,
        device: str = "cpu",
        batch_size: int = 32,
        tta: bool = False,
        engine: str = "torch",
    ):
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
        self.epoch = int(state.get("epoch", 0))
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.tta = tta
        self.multiple = 2 ** (len(self.config.channels) - 1)
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
        self.session = None
        if engine == "onnx":
            from tumorseg.inference.onnx import open_session

            self.session = open_session(onnx_path(path), self)
        elif engine != "torch":
            raise TumorsegError(f"unknown engine {engine!r}; choose torch or onnx")

    @property
    def target(self) -> str:
        return self.config.target

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.target == "regions" else F.softmax(logits, dim=1)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of a padded batch (B, 4, H, W)."""
        if self.session is not None:
            return self.session.run(None, {"image": batch})[0]
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=torch.channels_last)
        return self.activate(self.model(x).float()).cpu().numpy()

    @torch.inference_mode()
    def probabilities(self, volume: np.ndarray) -> np.ndarray:
        depth, _, height, width = volume.shape
        out = np.empty((depth, out_channels(self.target), height, width), dtype=np.float32)
        flips = [(), (2,), (3,), (2, 3)] if self.tta else [()]
        for start in range(0, depth, self.batch_size):
            chunk = torch.from_numpy(
                np.ascontiguousarray(volume[start : start + self.batch_size], np.float32)
            )
            batch = pad_to_multiple(chunk, self.multiple).numpy()
            total = 0
            for axes in flips:
                flipped = np.ascontiguousarray(np.flip(batch, axes)) if axes else batch
                probabilities = self._run(flipped)
                total = total + (np.flip(probabilities, axes) if axes else probabilities)
            out[start : start + len(batch)] = (total / len(flips))[..., :height, :width]
        return out


def onnx_path(checkpoint: Path) -> Path:
    """Where ``tumorseg export`` writes the ONNX model of a checkpoint: beside it, .onnx."""
    return checkpoint.with_suffix(".onnx")


def probabilities_to_classes(probabilities: np.ndarray, target: str) -> np.ndarray:
    """(Z, C, H, W) probabilities -> (Z, H, W) internal classes (uint8)."""
    return decode(torch.from_numpy(probabilities), target, threshold=0.5).numpy().astype(np.uint8)
