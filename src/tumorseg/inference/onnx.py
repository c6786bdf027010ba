"""Export to ONNX and run with ONNX Runtime.

The exported graph takes z-scored slices (B, 4, H, W), H and W multiples of the network's total
stride (``Segmenter`` pads), and returns probabilities, so the two engines share everything
but the forward pass. Its metadata names the checkpoint epoch it came from, so a stale export
is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from tumorseg import __version__
from tumorseg.errors import TumorsegError

OPSET = 17


class WithActivation(nn.Module):
    def __init__(self, segmenter):
        super().__init__()
        self.model = segmenter.model
        self.activate = segmenter.activate

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.activate(self.model(image))


def export_onnx(segmenter, out: Path) -> Path:
    """Write the segmenter's model (with its output activation) as ONNX, atomically."""
    import onnx

    model = WithActivation(segmenter).eval().to("cpu", memory_format=torch.contiguous_format)
    side = 2 * segmenter.multiple
    example = torch.zeros(1, 4, side, side)
    tmp = out.with_name(f".{out.name}.tmp")
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_axes={"image": dynamic, "probabilities": dynamic},
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(tmp))
    for key, value in {
        "tumorseg_version": __version__,
        "checkpoint_epoch": str(segmenter.epoch),
        "target": segmenter.target,
        "size_multiple": str(segmenter.multiple),
    }.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(tmp))
    tmp.replace(out)
    return out


def open_session(path: Path, segmenter):
    """An ONNX Runtime session for ``path``, checked against the checkpoint it should come from."""
    try:
        import onnxruntime
    except ImportError:
        raise TumorsegError("--engine onnx needs onnxruntime: pip install onnxruntime") from None
    if not path.is_file():
        raise TumorsegError(
            f"{path}: no ONNX model; run `tumorseg export {segmenter.path.parent} --format onnx`"
        )
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise TumorsegError(f"{path}: not a loadable ONNX model ({str(err).splitlines()[0]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("checkpoint_epoch") != str(segmenter.epoch) or meta.get("target") != segmenter.target:
        raise TumorsegError(f"{path}: exported from another checkpoint than {segmenter.path}; export again")
    return session
