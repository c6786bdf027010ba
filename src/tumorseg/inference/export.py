"""``tumorseg export``: a checkpoint's network as an ONNX graph, for ONNX Runtime (``onnx.py``).

The graph holds the network with its output activation; its metadata holds what inference needs
of the checkpoint (``onnx.export_metadata``). ``export_onnx(..., calibration=STORE)`` writes the
graph quantized to 8-bit integers instead (ONNX Runtime's static quantization: int8 weights per
channel, uint8 activations whose ranges are measured on slices of the store's cases), which
``--engine onnx-int8`` runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tumorseg import __version__
from tumorseg.data.preprocess import with_context
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError
from tumorseg.inference.onnx import export_metadata, graph_digest
from tumorseg.inference.segmenter import Segmenter
from tumorseg.inference.sliding_window import zero_padded
from tumorseg.models import ModelConfig

OPSET = 17
#: Cases and slices per case whose activations calibrate an 8-bit export.
CALIBRATION_CASES, CALIBRATION_SLICES = 8, 8


class WithActivation(nn.Module):
    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.model = segmenter.model
        self.activate = segmenter.target.activate

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.activate(self.model(image))


def export_onnx(segmenter: Segmenter, out: Path, calibration: Path | None = None) -> Path:
    """Write the segmenter's model (with its output activation) as ONNX, atomically; quantized to
    8-bit integers with activation ranges measured on ``calibration`` (a store) when given."""
    try:
        import onnx  # noqa: F401 (checked here, used by write_graph)
    except ImportError as err:
        raise TumorsegError("export needs the onnx package (not installed): pip install onnx") from err

    model = WithActivation(segmenter).eval().to("cpu", memory_format=torch.contiguous_format)
    config = segmenter.config
    example = torch.zeros(1, config.in_channels, *[2 * config.stride] * config.dims)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        write_graph(model, example, tmp, segmenter)
        if calibration is not None:
            quantize(tmp, calibration, segmenter.config)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; removed here on any failure or interrupt
    return out


def calibration_batches(store_path: Path, config: ModelConfig) -> list[dict[str, np.ndarray]]:
    """Inputs whose activations set the 8-bit ranges: CALIBRATION_SLICES slices (with their
    neighbours for a 2.5D model; a 3D model: one patch from the middle) of up to CALIBRATION_CASES
    cases spread over the store, each padded as inference pads it."""
    with Store(store_path) as store:
        ids = store.case_ids
        chosen = [ids[i] for i in np.linspace(0, len(ids) - 1, min(len(ids), CALIBRATION_CASES)).astype(int)]
        batches = []
        for case_id in chosen:
            volume, _ = store.read_volume(case_id)
            if config.dims == 3:
                centre = np.asarray(volume.shape)[[0, 2, 3]] // 2
                box = [
                    slice(max(0, c - p // 2), c - p // 2 + p)
                    for c, p in zip(centre, config.patch, strict=True)
                ]
                patch = np.moveaxis(volume[box[0], :, box[1], box[2]], 1, 0)[None]
                batches.append(zero_padded(patch, config.stride))
                continue
            depth = len(volume)
            for z in np.linspace(depth // 4, 3 * depth // 4, CALIBRATION_SLICES).astype(int):
                image = with_context(volume, config.context, np.array([z]))
                batches.append(zero_padded(image, config.stride))
    return [{"image": np.ascontiguousarray(batch, dtype=np.float32)} for batch in batches]


def quantize(path: Path, calibration: Path, config: ModelConfig) -> None:
    """Rewrite the ONNX graph at ``path`` with int8 weights (per channel) and uint8 activations,
    calibrated on ``calibration``; its metadata carries over and says so."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, batches: list[dict[str, np.ndarray]]):
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    batches = calibration_batches(calibration, config)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    prepared, quantized = path.with_name(path.name + ".prepared"), path.with_name(path.name + ".int8")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # ONNX Runtime's recommended first step: shapes inferred and the graph optimized
            quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(quantized),
                Reader(batches),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        graph = onnx.load(str(quantized))
        metadata["quantized"] = f"int8, calibrated on {len(batches)} inputs of {calibration.name}"
        metadata["graph_sha256"] = graph_digest(graph)  # the quantized graph's own
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(path))
    finally:
        prepared.unlink(missing_ok=True)
        quantized.unlink(missing_ok=True)


def write_graph(model: nn.Module, example: torch.Tensor, path: Path, segmenter: Segmenter) -> None:
    """Export ``model`` to ``path`` and record in its metadata the checkpoint it comes from."""
    import onnx

    names = ("height", "width") if example.ndim == 4 else ("depth", "height", "width")
    dynamic = {0: "batch", **{axis: name for axis, name in enumerate(names, start=2)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_axes={"image": dynamic, "probabilities": dynamic},
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(path))
    recorded = export_metadata(segmenter.path, segmenter.config, segmenter.epoch, segmenter.postprocessing)
    recorded["graph_sha256"] = graph_digest(graph)
    for key, value in {"tumorseg_version": __version__, **recorded}.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
