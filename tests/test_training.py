import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY_TRAINING, tumorseg
from tumorseg.checkpoint import load_checkpoint
from tumorseg.errors import TumorsegError
from tumorseg.training import loop
from tumorseg.training.config import TrainConfig
from tumorseg.training.history import HISTORY_FIELDS
from tumorseg.training.loop import train
from tumorseg.training.objective import Objective

TINY = TINY_TRAINING
TINY_FLAGS = [
    "--channels",
    "4",
    "8",
    "--size",
    "32",
    "32",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--val-batch-size",
    "8",
]


def long_training(store, run) -> list:
    """A training of 40 tiny epochs in a fresh process, for tests that stop it on the way."""
    return [
        sys.executable,
        "-m",
        "tumorseg",
        "train",
        "--data",
        store,
        "--out",
        run,
        *TINY_FLAGS,
        "--epochs",
        40,
    ]


def history(run):
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_run_directory_holds_everything(cohort, tmp_path):
    run = tmp_path / "run"
    last = train(cohort, run, TrainConfig.of(**TINY), progress=False)
    assert {"config.yaml", "run.json", "environment.json", "split.json", "history.csv", "last.pt", "best.pt",
            "loss_accuracy.png", "dice_iou.png"} <= {p.name for p in run.iterdir()}  # fmt: skip
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0]) == HISTORY_FIELDS
    assert all(0 <= float(r["val_dice"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    assert float(rows[-1]["val_dice"]) == pytest.approx(last["val_dice"])
    environment = json.loads((run / "environment.json").read_text())
    assert environment["torch"] == torch.__version__ and "monai" in environment
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 3 and len(split["val"]) == 1 and len(split["test"]) == 1
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and state["model_config"]["channels"] == [4, 8]
    assert len(state["history"]) == 2 and "optimizer" in state and "scheduler" in state
    assert load_checkpoint(run / "best.pt")["metrics"]["val_dice"] == max(float(r["val_dice"]) for r in rows)
    # the figures are drawn from history.csv: changing it changes them
    before = (run / "dice_iou.png").read_bytes()
    loop.plot_history(run / "history.csv", run)
    assert (run / "dice_iou.png").read_bytes() == before


def test_resume_gives_the_same_weights_as_a_straight_run(cohort, tmp_path):
    train(cohort, tmp_path / "straight", TrainConfig.of(**TINY), progress=False)
    train(cohort, tmp_path / "split", TrainConfig.of(**TINY), stop_after=1, progress=False)
    assert [int(r["epoch"]) for r in history(tmp_path / "split")] == [1]
    train(None, tmp_path / "split", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for row_a, row_b in zip(history(tmp_path / "straight"), history(tmp_path / "split"), strict=True):
        assert row_a["val_dice"] == row_b["val_dice"] and row_a["train_loss"] == row_b["train_loss"]


def test_sigkill_mid_epoch_then_resume_keeps_every_epoch_once(cohort, tmp_path):
    run = tmp_path / "run"
    command = long_training(cohort, run)
    child = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "history.csv").exists():
        time.sleep(0.05)
    time.sleep(0.3)  # into a later epoch
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = load_checkpoint(run / "last.pt")["epoch"]
    assert done < 40
    resumed = tumorseg("train", "--resume", run, "--epochs", done + 2)
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r["epoch"]) for r in history(run)] == list(range(1, done + 3))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cohort, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(cohort, run, TrainConfig.of(**{**TINY, "epochs": 1}), progress=False)
    real = Objective.forward
    calls = {"n": 0}

    def explode(self, outputs, labels):
        calls["n"] += 1
        loss = real(self, outputs, labels)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(Objective, "forward", explode)
    with pytest.raises(
        TumorsegError, match=r"loss became nan at epoch 2, step 3.*last good state \(epoch 1\)"
    ):
        train(None, run, resume=True, overrides={"epochs": 2}, progress=False)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_bad_requests(cohort, tmp_path):
    with pytest.raises(TumorsegError, match="store does not exist"):
        train(tmp_path / "none.h5", tmp_path / "r1", TrainConfig.of(**TINY))
    (tmp_path / "fake.h5").write_bytes(b"nope")
    with pytest.raises(TumorsegError, match="not an HDF5 file"):
        train(tmp_path / "fake.h5", tmp_path / "r2", TrainConfig.of(**TINY))
    train(cohort, tmp_path / "r3", TrainConfig.of(**{**TINY, "epochs": 1}), progress=False)
    with pytest.raises(TumorsegError, match="already holds a run"):
        train(cohort, tmp_path / "r3", TrainConfig.of(**TINY))
    with pytest.raises(TumorsegError, match="cannot change lr when resuming"):
        train(None, tmp_path / "r3", resume=True, overrides={"lr": 0.5})
    with pytest.raises(TumorsegError, match="no last.pt to resume from"):
        train(None, tmp_path / "r4", resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(TumorsegError, match="no CUDA device"):
            train(cohort, tmp_path / "r5", TrainConfig.of(**{**TINY, "device": "cuda"}))


def test_cli_train_prints_an_epoch_line_per_epoch(cohort, tmp_path):
    run = tumorseg("train", "--data", cohort, "--out", tmp_path / "r", *TINY_FLAGS, "--epochs", 2,
                   "--target", "labels", "--deep-supervision", "--deterministic")  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "val loss" in lines[0] and "slices/s" in lines[0]
    bad = tumorseg("train", "--data", cohort, "--out", tmp_path / "x", "--lr", -1)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "tumorseg: error: command line: lr = -1.0 is out of range (expected > 0)"


def test_two_processes_with_torchrun_and_gloo(cohort, tmp_path):
    run = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "tumorseg", "train", "--data", str(cohort), "--out", str(run), *TINY_FLAGS, "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-6000:]}"
    assert [int(r["epoch"]) for r in history(run)] == [1, 2]
    assert result.stdout.count("epoch 2/2") == 1  # only rank 0 reports
    environment = json.loads((run / "environment.json").read_text())
    assert environment["processes"] == 2


def test_monai_model_trains_and_validates_on_any_volume_size(cohort, tmp_path):
    """Validation volumes are cropped to the brain, sizes MONAI's network cannot take unpadded."""
    last = train(
        cohort, tmp_path / "m", TrainConfig.of(**{**TINY, "model": "monai_attention_unet", "epochs": 1})
    )
    assert 0 <= last["val_dice"] <= 1


def test_train_says_where_and_from_which_epoch_without_a_terminal(cohort, tmp_path):
    first = tumorseg("train", "--data", cohort, "--out", tmp_path / "r", *TINY_FLAGS, "--epochs", 1)
    assert first.returncode == 0, first.stderr
    head = first.stdout.splitlines()[0]
    where = "cpu (fp32), 1 process(es), 0 loader worker(s), batches augmented on cpu"
    assert head.startswith(f"train {tmp_path / 'r'}: {where}; 3 training")
    assert "from epoch 1 of 1" in head
    again = tumorseg("train", "--resume", tmp_path / "r", "--epochs", 2)
    assert again.returncode == 0, again.stderr
    assert "resuming at epoch 2 of 2" in again.stdout.splitlines()[0]


def test_an_interrupted_train_says_how_to_resume(cohort, tmp_path):
    run = tmp_path / "run"
    command = long_training(cohort, run)
    child = subprocess.Popen(
        list(map(str, command)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "last.pt").exists():
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    code, err = child.wait(timeout=60), child.stderr.read()
    assert code == 130, f"exit code {code} after {len(history(run))} epochs; stderr: {err[-2000:]}"
    assert f"interrupted; continue with: tumorseg train --resume {run}" in err and "Traceback" not in err


def test_workers_auto_fits_the_device_and_the_cores(monkeypatch):
    from tumorseg.training import sampling

    monkeypatch.setattr(sampling, "available_cores", lambda: 16)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert sampling.worker_count("auto", 1, cuda) == sampling.MAX_AUTO_WORKERS
    assert sampling.worker_count("auto", 4, cuda) == 3  # 4 cores per process, one of them its own
    assert sampling.worker_count("auto", 1, cpu) == 1
    assert sampling.worker_count("3", 1, cuda) == 3
    monkeypatch.setattr(sampling, "available_cores", lambda: 1)
    assert sampling.worker_count("auto", 1, cpu) == 0 and sampling.worker_count("auto", 1, cuda) == 0
    with pytest.raises(TumorsegError, match="workers"):
        TrainConfig.of(workers="many")
    assert TrainConfig.of(workers=2).workers == "2"  # a number in a config file reads as one
