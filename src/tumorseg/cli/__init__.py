"""The ``tumorseg`` command: parse arguments, call one function, print, return an exit code.

Each group of commands defines its parser and its function in a module of its own (``data``,
``training``, ``evaluation``, ``inference``); the options shared by every command that runs a
model live in ``options``, and what every command reads and writes in ``files``, which ``main``
checks and locks before the command runs. Commands import what they use when they run, to start fast.
"""

from __future__ import annotations

import argparse
import functools
import sys

from tumorseg import __version__
from tumorseg.cli.data import add_inspect, add_prepare, add_split, add_synth
from tumorseg.cli.evaluation import add_cv, add_evaluate, add_report, add_view
from tumorseg.cli.files import claimed_files
from tumorseg.cli.inference import add_convert, add_export, add_pack, add_predict
from tumorseg.cli.monitoring import add_compare
from tumorseg.cli.training import add_demo, add_train
from tumorseg.errors import TumorsegError
from tumorseg.interrupts import Terminated, handled

EXAMPLES = """\
the pipeline:
  tumorseg synth phantoms --cases 8                       # synthetic BraTS-style cases
  tumorseg prepare phantoms --out store.h5                # NIfTI or Kaggle slices -> HDF5 store
  tumorseg inspect store.h5                               # what the store holds
  tumorseg train --data store.h5 --out runs/first         # train, validating every epoch
  tumorseg evaluate runs/first                            # Dice, IoU, HD95 on the test patients
  tumorseg report runs/first                              # runs/first/report.html
  tumorseg predict --model runs/first CASE --out seg.nii.gz   # a new patient
  tumorseg compare VISIT1 VISIT2 --out change/              # what changed between two visits
  tumorseg demo                                           # all of it, on phantoms

Run `tumorseg COMMAND --help` for each command's options.
"""


def build_parser(command: str | None = "train") -> argparse.ArgumentParser:
    """The whole command line; the training config's flags only when ``command`` is train (they are
    the one part whose definition imports PyTorch, so that ``tumorseg --help`` stays instant)."""
    parser = argparse.ArgumentParser(
        prog="tumorseg",
        description="Segment brain tumors in multimodal MRI (FLAIR, T1, T1ce, T2) with an Attention U-Net.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tumorseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = functools.partial(add_train, with_config_flags=command == "train")
    for add in (add_synth, add_prepare, add_inspect, add_split, train, add_evaluate, add_cv, add_report,
                add_predict, add_compare, add_convert, add_export, add_pack, add_view, add_demo):  # fmt: skip
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(next((w for w in words if not w.startswith("-")), None)).parse_args(argv)
    try:
        with handled(), claimed_files(args.command, args):  # nothing over what it reads; outputs locked
            return args.func(args)
    except TumorsegError as err:
        print(f"tumorseg: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk, a read-only folder, ... met outside the checked paths
        print(f"tumorseg: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(
            "tumorseg: terminated" if isinstance(err, Terminated) else "tumorseg: interrupted",
            file=sys.stderr,
        )
        return 143 if isinstance(err, Terminated) else 130
