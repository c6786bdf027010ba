"""The package's house: every module imports on its own, in any order, with no cycle."""

import pkgutil
import random
import subprocess
import sys

import tumorseg

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(tumorseg.__path__, "tumorseg.")
    if info.name != "tumorseg.__main__"
)

# Each module is imported first in a fresh child of one interpreter that has already imported
# the third-party libraries, so a cycle that breaks at import time shows, at fork cost only.
PROBE = """
import os, sys
import h5py, hdf5plugin, matplotlib, monai, nibabel, numpy, scipy, torch, tqdm, yaml  # noqa
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException as err:
            print(f"{name}: {type(err).__name__}: {err}", flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
sys.exit(1 if failed else 0)
"""


def test_the_package_has_the_modules_it_should():
    for name in ("tumorseg.labels", "tumorseg.checkpoint", "tumorseg.rundir", "tumorseg.data.preprocess"):
        assert name in MODULES


def test_every_module_imports_first_and_alone():
    run = subprocess.run([sys.executable, "-c", PROBE, *MODULES], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_all_modules_import_together_in_a_shuffled_order():
    order = MODULES.copy()
    random.Random(8).shuffle(order)
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    run = subprocess.run([sys.executable, "-c", script, *order], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_help_and_version_do_not_import_the_heavy_libraries():
    """`tumorseg --help` answers at once: PyTorch and MONAI are imported only by commands that use them."""
    script = (
        "import sys\nfrom tumorseg.cli import main\n"
        "for argv in (['--help'], ['--version'], ['predict', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = sorted({'torch', 'monai', 'h5py', 'nibabel', 'matplotlib'} & set(sys.modules))\n"
        "print(heavy)\nsys.exit(1 if heavy else 0)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-500:] + run.stderr[-500:]
