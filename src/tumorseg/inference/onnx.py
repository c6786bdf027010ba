"""Export to ONNX and run with ONNX Runtime.

The exported graph takes z-scored slices (B, 4, H, W) (a 3D network: patches (B, 4, D, H, W)),
sizes multiples of the network's total stride (``segment`` pads), and returns probabilities, so
the two engines share everything but the forward pass. Its metadata holds the SHA-256 of the
checkpoint it came from, so an export of any other checkpoint (a newer best.pt, another run's) is
refused.

``export_onnx(..., calibration=STORE)`` writes the graph quantized to 8-bit integers instead
(ONNX Runtime's static quantization: int8 weights per channel, uint8 activations whose ranges are
measured on slices of the store's cases), which ``--engine onnx-int8`` runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from tumorseg import __version__
from tumorseg.checkpoint import MAX_CHECKPOINT_BYTES
from tumorseg.data.preprocess import with_context
from tumorseg.data.store import Store
from tumorseg.errors import TumorsegError, first_line, short
from tumorseg.inference.segmenter import Segmenter, file_digest
from tumorseg.models import ModelConfig
from tumorseg.models.blocks import pad_to_multiple

if TYPE_CHECKING:  # onnx and onnxruntime are optional: imported where a graph is written, checked or run
    import onnx
    import onnxruntime

OPSET = 17
#: Cases and slices per case whose activations calibrate an 8-bit export.
CALIBRATION_CASES, CALIBRATION_SLICES = 8, 8
#: Values a tensor of a graph may hold per input voxel and unit of the network's widest stage (a
#: U-Net's largest tensors are full-resolution features and their concatenation: the shipped
#: model's largest holds 36 per voxel, 0.14 per voxel and unit of width).
VALUES_PER_VOXEL_AND_WIDTH = 4


def onnx_path(checkpoint: Path, int8: bool = False) -> Path:
    """Where ``tumorseg export`` writes the ONNX model of a checkpoint: beside it, .onnx (8-bit:
    .int8.onnx)."""
    return checkpoint.with_suffix(".int8.onnx" if int8 else ".onnx")


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
        raise TumorsegError("export needs the onnx package: pip install 'tumorseg[onnx]'") from err

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
                batches.append(pad_to_multiple(torch.from_numpy(np.ascontiguousarray(patch)), config.stride))
                continue
            depth = len(volume)
            for z in np.linspace(depth // 4, 3 * depth // 4, CALIBRATION_SLICES).astype(int):
                image = with_context(volume, config.context, np.array([z]))
                batches.append(pad_to_multiple(torch.from_numpy(np.ascontiguousarray(image)), config.stride))
    return [{"image": batch.numpy()} for batch in batches]


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
    for key, value in {
        "tumorseg_version": __version__,
        "checkpoint_sha256": file_digest(segmenter.path),
        "checkpoint_epoch": str(segmenter.epoch),
        "target": segmenter.target.name,
        "size_multiple": str(segmenter.config.stride),
    }.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


def onnx_forwards(segmenter: Segmenter, int8: bool = False) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The forward pass of each of the segmenter's models through its ONNX export (8-bit:
    ``export --int8``), each export checked to come from its very checkpoint."""
    return [
        session_forward(export_session(checkpoint, config, int8))
        for checkpoint, config in zip(segmenter.paths, segmenter.configs, strict=True)
    ]


def session_forward(session: onnxruntime.InferenceSession) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"image": np.ascontiguousarray(batch.numpy())})[0])

    return forward


def export_session(checkpoint: Path, config: ModelConfig, int8: bool) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session of the export of ``checkpoint``, its graph checked first."""
    try:
        import onnxruntime
    except ImportError as err:
        raise TumorsegError("--engine onnx needs onnxruntime: pip install 'tumorseg[onnx]'") from err
    path = onnx_path(checkpoint, int8)
    if not path.is_file():
        how = " --int8 STORE" if int8 else ""
        raise TumorsegError(f"{path}: no ONNX model; run `tumorseg export {checkpoint}{how}`")
    graph = read_graph(path)  # read once: the graph that runs is the one checked, not a later file
    check_graph(graph, path, config)
    options = onnxruntime.SessionOptions()
    # idle pool threads would spin on the cores that the steps between runs need (on 2 cores
    # a patient took 1.07 s with spinning, 0.92 s without)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise TumorsegError(f"{path}: not a loadable ONNX model ({first_line(err)})") from err
    if session.get_modelmeta().custom_metadata_map.get("checkpoint_sha256") != file_digest(checkpoint):
        raise TumorsegError(
            f"{path}: exported from another checkpoint than {checkpoint}; export again (or --engine torch)"
        )
    return session


def read_graph(path: Path) -> bytes:
    """The bytes of an ONNX file, refused above what any checkpoint may hold (an export holds the
    same weights)."""
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise TumorsegError(
            f"{path}: {size / 2**20:,.0f} MiB; tumorseg reads ONNX models of up to "
            f"{MAX_CHECKPOINT_BYTES / 2**20:,.0f} MiB"
        )
    return path.read_bytes()


def check_graph(data: bytes, path: Path, config: ModelConfig) -> None:
    """Refuse an ONNX graph (``data``, read from ``path``) that could allocate more than the network
    ``config`` describes: a graph declares the size of every tensor it makes (a Resize by 1000, a
    ConstantOfShape of 10^10), and its recorded checkpoint digest is only metadata. Shapes are
    inferred for an input of 4 and of 8 strides a side: each tensor must have a fixed shape and at
    most VALUES_PER_VOXEL_AND_WIDTH x the widest stage's width values per input voxel, plus the
    file's size (its weights). Subgraphs, local functions and external data, which no export has,
    are refused."""
    try:
        import onnx
    except ImportError as err:
        raise TumorsegError("--engine onnx needs the onnx package: pip install 'tumorseg[onnx]'") from err
    try:
        graph = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf raises its own exception types
        raise TumorsegError(f"{path}: not a loadable ONNX model ({first_line(err)})") from err
    nested = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if (
        graph.functions
        or any(init.data_location == onnx.TensorProto.EXTERNAL for init in graph.graph.initializer)
        or any(attr.type in nested for node in graph.graph.node for attr in node.attribute)
        or len(graph.graph.input) != 1
    ):
        raise TumorsegError(f"{path}: not a graph tumorseg exports (subgraphs, functions or external data)")
    for side in (4 * config.stride, 8 * config.stride):
        shape = (1, config.in_channels, *[side] * config.dims)
        allowed = VALUES_PER_VOXEL_AND_WIDTH * max(config.channels) * side**config.dims + len(data)
        largest = largest_tensor(graph, shape, path)
        if largest > allowed:
            raise TumorsegError(
                f"{path}: a tensor of {largest} values for an input of {' x '.join(map(str, shape))}; "
                f"the network its checkpoint describes needs at most {allowed}"
            )


def largest_tensor(graph: onnx.ModelProto, shape: tuple[int, ...], path: Path) -> int:
    """The most values any tensor of ``graph`` holds for an input of
    ``shape``, by ONNX shape inference; a tensor whose size it cannot fix is refused."""
    import onnx
    from onnx import shape_inference

    fixed = onnx.ModelProto()
    fixed.CopyFrom(graph)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise TumorsegError(f"{path}: its input has {len(dims)} axes, not {len(shape)}")
    for dim, size in zip(dims, shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    try:
        inferred = shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True)
    except Exception as err:  # onnx raises its own exception types
        raise TumorsegError(f"{path}: its tensors' shapes cannot be inferred ({first_line(err)})") from err
    shapes = {
        info.name: [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
        for info in [*inferred.graph.value_info, *inferred.graph.output]
    }
    largest = 0
    for node in inferred.graph.node:
        for name in filter(None, node.output):  # "": an optional output left out
            if name not in shapes or None in shapes[name]:
                raise TumorsegError(f"{path}: the size of {short(name)} ({node.op_type}) depends on values")
            largest = max(largest, math.prod(shapes[name]))
    return largest
