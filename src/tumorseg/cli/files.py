"""The one table of what every command reads and writes, which ``main`` applies before any command
runs: no output (companions included) may be one of the command's inputs, by any path or link,
whatever ``--overwrite`` says; and every output is locked for the command's whole run, so that two
commands never write one file or folder at once (``locks.outputs_locked``).

A model is more than its file: a command that reads a model reads the run it lies in too (its
checkpoints, config, split, history), so none of those can be an output either (``pack RUN --out
RUN/best.pt`` would have replaced the very run it packed). Whether an existing output may be
replaced (``--overwrite``) each command decides as it writes (``outputs.claim_outputs``), since
some extend what exists (``prepare``'s store, a batch ``predict``'s folder).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tumorseg.cli.options import evaluation_variant
from tumorseg.devices import is_main_process
from tumorseg.errors import TumorsegError
from tumorseg.locks import outputs_locked
from tumorseg.outputs import claim_outputs
from tumorseg.rundir import RunDir, model_checkpoint, model_checkpoints


@dataclass(frozen=True)
class Files:
    inputs: tuple[Path, ...] = ()
    outputs: tuple[Path, ...] = ()
    #: folders among the inputs that the command writes its results into (cv's fold runs): locked
    #: like outputs, but not outputs (they are read too)
    within: tuple[Path, ...] = ()


def present(*paths: Path | None) -> tuple[Path, ...]:
    return tuple(Path(path) for path in paths if path is not None)


def model_inputs(sources: Iterable[Path | None]) -> tuple[Path, ...]:
    """Each source of a model as given, its model files and the files of the runs they lie in."""
    found: list[Path] = []
    for source in present(*sources):
        found.append(source)
        try:
            checkpoints = model_checkpoints(source)
        except (TumorsegError, OSError):
            continue  # the command itself says what is wrong with it
        for checkpoint in checkpoints:
            run = RunDir.of(checkpoint)
            found += [checkpoint, *(run.inputs if run.holds_run() or run.split.is_file() else [])]
    return tuple(found)


def predict_files(args: argparse.Namespace) -> Files:
    from tumorseg.inference.writing import companions  # here: it imports nibabel, which --help need not

    out = Path(args.out)
    every = {"probabilities": True, "uncertainty": True, "volumes": True, "raw": True, "dicom": True}
    outputs = (out, *companions(out, **every))
    explicit = present(args.flair, args.t1, args.t1ce, args.t2)
    return Files(
        model_inputs(args.model or []) + present(args.input) + explicit,
        outputs + present(args.keep_preprocessed),
    )


def evaluate_files(args: argparse.Namespace) -> Files:
    models = model_inputs([*(args.models or []), args.run])
    folders = present(args.predictions, args.references, args.data)
    default = (
        ()
        if args.out or not args.run
        else (RunDir.of(args.run).evaluation(args.split, evaluation_variant(args)),)
    )
    return Files(models + folders, present(args.out) or default)


def train_files(args: argparse.Namespace) -> Files:
    return Files(present(args.data, args.config), present(args.out, args.resume))


def report_files(args: argparse.Namespace) -> Files:
    run = RunDir.of(args.run)
    return Files((*run.inputs, *present(args.evaluation)), present(args.out) or (run.report,))


def export_files(args: argparse.Namespace) -> Files:
    # an earlier export lies among the run's files, and --overwrite may replace it with a new one
    from tumorseg.inference.onnx import onnx_path  # here: it imports NumPy, which --help need not

    inputs = [path for path in model_inputs([args.model]) if path.suffix != ".onnx"]
    try:
        out = args.out or onnx_path(model_checkpoint(args.model), int8=args.int8 is not None)
    except TumorsegError:
        out = None  # the command itself says what is wrong with the model
    return Files((*inputs, *present(args.int8)), present(out))


#: Per command (as ``tumorseg COMMAND`` names it): what it reads and what it writes.
COMMAND_FILES: dict[str, Callable[[argparse.Namespace], Files]] = {
    "synth": lambda args: Files((), (args.out,)),
    "prepare": lambda args: Files(tuple(args.sources), (args.out,)),
    "inspect": lambda args: Files((args.store,)),
    "split": lambda args: Files((args.store,), (args.out,)),
    "train": train_files,
    "evaluate": evaluate_files,
    "cv": lambda args: Files(
        model_inputs(args.folds_dirs) + present(args.data, args.postprocessing), within=tuple(args.folds_dirs)
    ),
    "report": report_files,
    "predict": predict_files,
    "export": export_files,
    "pack": lambda args: Files(model_inputs([args.model]) + present(args.postprocessing), (args.out,)),
    "compare": lambda args: Files(
        model_inputs(args.model or []) + present(args.baseline, args.followup, *(args.seg or ())), (args.out,)
    ),
    "convert": lambda args: Files((args.study,), (args.out,)),
    "view": lambda args: Files(present(args.case, args.seg, args.reference, args.uncertainty), (args.out,)),
    "demo": lambda args: Files((), (args.out,)),
}


@contextmanager
def claimed_files(command: str, args: argparse.Namespace) -> Iterator[None]:
    """Refuse a command whose outputs include one of its inputs, then hold the lock of each of its
    outputs while it runs (refused at once when another command holds one)."""
    files = COMMAND_FILES[command](args)
    claim_outputs(files.outputs, files.inputs, overwrite=True)
    if not is_main_process():  # a torchrun job's other ranks: rank 0 writes and locks
        yield
        return
    with outputs_locked((*files.outputs, *files.within)):
        yield
