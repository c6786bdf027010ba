"""Running a model's ONNX export with ONNX Runtime, without PyTorch.

An export (``tumorseg export``: ``export.py``) takes z-scored slices (B, 4, H, W) (a 3D network:
patches (B, 4, D, H, W)), sizes multiples of the network's total stride (``segment`` pads), and
returns probabilities, so the two engines share everything but the forward pass. Its metadata
holds the SHA-256 of the checkpoint it came from, so an export of any other checkpoint (a newer
best.pt, another run's) is refused, and what inference needs of that checkpoint (the network's
config, its epoch, its post-processing), so that predicting reads no checkpoint with PyTorch:
importing PyTorch takes longer than segmenting a patient.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tumorseg.errors import TumorsegError, first_line, short
from tumorseg.files import parse_json
from tumorseg.models import ModelConfig
from tumorseg.postprocessing import PostProcessing

if TYPE_CHECKING:  # imported where a graph is checked or run: tumorseg's other commands need neither
    import onnx
    import onnxruntime

#: The largest ONNX file read: as large as a checkpoint may be (checkpoint.MAX_CHECKPOINT_BYTES),
#: since an export holds the same weights.
MAX_EXPORT_BYTES = 2**31
#: The most characters an export's record of its model may hold (one holds a few hundred): JSON
#: parsed takes several times its length in memory.
MAX_RECORD_CHARS = 2**16
#: Values a tensor of a graph may hold per input voxel and unit of the network's widest stage (a
#: U-Net's largest tensors are full-resolution features and their concatenation: the shipped
#: model's largest holds 36 per voxel, 0.14 per voxel and unit of width).
VALUES_PER_VOXEL_AND_WIDTH = 4


def onnx_path(checkpoint: Path, int8: bool = False) -> Path:
    """Where ``tumorseg export`` writes the ONNX model of a checkpoint: beside it, .onnx (8-bit:
    .int8.onnx)."""
    return checkpoint.with_suffix(".int8.onnx" if int8 else ".onnx")


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes: ties an export to the exact checkpoint it came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def graph_digest(graph: onnx.ModelProto) -> str:
    """SHA-256 of an ONNX model's graph (its nodes and weights; not its metadata, which carries the
    digest): an export records it, and a graph whose bytes changed since is refused."""
    return hashlib.sha256(graph.graph.SerializeToString(deterministic=True)).hexdigest()


def export_metadata(
    checkpoint: Path, config: ModelConfig, epoch: int, postprocessing: PostProcessing
) -> dict[str, str]:
    """What an export records of its checkpoint (``Export`` reads it back)."""
    return {
        "checkpoint_sha256": file_digest(checkpoint),
        "checkpoint_epoch": str(epoch),
        "model_config": json.dumps(config.to_dict()),
        "postprocessing": json.dumps(postprocessing.to_dict()),
        "target": config.target,
        "size_multiple": str(config.stride),
    }


@dataclass
class Export:
    """An export of a checkpoint, checked and loaded into ONNX Runtime, with what it records of the
    checkpoint."""

    path: Path
    session: onnxruntime.InferenceSession
    config: ModelConfig
    epoch: int
    postprocessing: PostProcessing

    @classmethod
    def of(cls, checkpoint: Path, int8: bool, threads: int | None = None) -> Export:
        """The export of ``checkpoint`` (8-bit: ``export --int8``), refused unless it comes from that
        very file and makes no tensor larger than its network needs; run on ``threads`` threads
        (default: ONNX Runtime's, one per core)."""
        try:
            import onnxruntime
        except ImportError as err:
            raise TumorsegError(
                "--engine onnx needs onnxruntime, which is not installed: pip install onnxruntime"
            ) from err
        path = onnx_path(checkpoint, int8)
        if not path.is_file():
            how = " --int8 STORE" if int8 else ""
            raise TumorsegError(f"{path}: no ONNX model; run `tumorseg export {checkpoint}{how}`")
        if not checkpoint.is_file():  # its digest is read whole: not from a folder, a pipe or a device
            raise TumorsegError(f"{checkpoint}: checkpoint does not exist")
        data = read_graph(path)  # read once: the graph that runs is the one checked, not a later file
        graph = parse_graph(data, path)
        metadata = {entry.key: entry.value for entry in graph.metadata_props}
        if "graph_sha256" not in metadata:
            raise TumorsegError(f"{path}: carries no digest of its graph (an older export); export it again")
        if metadata["graph_sha256"] != graph_digest(graph):
            raise TumorsegError(
                f"{path}: its graph does not match the digest it carries (changed since it was "
                "exported); export it again"
            )
        if metadata.get("checkpoint_sha256") != file_digest(checkpoint):
            raise TumorsegError(
                f"{path}: exported from another checkpoint than {checkpoint}; "
                "export again (or --engine torch)"
            )
        config, epoch, postprocessing = recorded(metadata, path)
        check_graph(graph, path, config, len(data))
        options = onnxruntime.SessionOptions()
        # idle pool threads would spin on the cores that the steps between runs need: slower on
        # 2 cores (docs/results.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 4  # its errors reach the user as tumorseg's one line, not its log
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise TumorsegError(f"{path}: not a loadable ONNX model ({first_line(err)})") from err
        return cls(path, session, config, epoch, postprocessing)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of a batch of the network's input."""
        try:
            return self.session.run(None, {"image": np.ascontiguousarray(batch, dtype=np.float32)})[0]
        except Exception as err:  # onnxruntime raises its own exception types
            shape = " x ".join(map(str, batch.shape))
            raise TumorsegError(
                f"{self.path}: ONNX Runtime failed on a batch of {shape} ({first_line(err)})"
            ) from err


def recorded(metadata: dict[str, str], path: Path) -> tuple[ModelConfig, int, PostProcessing]:
    """The network's config, epoch and post-processing an export's metadata records."""
    for key in ("model_config", "postprocessing"):
        if len(metadata.get(key, "")) > MAX_RECORD_CHARS:
            raise TumorsegError(
                f"{path}: its {key} holds {len(metadata[key]):,} characters; tumorseg reads at most "
                f"{MAX_RECORD_CHARS:,}"
            )
    try:
        config = parse_json(metadata["model_config"])
        rule = parse_json(metadata["postprocessing"])
        epoch = int(metadata["checkpoint_epoch"])
    except (KeyError, ValueError) as err:
        raise TumorsegError(
            f"{path}: its metadata lacks the model's config ({first_line(err)}); export it again"
        ) from err
    if not isinstance(config, dict):
        raise TumorsegError(f"{path}: its model_config is not a mapping")
    where = f"{path} (model_config)"
    return ModelConfig.from_mapping(config, where), epoch, PostProcessing.from_mapping(rule, str(path))


def read_graph(path: Path) -> bytes:
    """The bytes of an ONNX file, refused above MAX_EXPORT_BYTES."""
    size = path.stat().st_size
    if size > MAX_EXPORT_BYTES:
        raise TumorsegError(
            f"{path}: {size / 2**20:,.0f} MiB; tumorseg reads ONNX models of up to "
            f"{MAX_EXPORT_BYTES / 2**20:,.0f} MiB"
        )
    return path.read_bytes()


def parse_graph(data: bytes, path: Path) -> onnx.ModelProto:
    """The ONNX model in ``data`` (read from ``path``)."""
    try:
        import onnx
    except ImportError as err:
        raise TumorsegError(
            "--engine onnx needs the onnx package, which is not installed: pip install onnx"
        ) from err
    try:
        return onnx.load_model_from_string(data)
    except Exception as err:  # protobuf raises its own exception types
        raise TumorsegError(f"{path}: not a loadable ONNX model ({first_line(err)})") from err


def check_graph(graph: onnx.ModelProto, path: Path, config: ModelConfig, size: int) -> None:
    """Refuse an ONNX graph (read from ``path``, ``size`` bytes) that could allocate more than the
    network ``config`` describes: a graph declares the size of every tensor it makes (a Resize by
    1000, a ConstantOfShape of 10^10), and its metadata (the config, the digest) is its own word.
    Shapes are inferred for an input of 4 and of 5 strides a side (an odd multiple, on which a
    graph deeper than its config says fails): each tensor must have a fixed shape and at most
    VALUES_PER_VOXEL_AND_WIDTH x the widest stage's width values per input voxel, plus the file's
    size (its weights), and the output must be what the config says. A width above the square
    root of the file's size is not believed: a stage that wide holds at least width^2 weights.
    Subgraphs, local functions and external data, which no export has, are refused."""
    import onnx

    nested = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if (
        graph.functions
        or any(init.data_location == onnx.TensorProto.EXTERNAL for init in graph.graph.initializer)
        or any(attr.type in nested for node in graph.graph.node for attr in node.attribute)
        or len(graph.graph.input) != 1
    ):
        raise TumorsegError(f"{path}: not a graph tumorseg exports (subgraphs, functions or external data)")
    width = min(max(config.channels), math.isqrt(size))
    for side in (4 * config.stride, 5 * config.stride):
        shape = (1, config.in_channels, *[side] * config.dims)
        allowed = VALUES_PER_VOXEL_AND_WIDTH * width * side**config.dims + size
        largest, output = inferred_sizes(graph, shape, path)
        if largest > allowed:
            raise TumorsegError(
                f"{path}: a tensor of {largest} values for an input of {' x '.join(map(str, shape))}; "
                f"the network its checkpoint describes needs at most {allowed}"
            )
        expected = [1, config.target_spec().channels, *shape[2:]]
        if output != expected:
            raise TumorsegError(
                f"{path}: its output for an input of {' x '.join(map(str, shape))} is "
                f"{' x '.join(map(str, output))}, where the model config it records gives "
                f"{' x '.join(map(str, expected))}"
            )


def inferred_sizes(graph: onnx.ModelProto, shape: tuple[int, ...], path: Path) -> tuple[int, list[int]]:
    """The most values any tensor of ``graph`` holds for an input of ``shape``, and the shape of its
    output, by ONNX shape inference; a tensor whose size it cannot fix is refused, and so is an
    input whose fixed sizes (an export's channels) are not ``shape``'s."""
    import onnx
    from onnx import shape_inference

    fixed = onnx.ModelProto()
    fixed.CopyFrom(graph)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise TumorsegError(f"{path}: its input has {len(dims)} axes, not {len(shape)}")
    for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
        if dim.HasField("dim_value") and dim.dim_value != size:
            raise TumorsegError(
                f"{path}: its input has {dim.dim_value} values on axis {axis}, where the model config "
                f"it records needs {size}"
            )
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
    return largest, shapes[inferred.graph.output[0].name]
