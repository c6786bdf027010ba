import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tumorseg.data.synth import synthesize

TINY = (32, 32, 16)
REPO = Path(__file__).resolve().parents[1]

# A suite started in the background of a non-interactive shell inherits Ctrl-C ignored (or, under
# some supervisors, blocked), and so would every command it starts: the tests that interrupt a
# command would wait for it in vain.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def real_data_root() -> Path | None:
    """Real BraTS cases: $TUMORSEG_REAL_DATA, else ../shared/data/brats2018-sample beside the repo."""
    root = Path(os.environ.get("TUMORSEG_REAL_DATA", REPO.parent / "shared/data/brats2018-sample"))
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Path:
    """Three tiny phantom cases as BraTS 2020 case folders."""
    root = tmp_path_factory.mktemp("phantoms")
    synthesize(root, 3, shape=TINY, seed=7, progress=False)
    return root


@pytest.fixture(scope="session")
def kaggle_phantoms(tmp_path_factory) -> Path:
    """The same three phantoms as Kaggle slice files (volumes 1..3)."""
    root = tmp_path_factory.mktemp("kaggle")
    synthesize(root, 3, shape=TINY, seed=7, layout="kaggle", progress=False)
    return root


@pytest.fixture(scope="session")
def store(phantoms, tmp_path_factory) -> Path:
    from tumorseg.data.prepare import prepare_store

    out = tmp_path_factory.mktemp("store") / "store.h5"
    prepare_store([phantoms], out, progress=False)
    return out


@pytest.fixture(scope="session")
def real_root() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("real BraTS cases not found (set TUMORSEG_REAL_DATA)")
    return root


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A store of five tiny phantoms: three train, one validation, one test."""
    from tumorseg.data.prepare import prepare_store

    root = tmp_path_factory.mktemp("cohort")
    synthesize(root / "cases", 5, shape=(32, 32, 12), seed=11, progress=False)
    prepare_store([root / "cases"], root / "store.h5", progress=False)
    return root / "store.h5"


TINY_TRAINING = {
    "channels": [4, 8],
    "size": [32, 32],
    "batch_size": 4,
    "workers": 0,
    "epochs": 2,
    "val_batch_size": 8,
}


@pytest.fixture(scope="session")
def trained_run(cohort, tmp_path_factory) -> Path:
    """A tiny model trained for two epochs on the cohort."""
    from tumorseg.training.config import TrainConfig
    from tumorseg.training.loop import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(cohort, run, TrainConfig.of(**TINY_TRAINING), progress=False)
    return run


@pytest.fixture(scope="session")
def segmenting_run(cohort, tmp_path_factory) -> Path:
    """A tiny model trained long enough to segment the phantoms' whole tumor (validation WT > 0.5)."""
    from tumorseg.training.config import TrainConfig
    from tumorseg.training.loop import train

    run = tmp_path_factory.mktemp("segmenting") / "run"
    config = TrainConfig.of(**{**TINY_TRAINING, "channels": [8, 16], "lr": 0.02, "epochs": 3})
    train(cohort, run, config, progress=False)
    return run


def tumorseg(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the command line in a fresh process, as a user would."""
    command = [sys.executable, "-m", "tumorseg", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


#: The peak is the process's own (VmHWM, reset by exec): getrusage's ru_maxrss also counts the
#: peak of the pytest process it was forked from, so it grew with whatever ran in pytest before.
MEASURED = """
import re, runpy, sys
sys.argv = ["tumorseg", *sys.argv[1:]]
try:
    runpy.run_module("tumorseg", run_name="__main__")
finally:
    with open("/proc/self/status") as status:
        peak = re.search(r"VmHWM:\\s*(\\d+) kB", status.read())[1]
    sys.stderr.write(f"\\npeak-rss-kb {peak}\\n")
"""


def tumorseg_measured(*args: object, timeout: float = 300) -> tuple[int, str, float]:
    """Run the command line in a fresh process; its exit code, stderr and peak RSS in MB."""
    command = [sys.executable, "-c", MEASURED, *map(str, args)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    err, _, peak = run.stderr.rpartition("peak-rss-kb ")
    return run.returncode, err.strip(), int(peak) / 1024


def run(args: list, capsys) -> tuple[int, str]:
    """``tumorseg ARGS`` in this process: its exit code and what it printed to stderr."""
    from tumorseg.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_clean_failure(code: int, err: str, names: str, words: str) -> None:
    """The invariant of a refused input: exit 1 and one line naming ``names`` and saying ``words``."""
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tumorseg: error: "), err
    assert names in lines[0] and words in lines[0], lines[0]


def tampered(state: dict) -> dict:
    """A checkpoint's contents as someone who rewrote its weights or config would save them: without
    the digest of the weights it came with, which would refuse the file before the check a test is
    about."""
    return {key: value for key, value in state.items() if key != "weights_sha256"}
