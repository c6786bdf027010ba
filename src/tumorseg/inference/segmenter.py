"""A trained model ready to segment: the one object validation, evaluation and prediction ask.

``Segmenter`` composes the model's networks (``members``: one model file or an ensemble, in
PyTorch or ONNX Runtime), the pure functions that run them over a volume (``sliding_window``:
slice by slice, coarse to fine, or patch by patch, with test-time flips), what the model's target
says its outputs mean (``labels.Target``) and the post-processing its file holds
(``postprocessing``). Evaluation asks it for probabilities, a segmentation, an uncertainty and
attention maps; it builds nothing itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tumorseg.data.case import MODALITIES
from tumorseg.data.preprocess import with_context
from tumorseg.errors import TumorsegError
from tumorseg.inference.bundle import BUNDLED_ANY_SEQUENCES
from tumorseg.inference.members import ENGINES, Members, automatic_engine, model_paths
from tumorseg.inference.sliding_window import EVERY_SLICE, NO_FLIPS, TTA_FLIPS, Search, segment
from tumorseg.labels import REGION_NAMES, unseen_regions
from tumorseg.postprocessing import PostProcessing

if TYPE_CHECKING:
    import torch


class Segmenter:
    """A trained model from a run directory (its best.pt), a model file, a folder of fold runs, or
    several of them (an ensemble, their probabilities averaged); None: the ensemble that ships with
    tumorseg, whose ``for_sequences`` swaps in its sibling trained for missing sequences.

    ``engine``: one of ``members.ENGINES``, or "auto" (``members.automatic_engine``); ONNX Runtime
    reads what it needs of the model file from the export, so that PyTorch is never imported.
    ``tta`` averages over the four in-plane flips; ``search`` says how a 2D model's volume is
    searched (``sliding_window.Search``); ``absent`` sequences are zeroed in every volume it
    segments (to measure a model without them); ``postprocessing`` replaces the model file's rule.
    """

    def __init__(
        self,
        source: Path | Sequence[Path] | None = None,
        *,
        device: str = "cpu",
        engine: str = "torch",
        batch_size: int = 32,
        tta: bool = False,
        search: Search = EVERY_SLICE,
        absent: tuple[str, ...] = (),
        postprocessing: PostProcessing | None = None,
    ):
        if engine not in (*ENGINES, "auto"):
            raise TumorsegError(f"unknown engine {engine!r}; choose auto, {', '.join(ENGINES)}")
        self.paths = model_paths(source)
        self.bundled = source is None
        self.options = {"device": device, "engine": engine, "batch_size": batch_size, "tta": tta,
                        "search": search, "postprocessing": postprocessing}  # fmt: skip
        self.engine = automatic_engine(self.paths, device) if engine == "auto" else engine
        self.members = Members(self.paths, self.engine, device, ignore_rules=postprocessing is not None)
        self.config, self.configs, self.epoch = (
            self.members.configs[0],
            self.members.configs,
            self.members.epoch,
        )
        self.target = self.config.target_spec()
        self.postprocessing = postprocessing or self.members.postprocessing
        self.batch_size, self.search = batch_size, search
        self.flips = TTA_FLIPS if tta else NO_FLIPS
        self.sibling: Segmenter | None = None
        self.check_absent(absent, "--missing")
        self.absent = tuple(m for m in MODALITIES if m in absent)

    @property
    def path(self) -> Path:
        """The (first) model file."""
        return self.paths[0]

    @property
    def model(self) -> torch.nn.Module:
        """The (first) network in PyTorch: the one attention maps and ONNX exports come from."""
        return self.members.network

    @property
    def description(self) -> str:
        """Which model this is, as reports name it."""
        notes = [f"epoch {self.epoch}"] if len(self.paths) == 1 else []
        notes += (
            [{"onnx": "ONNX Runtime", "onnx-int8": "8-bit ONNX Runtime"}[self.engine]]
            if self.engine != "torch"
            else []
        )
        notes += ["4-flip TTA"] if len(self.flips) > 1 else []
        notes += (
            [f"slices searched every {self.search.step}"]
            if self.search.step > 1 and self.config.dims == 2
            else []
        )
        notes += [f"without {', '.join(m.upper() for m in self.absent)}"] if self.absent else []
        if self.postprocessing != PostProcessing():
            notes.append(f"post-processing: {self.postprocessing}")
        names = ", ".join(map(str, self.paths))
        name = names if len(self.paths) == 1 else f"ensemble of {len(self.paths)} models: {names}"
        return f"{name} ({'; '.join(notes)})" if notes else name

    def for_sequences(self, absent: tuple[str, ...]) -> Segmenter:
        """The segmenter for a case lacking ``absent``: this one, or for the bundled model, which
        learned from all four sequences, the bundled model trained to do without some."""
        if not (absent and self.bundled and not self.config.modality_dropout):
            return self
        if self.sibling is None:
            self.sibling = Segmenter(BUNDLED_ANY_SEQUENCES, absent=self.absent, **self.options)
        return self.sibling

    def check_absent(self, absent: tuple[str, ...], where: str) -> None:
        """Refuse missing sequences unless the model learned to segment without them, and a case
        whose sequences show no tumor region at all (T1 alone: ``labels.SHOWN_BY``)."""
        unknown = sorted(set(absent) - set(MODALITIES))
        if unknown:
            raise TumorsegError(
                f"{where}: unknown sequence {', '.join(unknown)} (one of {', '.join(MODALITIES)})"
            )
        if set(absent) >= set(MODALITIES):
            raise TumorsegError(f"{where}: every sequence is missing; at least one is needed")
        if set(unseen_regions(absent)) == set(REGION_NAMES):
            given = ", ".join(m.upper() for m in MODALITIES if m not in absent)
            raise TumorsegError(
                f"{where}: only {given} given, on which no tumor region shows (the whole tumor is "
                "outlined on FLAIR or T2, the core and the enhancing tumor on T1CE), so it is not "
                "segmented; give FLAIR, T2 or T1CE too"
            )
        lacking = [
            path for path, config in zip(self.paths, self.configs, strict=True) if not config.modality_dropout
        ]
        if absent and lacking:
            raise TumorsegError(
                f"{where}: {', '.join(m.upper() for m in absent)} missing, and {lacking[0]} was trained "
                "on all four sequences only (no --modality-dropout), so it cannot segment without them; "
                "give all four, or use a model trained with --modality-dropout"
            )

    def tumor(self, scores: np.ndarray) -> np.ndarray:
        """Where scores (Z, C, H, W) hold tumor (Z, H, W), as this model decodes them."""
        return self.target.decode(scores) > 0

    def without_absent(self, image: np.ndarray) -> np.ndarray:
        """``image`` (..., 4, H, W) with the channels of the absent sequences zeroed (a copy)."""
        if not self.absent:
            return image
        image = image.copy()
        image[..., [MODALITIES.index(m) for m in self.absent], :, :] = 0
        return image

    def probabilities(self, volume: np.ndarray) -> np.ndarray:
        """Z-scored slices (Z, 4, H, W) -> probabilities (Z, C, H, W) float32."""
        return segment(
            self.members.forward,
            self.without_absent(volume),
            self.members.input_config,
            self.batch_size,
            self.flips,
            self.search,
            self.tumor,
        )

    def classes(self, probabilities: np.ndarray) -> np.ndarray:
        """Probabilities (Z, C, H, W) -> internal classes (Z, H, W) uint8."""
        return self.target.decode(probabilities).astype(np.uint8)

    def segmentation(
        self, probabilities: np.ndarray, voxel_ml: float, volume: np.ndarray | None
    ) -> np.ndarray:
        """Probabilities (Z, C, H, W) of ``volume`` (Z, 4, H, W) on a grid of ``voxel_ml`` voxels ->
        the model's answer: its classes (Z, H, W) after its post-processing (which needs ``volume``
        only if it grows the tumor)."""
        rule = self.postprocessing
        core = self.target.core_probability(probabilities) if rule.min_core_probability else None
        grows = rule.tumor_growth and volume is not None  # else apply says what growth lacks
        evidence = (self.target.region_probabilities(probabilities), volume) if grows else None
        return rule.apply(self.classes(probabilities), voxel_ml, core, evidence)

    def uncertainty(self, probabilities: np.ndarray) -> np.ndarray:
        """Probabilities (Z, C, H, W) -> voxel-wise uncertainty (Z, H, W) float32 in [0, 1]."""
        return self.target.uncertainty(probabilities)

    def attention(self, volume: np.ndarray, z: int) -> np.ndarray | None:
        """The finest gate's coefficients on slice ``z`` of a volume (Z, 4, H, W); None for MONAI's
        network and for a 3D one."""
        import torch

        from tumorseg.models.attention_unet import AttentionUNet

        if not isinstance(self.model, AttentionUNet) or self.config.dims == 3:
            return None
        image = with_context(self.without_absent(volume), self.config.context, np.array([z]))
        x = (
            torch.from_numpy(np.ascontiguousarray(image))
            .to(self.members.device)
            .contiguous(memory_format=self.config.channels_last)
        )
        with torch.inference_mode():
            _, maps = self.model(x, return_attention=True)
        return maps[0][0, 0].float().cpu().numpy()
