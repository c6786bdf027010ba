"""The networks of a model and what runs them: one model file or an ensemble, in PyTorch or ONNX
Runtime.

``Members`` finds the model files of a source (a run, a model file, a folder of fold runs, or
several of them), loads each with its engine, checks that they agree on what makes them one
model (target, voxel size, 2D or 3D, patch), and gives one forward function: the members'
probabilities averaged, each member given the neighbouring slices it learned from. PyTorch is
imported only where it runs a network, so that predicting with ONNX Runtime does without it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tumorseg.data.preprocess import narrowed
from tumorseg.devices import resolve_device, runs_on_cpu
from tumorseg.errors import TumorsegError
from tumorseg.inference.bundle import BUNDLED_MODELS
from tumorseg.inference.onnx import Export, onnx_path
from tumorseg.inference.sliding_window import Forward
from tumorseg.models import ModelConfig
from tumorseg.postprocessing import PostProcessing
from tumorseg.rundir import model_checkpoints

if TYPE_CHECKING:
    import torch

#: What runs the network: PyTorch, ONNX Runtime, or ONNX Runtime on the 8-bit export. "auto"
#: (predict's default) picks the 8-bit export on a CPU when one lies beside every model and ONNX
#: Runtime is installed, else PyTorch.
ENGINES = ("torch", "onnx", "onnx-int8")
#: What a model file records beside its network: its config, epoch and post-processing rule.
Recorded = tuple[ModelConfig, int, PostProcessing]


def model_paths(source: Path | Sequence[Path] | None) -> list[Path]:
    """The model files of ``source``: runs, model files or folders of fold runs; None: the bundled."""
    lacking = [path for path in BUNDLED_MODELS if not path.is_file()] if source is None else []
    if lacking:
        raise TumorsegError(f"no --model given, and this installation lacks its bundled model ({lacking[0]})")
    sources = BUNDLED_MODELS if source is None else [source] if isinstance(source, str | Path) else source
    return [path for each in sources for path in model_checkpoints(Path(each))]


def automatic_engine(paths: Sequence[Path], device: str) -> str:
    """The engine "auto" stands for: the 8-bit ONNX exports on a CPU, when every model has one beside
    it and ONNX Runtime and onnx (which checks the graph first) are installed (several times faster
    than PyTorch there, Dice within 0.001: docs/results.md); PyTorch otherwise."""
    usable = (
        runs_on_cpu(device)
        and all(onnx_path(path, int8=True).is_file() for path in paths)
        and all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))
    )
    return "onnx-int8" if usable else "torch"


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Members:
    """The networks of one model, loaded from ``paths`` for ``engine`` (one of ``ENGINES``) on
    ``device``; ``forward`` averages their probabilities."""

    def __init__(self, paths: list[Path], engine: str, device: str, ignore_rules: bool = False):
        self.paths, self.engine, self.device_name = paths, engine, device
        self.networks: list[torch.nn.Module] | None = None
        self.side_by_side: ThreadPoolExecutor | None = None  # runs the members of an ensemble at once
        if engine == "torch":
            loaded = [load_member(path, self.device) for path in paths]
            self.networks = [network for *_, network in loaded]
            self.forwards = [torch_forward(config, network, self.device) for config, *_, network in loaded]
            recorded = [(config, epoch, rule) for config, epoch, rule, _ in loaded]
        else:
            # the members run side by side, sharing the cores between them (docs/results.md)
            count, cores = len(paths), available_cores()
            threads = cores // count if 1 < count <= cores else None
            exports = [Export.of(path, engine == "onnx-int8", threads) for path in paths]
            self.forwards = [export.forward for export in exports]
            if threads:
                self.side_by_side = ThreadPoolExecutor(count, thread_name_prefix="tumorseg-member")
            recorded = [(export.config, export.epoch, export.postprocessing) for export in exports]
        self.configs = [config for config, _, _ in recorded]
        self.epoch, self.postprocessing = recorded[0][1:]
        self.check_agreement(recorded, ignore_rules)

    def check_agreement(self, recorded: list[Recorded], ignore_rules: bool) -> None:
        """Refuse members that are not one model: another target, voxel size, 2D or 3D, patch, or
        (unless another rule replaces theirs) another post-processing."""
        first, _, rule = recorded[0]
        for path, (config, _, other) in zip(self.paths[1:], recorded[1:], strict=True):
            for key in ("target", "spacing", "dims", "patch"):
                if getattr(config, key) != getattr(first, key):
                    raise TumorsegError(f"{path}: another {key} than {self.paths[0]}; an ensemble needs one")
            if other != rule and not ignore_rules:
                raise TumorsegError(
                    f"{path}: another post-processing than {self.paths[0]}; an ensemble needs one"
                )

    @functools.cached_property
    def device(self) -> torch.device:
        """The device PyTorch runs the networks on: resolved once, when PyTorch first needs it."""
        return resolve_device(self.device_name)

    @property
    def input_config(self) -> ModelConfig:
        """The config a batch for all members is cut by: the deepest member's stride pads for all,
        and slices come with the widest context, which each member narrows to its own."""
        return dataclasses.replace(
            max(self.configs, key=lambda config: config.stride),
            context=max(config.context for config in self.configs),
        )

    @property
    def network(self) -> torch.nn.Module:
        """The first network in PyTorch: the one attention maps and ONNX exports come from (read
        from the model files here when ONNX Runtime runs them)."""
        if self.networks is None:
            self.networks = [load_member(path, self.device)[-1] for path in self.paths]
        return self.networks[0]

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of a batch stacked with the widest context, averaged over the members."""
        inputs = [narrowed(batch, config.context) for config in self.configs]
        run = self.side_by_side.map if self.side_by_side else map
        return sum(run(lambda member, x: member(x), self.forwards, inputs)) / len(inputs)


def torch_forward(config: ModelConfig, network: torch.nn.Module, device: torch.device) -> Forward:
    """The probabilities one network gives a batch of its own input, in PyTorch."""
    import torch

    target = config.target_spec()

    def forward(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        with torch.inference_mode():
            scores = network(x.contiguous(memory_format=config.channels_last)).float()
            return target.activate(scores).cpu().numpy()

    return forward


def load_member(path: Path, device: torch.device) -> tuple[ModelConfig, int, PostProcessing, torch.nn.Module]:
    """One model file, read with PyTorch: its config, epoch, post-processing and network, ready on
    ``device``."""
    from tumorseg.checkpoint import load_network
    from tumorseg.models.network import network_with_weights

    state = load_network(path)
    config = ModelConfig.from_mapping(state["model_config"], f"{path} (model_config)")
    rule = PostProcessing.from_mapping(state.get("postprocessing", {}), str(path))
    network = network_with_weights(config, state["model"], str(path))
    return (
        config,
        int(state.get("epoch", 0)),
        rule,
        network.eval().to(device, memory_format=config.channels_last),
    )
