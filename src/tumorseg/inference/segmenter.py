"""Running a network on whole volumes: the one way validation, evaluation and prediction segment.

``segment`` takes a volume of z-scored slices (Z, 4, H, W), as the store and the preprocessing
give it, runs any forward function on it and returns the scores (Z, C, H, W): for a 2D network a
batch of slices at a time (``segment_volume``: each slice with its neighbours for a 2.5D network,
each batch zero-padded to the network's stride and cropped back), for a 3D network patch by patch
(``segment_patches``: a Gaussian-weighted sliding window), optionally averaged over flips.
``Segmenter`` is a trained model (or an ensemble of them) loaded from model files, ready to turn
volumes into probabilities and classes.

All of it works on NumPy arrays, whether PyTorch or ONNX Runtime runs the network: a forward
function takes a batch of slices and returns their scores. PyTorch is imported only where it runs
a network, so that predicting with ONNX Runtime (the default on a CPU) does without it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tumorseg.data.case import MODALITIES
from tumorseg.data.preprocess import narrowed, neighbours, with_context
from tumorseg.devices import resolve_device, runs_on_cpu
from tumorseg.errors import TumorsegError
from tumorseg.inference.bundle import BUNDLED_ANY_SEQUENCES, BUNDLED_MODELS
from tumorseg.inference.onnx import Export, onnx_path
from tumorseg.models import ModelConfig
from tumorseg.postprocess import PostProcessing
from tumorseg.rundir import model_checkpoints

if TYPE_CHECKING:
    import torch

#: Scores of a batch of the network's input (B, C, ...) -> (B, C', ...), whatever runs it.
Forward = Callable[[np.ndarray], np.ndarray]
NO_FLIPS: tuple[tuple[int, ...], ...] = ((),)
#: The four in-plane flips of test-time augmentation (the last two axes of a batch, 2D or 3D).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))
#: What runs the network: PyTorch, ONNX Runtime, or ONNX Runtime on the 8-bit export. "auto"
#: (predict's default) picks the 8-bit export on a CPU when one lies beside every model and ONNX
#: Runtime is installed, else PyTorch.
ENGINES = ("torch", "onnx", "onnx-int8")
#: Predict's default: a 2D network first segments every COARSE_STEP-th slice, then only near the
#: tumor it found: the slices closer than COARSE_STEP, within the tumor's in-plane box widened by
#: FINE_MARGIN pixels (``segment_coarse_to_fine``; chosen on the 28 shared cases, see the README).
#: Evaluation segments every slice (step 1), so it reproduces the validation of training exactly.
COARSE_STEP, FINE_MARGIN = 4, 32
#: The first pass segments each slice within its brain's box (where any sequence of the slice, or
#: of a neighbour it comes with, is non-zero) widened by BRAIN_MARGIN pixels; outside is background.
BRAIN_MARGIN = 16
#: Patches per forward pass when a 3D network slides over a volume.
PATCHES_PER_FORWARD = 2
#: Overlap of neighbouring patches of the sliding window (as nnU-Net: half a patch).
PATCH_OVERLAP = 0.5


def segment(
    forward: Forward,
    volume: np.ndarray,
    config: ModelConfig,
    batch_size: int,
    flips: tuple[tuple[int, ...], ...] = NO_FLIPS,
    step: int = 1,
    tumor: Callable[[np.ndarray], np.ndarray] | None = None,
    margin: int = FINE_MARGIN,
    brain_margin: int = BRAIN_MARGIN,
) -> np.ndarray:
    """Scores (Z, C, H, W) of the network ``config`` describes over a volume (Z, 4, H, W): slice by
    slice for a 2D network (``segment_volume``; with a ``step`` above 1, only near the ``tumor``
    found on every ``step``-th slice: ``segment_coarse_to_fine``, with ``margin`` and
    ``brain_margin``), patch by patch for a 3D one (``segment_patches``)."""
    if config.dims == 3:
        return segment_patches(forward, volume, patch=config.patch, flips=flips)
    options = {"batch_size": batch_size, "multiple": config.stride, "flips": flips, "context": config.context}
    if step > 1 and tumor is not None:
        return segment_coarse_to_fine(
            forward,
            volume,
            step=step,
            tumor=tumor,
            margin=margin,
            brain_margin=brain_margin,
            background=config.target_spec().background,
            **options,
        )
    return segment_volume(forward, volume, **options)


def flip_averaged(forward: Forward, batch: np.ndarray, flips: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """The scores of ``batch``, averaged over its ``flips`` (each flipped back)."""
    if flips == NO_FLIPS:
        return forward(batch)
    total: np.ndarray | float = 0.0
    for axes in flips:
        total = total + np.flip(forward(np.flip(batch, axes)), axes)
    return total / len(flips)


def zero_padded(batch: np.ndarray, multiple: int) -> np.ndarray:
    """``batch`` (B, C, ...) zero-padded at the ends of its spatial axes to multiples of ``multiple``."""
    pad = [(0, 0)] * 2 + [(0, (-side) % multiple) for side in batch.shape[2:]]
    return np.pad(batch, pad) if any(after for _, after in pad) else batch


def segment_patches(
    forward: Forward,
    volume: np.ndarray,
    *,
    patch: list[int],
    flips: tuple[tuple[int, ...], ...] = NO_FLIPS,
) -> np.ndarray:
    """Scores (Z, C, H, W) of a 3D ``forward`` over a volume (Z, 4, H, W): MONAI's sliding window
    of ``patch``-sized boxes overlapping by half, each weighted by a Gaussian centred on it (its
    rim, which saw least context, counts least); a volume smaller than the patch is zero-padded."""
    import torch  # here: MONAI's window slides over tensors
    from monai.inferers import sliding_window_inference  # here: importing MONAI costs a 2D predict 1.5 s

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(flip_averaged(forward, batch.numpy(), flips)))

    image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, 1, 0), dtype=np.float32))[None]
    scores = sliding_window_inference(
        image,
        roi_size=list(patch),
        sw_batch_size=PATCHES_PER_FORWARD,
        predictor=predictor,
        overlap=PATCH_OVERLAP,
        mode="gaussian",
    )
    return np.moveaxis(torch.as_tensor(scores)[0].numpy(), 1, 0)


def segment_volume(
    forward: Forward,
    volume: np.ndarray,
    *,
    batch_size: int,
    multiple: int,
    flips: tuple[tuple[int, ...], ...] = NO_FLIPS,
    context: int = 0,
    z: np.ndarray | None = None,
) -> np.ndarray:
    """Scores (Z, C, H, W) of ``forward`` over a volume (Z, 4, H, W) (or over its slices ``z``
    only: (len(z), C, H, W)), ``batch_size`` slices at a time.

    Each slice comes with ``context`` neighbours on either side (``with_context``); each batch is
    zero-padded to a multiple of ``multiple`` and the scores cropped back; with several
    ``flips``, the scores of each flipped batch are flipped back and averaged.
    """
    depth, _, height, width = volume.shape
    z = np.arange(depth) if z is None else z
    out: np.ndarray | None = None
    for start in range(0, len(z), batch_size):
        chunk = np.asarray(with_context(volume, context, z[start : start + batch_size]), dtype=np.float32)
        scores = flip_averaged(forward, zero_padded(chunk, multiple), flips)[..., :height, :width]
        if out is None:
            out = np.empty((len(z), *scores.shape[1:]), dtype=scores.dtype)
        out[start : start + len(chunk)] = scores
    return out


def grown(start: int, stop: int, size: int, margin: int, multiple: int) -> slice:
    """[start, stop) widened by ``margin`` on either side and on to a multiple of ``multiple``,
    within [0, size)."""
    start, stop = max(start - margin, 0), min(stop + margin, size)
    length = min(-(-(stop - start) // multiple) * multiple, size)
    stop = min(start + length, size)
    return slice(stop - length, stop)


def box_around(mask: np.ndarray, margin: int, multiple: int = 1) -> tuple[slice, slice]:
    """The rows and columns of the box of a mask's (H, W) pixels, widened by ``margin`` on each
    side and on to a multiple of ``multiple`` (``grown``), within the mask."""
    rows, columns = (np.flatnonzero(mask.any(axis)) for axis in (1, 0))
    return (
        grown(rows[0], rows[-1] + 1, mask.shape[0], margin, multiple),
        grown(columns[0], columns[-1] + 1, mask.shape[1], margin, multiple),
    )


def segment_within_brain(
    forward: Forward,
    volume: np.ndarray,
    *,
    z: np.ndarray,
    background: np.ndarray,
    multiple: int,
    context: int = 0,
    brain_margin: int = BRAIN_MARGIN,
    **options: object,
) -> np.ndarray:
    """Scores (len(z), C, H, W) of ``forward`` on the slices ``z`` of a volume (Z, 4, H, W), each
    segmented alone within the box of its brain (where any sequence is non-zero, in it or in a
    neighbour it comes with), widened by ``brain_margin`` pixels and on to a multiple of
    ``multiple``; ``background`` (C,) elsewhere, and on a slice without brain.

    The network's input is zero outside the brain anyway, and a slice's brain is smaller than the
    volume's box that the crop of preprocessing keeps (on the 28 shared cases about 80 % of its
    pixels, with 16 pixels of margin; README "Fast by default")."""
    depth, _, height, width = volume.shape
    out = np.empty((len(z), len(background), height, width), np.float32)
    out[:] = background[:, None, None]
    for index, at in enumerate(np.asarray(z)):
        brain = (volume[neighbours(np.array([at]), depth, context)[0]] != 0).any((0, 1))
        if not brain.any():
            continue
        rows, columns = box_around(brain, brain_margin, multiple)
        scores = segment_volume(forward, volume[..., rows, columns], z=np.array([at]), multiple=multiple,
                                context=context, **options)  # fmt: skip
        out[index, :, rows, columns] = scores[0]
    return out


def segment_coarse_to_fine(
    forward: Forward,
    volume: np.ndarray,
    *,
    step: int,
    tumor: Callable[[np.ndarray], np.ndarray],
    background: np.ndarray,
    margin: int = FINE_MARGIN,
    brain_margin: int = BRAIN_MARGIN,
    **options: object,
) -> np.ndarray:
    """``segment_volume`` that segments only near the tumor: every ``step``-th slice first (each
    within its brain widened by ``brain_margin`` pixels: ``segment_within_brain``, ``background``
    outside), then the slices closer than ``step`` to one where ``tumor`` (scores -> tumor mask)
    finds some, within the in-plane box of all tumor found, widened by ``margin`` pixels.

    Everything else takes the scores of the nearest slice of the first pass, which decode to no
    tumor there: a skipped slice lies between two tumor-free ones, and outside the box no slice of
    the first pass found tumor. Only a tumor thinner than ``step`` slices lying wholly between two
    tumor-free ones can be missed."""
    depth = len(volume)
    coarse = np.unique(np.r_[np.arange(0, depth, step), depth - 1])
    scores = segment_within_brain(
        forward, volume, z=coarse, background=background, brain_margin=brain_margin, **options
    )
    out = scores[np.abs(np.arange(depth)[:, None] - coarse[None]).argmin(1)]
    mask = tumor(scores)
    near = np.zeros(depth, bool)
    for z in coarse[mask.any((1, 2))]:
        near[max(z - step + 1, 0) : z + step] = True
    near[coarse] = False
    if near.any():
        rows, columns = box_around(mask.any(0), margin)
        fine = np.flatnonzero(near)
        out[fine, :, rows, columns] = segment_volume(forward, volume[..., rows, columns], z=fine, **options)
    return out


class Segmenter:
    """A trained model from a run directory (its best.pt) or a checkpoint (None: the ensemble that ships
    with tumorseg; ``for_sequences`` then swaps in its sibling trained for missing sequences), ready
    to segment.

    ``probabilities`` returns sigmoid region probabilities (WT, TC, ET) or softmax class
    probabilities, as the model's target says; ``classes`` decodes them, and ``segmentation``
    applies the post-processing the model file holds (or ``postprocessing``, to measure another).
    ``engine="onnx"`` runs the model exported by ``tumorseg export`` with ONNX Runtime instead of
    PyTorch (``"onnx-int8"``: its 8-bit export; ``"auto"``: ``automatic_engine``), and reads what
    it needs of the model file from the export, so that PyTorch is never imported. A ``step`` above
    1 segments a 2D model's volumes coarse to fine (``segment_coarse_to_fine``, with ``margin`` and
    ``brain_margin``).
    ``absent`` sequences are zeroed in every volume it segments (to measure a model without them).
    """

    def __init__(
        self,
        source: Path | Sequence[Path] | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        tta: bool = False,
        engine: str = "torch",
        absent: tuple[str, ...] = (),
        postprocessing: PostProcessing | None = None,
        step: int = 1,
        margin: int = FINE_MARGIN,
        brain_margin: int = BRAIN_MARGIN,
    ):
        if engine not in (*ENGINES, "auto"):
            raise TumorsegError(f"unknown engine {engine!r}; choose auto, {', '.join(ENGINES)}")
        lacking = [path for path in BUNDLED_MODELS if not path.is_file()] if source is None else []
        if lacking:
            raise TumorsegError(
                f"no --model given, and this installation lacks its bundled model ({lacking[0]})"
            )
        sources = BUNDLED_MODELS if source is None else [source] if isinstance(source, str | Path) else source
        self.paths = [path for each in sources for path in model_checkpoints(Path(each))]
        self.bundled = source is None
        self.options = {"device": device, "batch_size": batch_size, "tta": tta, "engine": engine,
                        "postprocessing": postprocessing, "step": step, "margin": margin,
                        "brain_margin": brain_margin}  # fmt: skip
        self.sibling: Segmenter | None = None
        self.engine = self.automatic_engine() if engine == "auto" else engine
        self.models: list[torch.nn.Module] | None = None
        self.side_by_side: ThreadPoolExecutor | None = None  # runs the models of an ensemble at once
        if self.engine == "torch":
            members = [load_member(path, self.device) for path in self.paths]
            self.models = [model for *_, model in members]
            self.member_forwards = [self.torch_forward(config, model) for config, *_, model in members]
            recorded = [(config, epoch, rule) for config, epoch, rule, _ in members]
        else:
            # the models of an ensemble run side by side, sharing the cores (1.98 s a patient against
            # 2.17 s one after the other on all of them, 2 cores, same scores: README)
            count, cores = len(self.paths), available_cores()
            threads = cores // count if 1 < count <= cores else None
            exports = [Export.of(path, self.engine == "onnx-int8", threads) for path in self.paths]
            self.member_forwards = [export.forward for export in exports]
            if threads:
                self.side_by_side = ThreadPoolExecutor(count, thread_name_prefix="tumorseg-member")
            recorded = [(export.config, export.epoch, export.postprocessing) for export in exports]
        self.configs = [config for config, _, _ in recorded]
        self.config, self.epoch, rule = recorded[0]
        for path, (config, _, other) in zip(self.paths[1:], recorded[1:], strict=True):
            for key in ("target", "spacing", "dims", "patch"):
                if getattr(config, key) != getattr(self.config, key):
                    raise TumorsegError(f"{path}: another {key} than {self.path}; an ensemble needs one")
            if other != rule and postprocessing is None:
                raise TumorsegError(
                    f"{path}: another post-processing than {self.path}; an ensemble needs one"
                )
        self.target = self.config.target_spec()
        self.postprocessing = postprocessing or rule
        self.batch_size = batch_size
        self.flips = TTA_FLIPS if tta else NO_FLIPS
        self.step, self.margin, self.brain_margin = step, margin, brain_margin
        if self.step < 1:
            raise TumorsegError(f"--coarse-step must be at least 1, not {step}")
        self.check_absent(absent, "--missing")
        self.absent = tuple(m for m in MODALITIES if m in absent)

    def automatic_engine(self) -> str:
        """The engine "auto" stands for: the 8-bit ONNX exports on a CPU, when every model (one, or
        each of an ensemble) has one beside it and ONNX Runtime and onnx (which checks the graph
        first) are installed (about 3x faster than PyTorch there, Dice within 0.001: see the
        README); PyTorch otherwise."""
        usable = (
            runs_on_cpu(self.options["device"])
            and all(onnx_path(path, int8=True).is_file() for path in self.paths)
            and all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))
        )
        return "onnx-int8" if usable else "torch"

    @functools.cached_property
    def device(self) -> torch.device:
        """The device PyTorch runs the networks on: resolved once, when PyTorch first needs it (each
        batch's forward pass moves its input there)."""
        return resolve_device(self.options["device"])

    @property
    def path(self) -> Path:
        """The (first) model file."""
        return self.paths[0]

    @property
    def model(self) -> torch.nn.Module:
        """The (first) network in PyTorch: the one attention maps and ONNX exports come from (read
        from the model files here when ONNX Runtime runs them)."""
        if self.models is None:
            self.models = [load_member(path, self.device)[-1] for path in self.paths]
        return self.models[0]

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
        notes += [f"slices searched every {self.step}"] if self.step > 1 and self.config.dims == 2 else []
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
        """Refuse missing sequences unless the model learned to segment without them."""
        unknown = sorted(set(absent) - set(MODALITIES))
        if unknown:
            raise TumorsegError(
                f"{where}: unknown sequence {', '.join(unknown)} (one of {', '.join(MODALITIES)})"
            )
        if set(absent) >= set(MODALITIES):
            raise TumorsegError(f"{where}: every sequence is missing; at least one is needed")
        lacking = [
            path for path, config in zip(self.paths, self.configs, strict=True) if not config.modality_dropout
        ]
        if absent and lacking:
            raise TumorsegError(
                f"{where}: {', '.join(m.upper() for m in absent)} missing, and {lacking[0]} was trained "
                "on all four sequences only (no --modality-dropout), so it cannot segment without them; "
                "give all four, or use a model trained with --modality-dropout"
            )

    def torch_forward(self, config: ModelConfig, model: torch.nn.Module) -> Forward:
        """The probabilities one network gives a batch of its own input, in PyTorch."""
        import torch

        target = config.target_spec()

        def forward(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            with torch.inference_mode():
                scores = model(x.contiguous(memory_format=config.channels_last)).float()
                return target.activate(scores).cpu().numpy()

        return forward

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of a batch stacked with the widest context, averaged over the models of an
        ensemble, each given the neighbouring slices it learned from (``member_forwards``: one per
        model, in PyTorch or ONNX Runtime; side by side when ``side_by_side``)."""
        inputs = [narrowed(batch, config.context) for config in self.configs]
        run = self.side_by_side.map if self.side_by_side else map
        return sum(run(lambda member, x: member(x), self.member_forwards, inputs)) / len(inputs)

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
        # members agree on all but their widths and contexts: the deepest one's stride pads for
        # all, and slices come with the widest context, which each member narrows to its own
        config = dataclasses.replace(
            max(self.configs, key=lambda config: config.stride),
            context=max(config.context for config in self.configs),
        )
        scores = segment(
            self.forward,
            self.without_absent(volume),
            config,
            self.batch_size,
            self.flips,
            self.step,
            self.tumor,
            self.margin,
            self.brain_margin,
        )
        return scores

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
        core = self.core_probability(probabilities) if rule.min_core_probability else None
        grows = rule.tumor_growth and volume is not None  # else apply says what growth lacks
        evidence = (self.region_probabilities(probabilities), volume) if grows else None
        return rule.apply(self.classes(probabilities), voxel_ml, core, evidence)

    def region_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """Probabilities (Z, C, H, W) -> the probabilities (Z, 3, H, W) of WT, TC and ET."""
        return self.target.region_probabilities(probabilities)

    def core_probability(self, probabilities: np.ndarray) -> np.ndarray:
        """Probabilities (Z, C, H, W) -> the probability (Z, H, W) of tumor core."""
        return self.target.core_probability(probabilities)

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
            .to(self.device)
            .contiguous(memory_format=self.config.channels_last)
        )
        with torch.inference_mode():
            _, maps = self.model(x, return_attention=True)
        return maps[0][0, 0].float().cpu().numpy()


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_member(path: Path, device: torch.device) -> tuple[ModelConfig, int, PostProcessing, torch.nn.Module]:
    """One model file, read with PyTorch: its config, epoch, post-processing and network, ready on
    ``device``."""
    from tumorseg.checkpoint import load_network
    from tumorseg.models.network import network_with_weights

    state = load_network(path)
    config = ModelConfig.from_mapping(state["model_config"], f"{path} (model_config)")
    rule = PostProcessing.from_mapping(state.get("postprocessing", {}), str(path))
    model = network_with_weights(config, state["model"], str(path))
    return (
        config,
        int(state.get("epoch", 0)),
        rule,
        model.eval().to(device, memory_format=config.channels_last),
    )
