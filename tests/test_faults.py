"""Processes killed or racing: what was finished stays whole, and a re-run completes the job."""

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np

from conftest import tumorseg
from tumorseg.data.synth import synthesize


def start(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "tumorseg", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)


def test_sigkill_during_a_predict_batch(trained_run, tmp_path):
    cases = tmp_path / "cases"
    synthesize(cases, 6, shape=(48, 48, 24), seed=5, progress=False)
    out = tmp_path / "out"
    child = start("predict", "--model", trained_run, cases, "--out", out)
    wait_for(lambda: out.exists() and any(p.name.startswith("Phantom") for p in out.iterdir()))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    finished = sorted(p for p in out.iterdir() if p.name.startswith("Phantom"))
    assert 1 <= len(finished) < 6
    for path in finished:  # whole files: they load and hold a full label map
        assert set(np.unique(np.asarray(nib.load(path).dataobj))) <= {0, 1, 2, 4}
    stamps = {p.name: p.stat().st_mtime_ns for p in finished}
    again = tumorseg("predict", "--model", trained_run, cases, "--out", out)
    assert again.returncode == 0, again.stderr
    assert f"skipped {len(finished)} cases already segmented" in again.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"Phantom_{i:03d}.nii.gz" for i in range(1, 7)] + ["volumes.json"]
    )
    assert all(out.joinpath(name).stat().st_mtime_ns == stamp for name, stamp in stamps.items())
    assert sorted(json.loads((out / "volumes.json").read_text())) == [f"Phantom_{i:03d}" for i in range(1, 7)]


def test_two_prepares_on_the_same_store(tmp_path):
    """Both start together: the second is refused by the lock, or (if the first was already done)
    skips what is there. Either way the store ends whole, each case once."""
    cases = tmp_path / "cases"
    synthesize(cases, 6, shape=(96, 96, 48), seed=8, progress=False)
    store = tmp_path / "store.h5"
    runs = [start("prepare", cases, "--out", store, "--existing", "skip") for _ in range(2)]
    codes = [run.wait(timeout=120) for run in runs]
    errors = [run.stderr.read() for run in runs]
    for code, error in zip(codes, errors, strict=True):
        assert code == 0 or "another tumorseg command is writing it" in error, error
    assert 0 in codes
    inspect = tumorseg("inspect", store, "--json")
    assert sorted(c["case_id"] for c in json.loads(inspect.stdout)["cases"]) == [
        f"Phantom_{i:03d}" for i in range(1, 7)
    ]
