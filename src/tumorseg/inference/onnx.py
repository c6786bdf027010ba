"""Export to ONNX and run with ONNX Runtime.

The exported graph takes z-scored slices (B, 4, H, W) (a 3D network: patches (B, 4, D, H, W)),
sizes multiples of the network's total stride (``segment`` pads), and returns probabilities, so
the two engines share everything but the forward pass. Its metadata holds the SHA-256 of the
checkpoint it came from, so an export of any other checkpoint (a newer best.pt, another run's) is
refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tumorseg import __version__
from tumorseg.errors import TumorsegError, first_line
from tumorseg.inference.segmenter import Segmenter, file_digest

OPSET = 17


def onnx_path(checkpoint: Path) -> Path:
    """Where ``tumorseg export`` writes the ONNX model of a checkpoint: beside it, .onnx."""
    return checkpoint.with_suffix(".onnx")


class WithActivation(nn.Module):
    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.model = segmenter.model
        self.activate = segmenter.target.activate

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.activate(self.model(image))


def export_onnx(segmenter: Segmenter, out: Path) -> Path:
    """Write the segmenter's model (with its output activation) as ONNX, atomically."""
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
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; removed here on any failure or interrupt
    return out


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


def onnx_forward(segmenter: Segmenter) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward pass of the segmenter's ONNX export, checked to come from its very checkpoint."""
    try:
        import onnxruntime
    except ImportError as err:
        raise TumorsegError("--engine onnx needs onnxruntime: pip install 'tumorseg[onnx]'") from err
    path = onnx_path(segmenter.path)
    if not path.is_file():
        raise TumorsegError(
            f"{path}: no ONNX model; run `tumorseg export {segmenter.path.parent} --format onnx`"
        )
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise TumorsegError(f"{path}: not a loadable ONNX model ({first_line(err)})") from err
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("checkpoint_sha256") != file_digest(segmenter.path):
        raise TumorsegError(f"{path}: exported from another checkpoint than {segmenter.path}; export again")

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"image": batch.numpy()})[0])

    return forward
