import errno
import os
import pickle
import shutil
import signal
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tumorseg import checkpoint
from tumorseg.checkpoint import load_checkpoint, load_network, save_checkpoint
from tumorseg.errors import TumorsegError


def test_round_trip_with_weights_only(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "history": [{"epoch": 1, "loss": 0.5}]}
    save_checkpoint(state, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert loaded["format"] == "tumorseg-checkpoint"
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


class Payload:
    """Unpickling this would create a file: a stand-in for arbitrary code."""

    def __reduce__(self):
        return (os.mkdir, (os.environ["TUMORSEG_TEST_MARKER"],))


def test_a_pickle_of_arbitrary_objects_is_refused_not_executed(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    monkeypatch.setenv("TUMORSEG_TEST_MARKER", str(marker))
    torch.save({"format": "tumorseg-checkpoint", "model": Payload()}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(TumorsegError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as handle:
        pickle.dump(Payload(), handle)
    with pytest.raises(TumorsegError, match="plain.pkl"):
        load_checkpoint(tmp_path / "plain.pkl")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a readable checkpoint"), (b"garbage" * 100, "not a readable checkpoint")],
)
def test_unreadable_files(tmp_path, content, message):
    (tmp_path / "c.pt").write_bytes(content)
    with pytest.raises(TumorsegError, match=message):
        load_checkpoint(tmp_path / "c.pt")


def test_truncated_and_foreign_and_newer(tmp_path):
    save_checkpoint({"model": {"w": torch.zeros(1000)}}, tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(TumorsegError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(TumorsegError, match="not a tumorseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "tumorseg-checkpoint", "format_version": 99}, tmp_path / "newer.pt")
    with pytest.raises(TumorsegError, match="newer than this tumorseg reads"):
        load_checkpoint(tmp_path / "newer.pt")
    with pytest.raises(TumorsegError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_small_checkpoint_declaring_much_more_is_refused_before_reading(tmp_path, monkeypatch):
    """torch.load inflates deflated zip entries: a checkpoint of 40 MB of weights zipped again
    with deflate is some 40 kB, and one 100 times larger would fill gigabytes when loaded."""
    save_checkpoint({"model": {"w": torch.zeros(10_000_000)}}, tmp_path / "c.pt")
    with (
        zipfile.ZipFile(tmp_path / "c.pt") as stored,
        zipfile.ZipFile(tmp_path / "deflated.pt", "w", compression=zipfile.ZIP_DEFLATED) as deflated,
    ):
        for entry in stored.infolist():
            deflated.writestr(entry.filename, stored.read(entry.filename))
    assert (tmp_path / "deflated.pt").stat().st_size < 1_000_000
    assert load_checkpoint(tmp_path / "deflated.pt")["model"]["w"].shape == (10_000_000,)  # under the bound
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 2**25)
    with pytest.raises(TumorsegError, match=r"deflated.pt: declares 38 MiB once read; .* up to 32 MiB"):
        load_checkpoint(tmp_path / "deflated.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(TumorsegError, match="old.pt: not a readable checkpoint .not a torch.save zip"):
        load_checkpoint(tmp_path / "old.pt")  # the zip-less format: its tensors declare their sizes


def test_the_checkpoint_loaded_is_the_file_whose_size_was_checked(tmp_path, monkeypatch):
    """The size check reads the zip directory and torch.load the entries: both from one open file,
    so a file put in its place between the two (here another checkpoint) is not what loads."""
    save_checkpoint({"model": {"w": torch.arange(3.0)}, "epoch": 1}, tmp_path / "c.pt")
    save_checkpoint({"model": {"w": torch.zeros(2**10)}, "epoch": 2}, tmp_path / "other.pt")
    checked = checkpoint.check_declared_size

    def check_then_replace(handle, path):
        checked(handle, path)
        os.replace(tmp_path / "other.pt", path)

    monkeypatch.setattr(checkpoint, "check_declared_size", check_then_replace)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.arange(3.0))


def test_weights_that_view_more_values_than_they_hold_are_refused(tmp_path):
    """A tensor of 10^10 elements over one stored zero is 22 kB on disk; converting it to half
    precision (pack) would allocate 20 GB."""
    network = {"model_config": {"channels": [4, 8]}, "epoch": 1}
    save_checkpoint({**network, "model": {"w": torch.zeros(1).expand(100_000, 100_000)}}, tmp_path / "v.pt")
    with pytest.raises(TumorsegError, match="v.pt: weight 'w' is not a tensor that holds its own values"):
        load_network(tmp_path / "v.pt")
    # one stored value, 10^10 declared
    sparse = torch.sparse_coo_tensor([[0], [0]], [1.0], (100_000, 100_000), check_invariants=True)
    save_checkpoint({**network, "model": {"w": sparse}}, tmp_path / "sparse.pt")
    with pytest.raises(TumorsegError, match="sparse.pt: weight 'w' is not a tensor that holds its own"):
        load_network(tmp_path / "sparse.pt")  # was a NotImplementedError traceback
    save_checkpoint({**network, "model": {"w": torch.zeros(3, 3)[:, 1]}}, tmp_path / "slice.pt")
    assert load_network(tmp_path / "slice.pt")["model"]["w"].shape == (3,)  # a view into more is fine


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"epoch": 1}, tmp_path / "last.pt")

    def full_disk(obj, handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(TumorsegError, match="No space left.*previous one is unchanged"):
        save_checkpoint({"epoch": 2}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


OLD_RUN = Path(__file__).parent / "data" / "run-v0.1"


def test_ctrl_c_while_writing_is_an_interrupt_and_keeps_the_previous_checkpoint(tmp_path):
    """torch.save into a file reports an interrupt in its write callback as a failed write."""
    state = {"model": {f"w{i}": torch.randn(64, 64) for i in range(100)}, "epoch": 1}
    save_checkpoint(state, tmp_path / "c.pt")
    outcomes = []
    for delay in np.linspace(0, 0.02, 40):
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
        try:
            timer.start()
            for _ in range(5):
                save_checkpoint({**state, "epoch": 2}, tmp_path / "c.pt")
            timer.join()
            outcomes.append("finished")
        except KeyboardInterrupt:
            outcomes.append("interrupted")
        timer.join()
        assert load_checkpoint(tmp_path / "c.pt")["epoch"] in (1, 2)
    assert outcomes.count("interrupted") >= 20  # each is an interrupt, none a TumorsegError
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_checkpoints_of_tumorseg_0_1_still_load_and_predict_the_same():
    """best.pt and last.pt were written by tumorseg 0.1 (checkpoint format 1, one flat config) on
    the test cohort; probabilities.npz holds what 0.1 computed with that best.pt on a fixed input."""
    from tumorseg.inference.segmenter import Segmenter

    state = load_checkpoint(OLD_RUN / "best.pt")
    assert state["format_version"] == 2 and state["model_config"]["channels"] == [4, 8]
    assert state["model_config"]["modalities"] == ["flair", "t1", "t1ce", "t2"]
    expected = np.load(OLD_RUN / "probabilities.npz")
    segmenter = Segmenter(OLD_RUN / "best.pt")
    np.testing.assert_allclose(
        segmenter.probabilities(expected["volume"]), expected["probabilities"], atol=1e-6
    )


def test_a_run_of_tumorseg_0_1_resumes(cohort, tmp_path):
    from tumorseg.training.loop import train

    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    last = train(cohort, run, resume=True, overrides={"epochs": 2}, progress=False)
    assert last["epoch"] == 2
    state = load_checkpoint(run / "last.pt")
    assert state["format_version"] == 2 and state["epoch"] == 2 and len(state["history"]) == 2
