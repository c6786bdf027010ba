"""Seconds and peak memory of a whole `tumorseg predict CASE --out seg.nii.gz` command, as a user
runs it: a fresh process each time, imports, model files, NIfTI in and out.

Three variants, each case in turn, so that drift hits all alike:
- the command as it ships (the bundled ensemble on its 8-bit ONNX exports; no PyTorch imported),
- the same command with PyTorch imported first (what the command cost before it learned to do
  without: it imported PyTorch to read the model files and to segment),
- --engine torch (PyTorch runs the networks);
and with ``--against SRC``, the command as the code in SRC (another checkout's ``src``, e.g. of a
``git worktree`` at an earlier commit) runs it, to measure a change side by side.

    python benchmarks/predict_command.py --cases 5 --repeats 3 [--against OLD/src] [--skip-torch]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_io import real_root  # this folder's benchmarks; scripts run from here
from tumorseg.data.brats import find_case_folders

#: `python -m tumorseg ARGS`, after the imports given first, reporting its peak memory: VmHWM,
#: which exec resets (a child's ru_maxrss would start from this process's peak).
COMMAND = """
{imports}import re, runpy, sys
sys.argv = ["tumorseg", *sys.argv[1:]]
try:
    runpy.run_module("tumorseg", run_name="__main__")
finally:
    with open("/proc/self/status") as status:
        sys.stderr.write("\\npeak-kb " + re.search(r"VmHWM:\\s*(\\d+) kB", status.read())[1])
"""


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of a command."""
    start = time.perf_counter()
    run = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    err, _, peak = run.stderr.rpartition("peak-kb ")
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {err}")
    return seconds, int(peak) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", type=Path, metavar="SRC", help="also time the code in SRC")
    parser.add_argument("--skip-torch", action="store_true", help="leave out the two PyTorch variants")
    args = parser.parse_args()
    cases = find_case_folders(real_root())[: args.cases]
    command = [sys.executable, "-c", COMMAND.format(imports=""), "predict"]
    variants = {"as shipped": command}
    if args.against:  # its package found first: before this checkout's, installed in site-packages
        variants[f"code in {args.against}"] = ["env", f"PYTHONPATH={args.against.resolve()}", *command]
    if not args.skip_torch:
        variants["PyTorch imported first"] = [
            sys.executable, "-c", COMMAND.format(imports="import torch\n"), "predict"
        ]  # fmt: skip
        variants["--engine torch"] = [*command, "--engine", "torch"]
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    memory: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "seg.nii.gz"
        timed(
            [*variants["as shipped"], str(cases[0]), "--out", str(out), "--overwrite"]
        )  # warm the disk cache
        for _ in range(args.repeats):
            for case in cases:
                for name, command in variants.items():
                    wall, peak = timed([*command, str(case), "--out", str(out), "--overwrite"])
                    seconds[name].append(wall)
                    memory[name].append(peak)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {len(cases)} real cases x {args.repeats} repeats, median of "
        "the whole command"
    )
    print("median seconds; in brackets the median of each run's ratio to the one as shipped just before")
    for name in variants:
        median = statistics.median(seconds[name])
        ratio = statistics.median(a / b for a, b in zip(seconds[name], seconds["as shipped"], strict=True))
        print(
            f"{name:<28} {median:5.2f} s ({ratio:.2f}x; fastest {min(seconds[name]):.2f}, "
            f"slowest {max(seconds[name]):.2f})   peak memory {statistics.median(memory[name]):,.0f} MB"
        )


if __name__ == "__main__":
    main()
