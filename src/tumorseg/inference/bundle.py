"""A model as one small file, and the one that ships with tumorseg.

``pack`` keeps of a run's checkpoint what segmenting needs (the network's config and weights,
the label convention) and adds the post-processing it is given, the patients it was trained and
validated on (the run's split) and the run's training configuration (``training``, as its
config.yaml holds it), so the file says what it has seen and how it learned; floating-point
weights are stored in half precision (they are read back into float32), which halves the file.
The file is an ordinary checkpoint: ``--model FILE`` reads it, ``weights_only`` as always.

``BUNDLED_MODELS`` are such files inside the package, the ensemble ``predict`` uses without
``--model`` (two recipes whose probabilities averaged beat either alone: docs/results.md);
``BUNDLED_ANY_SEQUENCES``, trained with modality dropout, takes over for a case that lacks
sequences (it scores lower when all four are there). ``MODEL_CARD.md`` says how they were trained
and how well they do.
"""

from __future__ import annotations

from pathlib import Path

from tumorseg.data.splits import load_split
from tumorseg.postprocessing import PostProcessing
from tumorseg.rundir import RunDir, model_checkpoint
from tumorseg.settings import read_config

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
BUNDLED_MODELS = (WEIGHTS / "brats-2d.pt", WEIGHTS / "brats-2d-context.pt")
BUNDLED_ANY_SEQUENCES = WEIGHTS / "brats-2d-any-sequences.pt"
#: What a packed model keeps of a checkpoint.
KEPT = ("model_config", "epoch", "labels", "metrics")


def pack(source: Path, out: Path, postprocessing: PostProcessing, half: bool = True) -> dict:
    """Write the model of ``source`` (a run or checkpoint) to ``out``; return what was written."""
    from tumorseg.checkpoint import load_network, save_checkpoint  # PyTorch: not for predict's import

    path = model_checkpoint(source)
    state = load_network(path)
    weights = {
        name: tensor.half() if half and tensor.is_floating_point() else tensor
        for name, tensor in state["model"].items()
    }
    packed = {key: state[key] for key in KEPT if key in state}
    packed |= {"model": weights, "postprocessing": postprocessing.to_dict(), "packed_from": path.name}
    run = RunDir.of(path)
    if run.split.is_file():
        packed["split"] = load_split(run.split)
    if run.config.is_file():
        packed["training"] = read_config(run.config)
    save_checkpoint(packed, out)
    return packed
