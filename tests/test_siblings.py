"""Siblings of the hostile inputs: each class closed by one mechanism, tested on the example that
found it and on its siblings."""

import argparse
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nibabel as nib
import pytest
import torch

from conftest import assert_clean_failure, run, tumorseg_measured
from tumorseg import settings
from tumorseg.cli import build_parser
from tumorseg.cli.files import COMMAND_FILES
from tumorseg.data.store import Store
from tumorseg.data.synth import synthesize
from tumorseg.errors import TumorsegError
from tumorseg.models import ModelConfig
from tumorseg.training.config import TrainConfig, from_mapping

CASE = "Phantom_001"


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("case")
    synthesize(root, 1, shape=(24, 24, 10), seed=3, progress=False)
    return root / CASE


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("*.onnx", "report.html", "evaluation-*"))
    return copy


# class 1: outputs over inputs. Mechanism: cli/files.py, the one table of every command's inputs
# and outputs (companions included), which main checks before any command runs.


def test_every_command_has_its_files_in_the_table():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(COMMAND_FILES)


OVER_INPUTS = [
    ("pack-best", lambda r, c, t: ["pack", r, "--out", r / "best.pt", "--overwrite"], "best.pt"),
    ("pack-last", lambda r, c, t: ["pack", r, "--out", r / "last.pt", "--overwrite"], "last.pt"),
    (
        "pack-config",
        lambda r, c, t: ["pack", r / "best.pt", "--out", r / "config.yaml", "--overwrite"],
        "config",
    ),
    ("export-last", lambda r, c, t: ["export", r, "--out", r / "last.pt", "--overwrite"], "last.pt"),
    (
        "predict-model",
        lambda r, c, t: ["predict", "--model", r, c, "--out", r / "best.pt", "--overwrite"],
        "best",
    ),
    (
        "predict-companion",
        lambda r, c, t: [
            "predict",
            "--model",
            r,
            c,
            "--out",
            r / "history.nii.gz",
            "--overwrite",
            "--probabilities",
        ],
        "history",
    ),  # fmt: skip
    (
        "predict-link",
        lambda r, c, t: ["predict", "--model", r, c, "--out", t / "link.nii.gz", "--overwrite"],
        "link",
    ),
    (
        "report-history",
        lambda r, c, t: ["report", r, "--out", r / "history.csv", "--overwrite"],
        "history.csv",
    ),
    (
        "view-seg",
        lambda r, c, t: [
            "view",
            c,
            "--seg",
            c / f"{CASE}_seg.nii.gz",
            "--out",
            c / f"{CASE}_seg.nii.gz",
            "--overwrite",
        ],
        "seg",
    ),  # fmt: skip
    ("evaluate-run", lambda r, c, t: ["evaluate", r, "--models", r, "--out", r, "--overwrite"], "run"),
    ("train-store", lambda r, c, t: ["train", "--data", r / "best.pt", "--out", r / "best.pt"], "best.pt"),
    ("compare-visit", lambda r, c, t: ["compare", c, c, "--out", c, "--overwrite"], CASE),
    (
        "compare-seg",
        lambda r, c, t: [
            "compare",
            c,
            c,
            "--out",
            c.parent,
            "--seg",
            c / f"{CASE}_seg.nii.gz",
            c.parent / "report.html",
            "--overwrite",
        ],
        "report.html",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("name", "args", "names"), OVER_INPUTS, ids=[o[0] for o in OVER_INPUTS])
def test_no_command_writes_over_what_it_reads(name, args, names, run_copy, case, tmp_path, capsys):
    local = tmp_path / CASE
    shutil.copytree(case, local)
    if name == "predict-companion":  # its probabilities would land on a file of the run
        (run_copy / "history_probabilities.nii.gz").symlink_to(run_copy / "last.pt")
    (tmp_path / "link.nii.gz").symlink_to(run_copy / "last.pt")
    kept = {path: path.read_bytes() for path in [*run_copy.iterdir(), *local.iterdir()] if path.is_file()}
    assert_clean_failure(
        *run(args(run_copy, local, tmp_path), capsys), names, "is one of this command's inputs"
    )
    assert {path: path.read_bytes() for path in kept} == kept


# Races. Mechanism: the same table; main holds the lock of every output (and of the folders cv
# writes its results into) for the command's whole run (locks.outputs_locked). The command never
# starts when one is held, so each case below names inputs that need not exist.

LOCKED = {  # per command: its words, and the output (or folder written into) another process holds
    "synth": (lambda t: ["synth", t / "phantoms"], "phantoms"),
    "prepare": (lambda t: ["prepare", t / "cases", "--out", t / "s.h5"], "s.h5"),
    "inspect": None,  # writes nothing
    "split": (lambda t: ["split", t / "s.h5", "--out", t / "split.json"], "split.json"),
    "train": (lambda t: ["train", "--data", t / "s.h5", "--out", t / "run"], "run"),
    "evaluate": (lambda t: ["evaluate", t / "run"], "run/evaluation-test"),
    "cv": (lambda t: ["cv", t / "folds"], "folds"),
    "report": (lambda t: ["report", t / "run"], "run/report.html"),
    "predict": (lambda t: ["predict", t / "case", "--out", t / "seg.nii.gz"], "seg.nii.gz"),
    "compare": (lambda t: ["compare", t / "a", t / "b", "--out", t / "change"], "change"),
    "convert": (lambda t: ["convert", t / "study", "--out", t / "nifti"], "nifti"),
    "export": (lambda t: ["export", t / "model.pt"], "model.onnx"),
    "pack": (lambda t: ["pack", t / "run", "--out", t / "model.pt"], "model.pt"),
    "view": (lambda t: ["view", t / "case", "--out", t / "view.html"], "view.html"),
    "demo": (lambda t: ["demo", "--out", t / "demo"], "demo"),
}
SIBLING_LOCKS = [  # other outputs of one command: a companion, a default, a run resumed
    (
        "predict-companion",
        lambda t: ["predict", t / "case", "--out", t / "s.nii.gz", "--probabilities"],
        "s_probabilities.nii.gz",
    ),  # fmt: skip
    ("predict-batch", lambda t: ["predict", t / "cases", "--out", t / "segs"], "segs"),
    ("train-resume", lambda t: ["train", "--resume", t / "run"], "run"),
    ("evaluate-last", lambda t: ["evaluate", t / "run", "--split", "val", "--tta"], "run/evaluation-val-tta"),
    ("export-int8", lambda t: ["export", t / "m.pt", "--int8", t / "s.h5"], "m.int8.onnx"),
    (
        "evaluate-folders",
        lambda t: ["evaluate", "--predictions", t / "p", "--references", t / "r", "--out", t / "scores"],
        "scores",
    ),  # fmt: skip
]


def test_every_command_is_in_the_lock_table():
    assert set(LOCKED) == set(COMMAND_FILES)


@pytest.mark.parametrize(
    ("words", "held"),
    [entry for entry in LOCKED.values() if entry] + [entry[1:] for entry in SIBLING_LOCKS],
    ids=[name for name, entry in LOCKED.items() if entry] + [entry[0] for entry in SIBLING_LOCKS],
)
def test_an_output_another_command_is_writing_is_refused(words, held, tmp_path, capsys):
    from tumorseg.locks import exclusive_lock, lock_beside

    (tmp_path / "run").mkdir()
    before = sorted(tmp_path.rglob("*"))
    with exclusive_lock(lock_beside(tmp_path / held), "held by the test"):
        assert_clean_failure(*run(words(tmp_path), capsys), held, "another tumorseg command is writing it")
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no lock file left


def test_the_locks_of_a_command_are_gone_after_it_and_made_folders_too(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "seg.nii.gz"
    assert_clean_failure(*run(["predict", tmp_path / "nothing", "--out", out], capsys), "nothing", "")
    assert list(tmp_path.iterdir()) == []  # the folders made for the lock are gone with it
    assert run(["synth", tmp_path / "ph", "--cases", "1", "--shape", "24x24x10"], capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ph"]  # no .ph.lock left beside it


# class 2: identity. Mechanism: run.json records the run's id, and its split and every checkpoint
# carry it (RunDir.check_owns): checked on resume, on evaluate and on each fold of a cross-validation.


def test_another_runs_checkpoint_or_split_copied_into_a_run_is_refused(
    run_copy, segmenting_run, cohort, tmp_path, capsys
):
    assert (run_copy / "run.json").read_text() != (segmenting_run / "run.json").read_text()
    for name, command, words in [
        ("last.pt", ["train", "--resume", run_copy], "last.pt: belongs to run"),
        ("best.pt", ["evaluate", run_copy, "--data", cohort, "--split", "val"], "best.pt: belongs to run"),
        ("split.json", ["evaluate", run_copy, "--data", cohort], "split.json: belongs to run"),
        ("split.json", ["train", "--resume", run_copy], "split.json: belongs to run"),
    ]:
        original = (run_copy / name).read_bytes()
        shutil.copy(segmenting_run / name, run_copy / name)
        kept = {path: path.read_bytes() for path in run_copy.iterdir() if path.is_file()}
        assert_clean_failure(*run(command, capsys), str(run_copy), words)
        assert {path: path.read_bytes() for path in kept} == kept  # nothing resumed, nothing written
        (run_copy / name).write_bytes(original)
    assert run(["evaluate", run_copy, "--data", cohort, "--split", "val"], capsys)[0] == 0  # its own files


def test_a_fold_holding_another_runs_checkpoint_is_refused_by_cv(
    trained_run, segmenting_run, cohort, tmp_path, capsys
):
    folds = tmp_path / "cv"
    folds.mkdir()
    for index, source in enumerate((trained_run, segmenting_run)):
        shutil.copytree(
            source, folds / f"fold-{index}", ignore=shutil.ignore_patterns("*.onnx", "evaluation-*")
        )
    shutil.copy(segmenting_run / "best.pt", folds / "fold-0" / "best.pt")
    assert_clean_failure(*run(["cv", folds, "--data", cohort], capsys), "fold-0", "best.pt: belongs to run")


# class 3: memory before checks. Mechanism: every size a header declares is checked before the read
# it would drive; for NIfTI header extensions (data/brats.py check_extensions), the region they lie
# in and each extension's own size, walked as nibabel would read them.


def nifti_with_extension(path: Path, declared: int, payload: int) -> None:
    """A NIfTI whose one 16-byte extension slot declares ``declared`` bytes, ``payload`` zeros after."""
    header = nib.Nifti1Header()
    header.set_data_shape((24, 24, 10))
    header["vox_offset"] = 352 + 16
    extension = declared.to_bytes(4, "little", signed=True) + (1).to_bytes(4, "little") + bytes(8)
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(header.binaryblock + (1).to_bytes(4, "little") + extension)
        for _ in range(payload // 2**20):
            handle.write(bytes(2**20))


@pytest.mark.parametrize("declared", [0, 4, -64, 2**30, 32])
def test_a_header_extension_declaring_a_size_that_does_not_fit_is_refused_before_it_is_read(
    case, tmp_path, declared
):
    """esize under 8 made nibabel read the whole decompressed stream (a 3 MB file: 4 GB)."""
    local = tmp_path / CASE
    shutil.copytree(case, local)
    nifti_with_extension(local / f"{CASE}_t2.nii.gz", declared, payload=600 * 2**20)
    code, err, peak = tumorseg_measured("prepare", local, "--out", tmp_path / "s.h5")
    assert code == 1 and "Traceback" not in err, err
    assert f"{CASE}_t2.nii.gz: a header extension declares {declared:,} bytes" in err, err
    assert peak < 500, f"peak RSS {peak:.0f} MB"
    assert not (tmp_path / "s.h5").exists()


def test_a_header_extension_that_fits_is_read(tmp_path):
    from tumorseg.data.brats import check_extensions

    path = tmp_path / "ok.nii.gz"
    nifti_with_extension(path, 16, payload=0)
    check_extensions(path)  # no error: one extension of 16 bytes fills its slot exactly
    assert len(nib.load(path).header.extensions) == 1


# class 4: silent drops. Mechanism: discovery (data/brats.py find_case_folders) finds case folders
# at any depth up to MAX_CASE_DEPTH, as the official BraTS 2018 and 2019 training data nest them.


def nested(case: Path, root: Path, layout: dict[str, str]) -> None:
    """Copies of ``case`` under ``root``, each renamed: {relative folder: new case id}."""
    for where, case_id in layout.items():
        target = root / where
        target.mkdir(parents=True)
        for path in case.iterdir():
            (target / path.name.replace(CASE, case_id)).write_bytes(path.read_bytes())


def test_case_folders_one_level_deeper_are_found_beside_others_and_alone(case, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    nested(
        case,
        mixed,
        {"Phantom_101": "Phantom_101", "HGG/Phantom_102": "Phantom_102", "LGG/Phantom_103": "Phantom_103"},
    )
    official = tmp_path / "official"
    nested(case, official, {"HGG/Phantom_201": "Phantom_201", "LGG/Phantom_202": "Phantom_202"})
    for root, ids in (
        (mixed, {"Phantom_101", "Phantom_102", "Phantom_103"}),
        (official, {"Phantom_201", "Phantom_202"}),
    ):
        store = tmp_path / f"{root.name}.h5"
        assert run(["prepare", root, "--out", store], capsys)[0] == 0
        with Store(store) as opened:
            assert set(opened.case_ids) == ids


def test_two_cases_with_one_id_in_hgg_and_lgg_are_refused(case, tmp_path, capsys):
    root = tmp_path / "twice"
    nested(case, root, {"HGG/Phantom_301": "Phantom_301", "LGG/Phantom_301": "Phantom_301"})
    assert_clean_failure(
        *run(["prepare", root, "--out", tmp_path / "s.h5"], capsys), "Phantom_301", "also found at"
    )
    assert not (tmp_path / "s.h5").exists()


# class 8: messages. Mechanism: what is named like a NIfTI file but is no regular file is named for
# what it is (data/brats.py nifti_files), before anything opens it.


@pytest.mark.parametrize("kind", ["folder", "loop", "dangling", "fifo"])
def test_something_named_like_a_sequence_that_is_no_file_is_named_for_what_it_is(
    case, tmp_path, capsys, kind
):
    local = tmp_path / CASE
    shutil.copytree(case, local)
    t2 = local / f"{CASE}_t2.nii.gz"
    t2.unlink()
    if kind == "folder":
        t2.mkdir()
    elif kind == "loop":
        t2.symlink_to(t2)
    elif kind == "dangling":
        t2.symlink_to(tmp_path / "nowhere.nii.gz")
    else:
        os.mkfifo(t2)
    words = {"folder": "is a folder", "loop": "is a symbolic link loop", "dangling": "is a link to nothing",
             "fifo": "is a FIFO, socket or device"}[kind]  # fmt: skip
    for command in (
        ["prepare", local, "--out", tmp_path / "s.h5"],
        ["predict", local, "--out", tmp_path / "seg.nii.gz"],
    ):
        assert_clean_failure(*run(command, capsys), f"{CASE}_t2.nii.gz", words)


# class 5: tracebacks. Mechanism: every setting that is a number has a range with an upper bound
# (settings.check in TrainConfig and ModelConfig), messages quote numbers cut short
# (errors.short: Python writes no int of over 4,300 digits), and the one YAML reader reads an
# integer too long as a malformed file.

NUMERIC_KEYS = [
    (cls, name)
    for cls in (TrainConfig, ModelConfig)
    for name, spec in settings.keys(cls).items()
    if isinstance(settings.default_of(spec), int | float | list)
    and not isinstance(settings.default_of(spec), bool)
    and name not in ("modalities",)
]


@pytest.mark.parametrize(("cls", "key"), NUMERIC_KEYS, ids=[f"{c.__name__}.{k}" for c, k in NUMERIC_KEYS])
def test_every_numeric_setting_refuses_a_value_of_40_digits_by_name(cls, key):
    default = settings.default_of(settings.keys(cls)[key])
    huge = 10**40
    value = [huge] * len(default) if isinstance(default, list) else huge
    values = {key: value} if cls is TrainConfig else {"model": {key: value}}
    if key == "fold":
        values["folds"] = 5
    with pytest.raises(TumorsegError, match=f"{key}"):
        from_mapping(values, "c.yaml")


@pytest.mark.parametrize("key", ["epochs", "workers", "channels", "seed"])
def test_a_config_holding_an_integer_of_thousands_of_digits_is_one_line(cohort, tmp_path, capsys, key):
    for digits in (4000, 5000):  # under and over what Python reads as an int
        number = "1" + "0" * digits
        (tmp_path / "c.yaml").write_text(
            f"{key}: [4, {number}]\n" if key == "channels" else f"{key}: {number}\n"
        )
        code, err = run(
            ["train", "--data", cohort, "--out", tmp_path / "run", "--config", tmp_path / "c.yaml"], capsys
        )
        assert_clean_failure(code, err, "c.yaml", key if digits < 4300 else "an integer too long to read")
        assert len(err) < 400 and not (tmp_path / "run").exists()


# class 6: half-done work. Mechanism: a case's outputs are one transaction (inference/writing.py
# write_together: all written under temporary names, renamed with the label map last, or none), and a
# batch counts a case done only when its label map and every companion asked for are there.


def phantoms(root: Path, count: int) -> Path:
    synthesize(root, count, shape=(24, 24, 10), seed=5, progress=False)
    return root


def test_an_interrupt_while_a_case_is_written_leaves_none_of_its_files(trained_run, tmp_path, monkeypatch):
    from tumorseg.inference import writing
    from tumorseg.inference.predict import predict
    from tumorseg.inference.segmenter import Segmenter

    cases, out = phantoms(tmp_path / "cases", 2), tmp_path / "out"
    real, calls = writing.nifti_writer, {"n": 0}

    def interrupted(data, reference):
        write = real(data, reference)

        def later(path):
            calls["n"] += 1
            if calls["n"] == 2:  # the first case's probabilities, after its label map is written
                raise KeyboardInterrupt
            write(path)

        return later

    monkeypatch.setattr("tumorseg.inference.predict.nifti_writer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict(cases, out, lambda: Segmenter(trained_run), probabilities=True, progress=False)
    assert not out.exists() or not [p for p in out.iterdir() if "Phantom" in p.name]  # none of its files
    monkeypatch.setattr("tumorseg.inference.predict.nifti_writer", real)
    result = predict(cases, out, lambda: Segmenter(trained_run), probabilities=True, progress=False)
    assert len(result.written) == 2 and not result.skipped
    for case_id in ("Phantom_001", "Phantom_002"):
        assert (out / f"{case_id}.nii.gz").is_file() and (out / f"{case_id}_probabilities.nii.gz").is_file()


def test_a_case_missing_a_companion_now_asked_for_is_done_again(trained_run, tmp_path, capsys):
    cases, out = phantoms(tmp_path / "cases", 2), tmp_path / "out"
    assert run(["predict", "--model", trained_run, cases, "--out", out], capsys)[0] == 0
    assert run(["predict", "--model", trained_run, cases, "--out", out, "--uncertainty"], capsys)[0] == 0
    assert all((out / f"Phantom_00{i}_uncertainty.nii.gz").is_file() for i in (1, 2))


def test_sigterm_during_a_batch_with_probabilities_then_the_same_command_finishes_it(trained_run, tmp_path):
    cases, out = phantoms(tmp_path / "cases", 6), tmp_path / "out"
    command = [sys.executable, "-m", "tumorseg", "predict", "--model", trained_run, cases, "--out", out,
               "--probabilities"]  # fmt: skip
    child = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        out.is_dir() and any("Phantom" in p.name for p in out.iterdir())
    ):
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=60)
    labels = [p for p in out.glob("Phantom_*.nii.gz") if "_probabilities" not in p.name]
    assert all(p.with_name(p.name.replace(".nii.gz", "_probabilities.nii.gz")).is_file() for p in labels)
    assert not list(out.glob(".*tmp*"))
    again = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    for case_id in (f"Phantom_00{i}" for i in range(1, 7)):
        assert (out / f"{case_id}.nii.gz").is_file() and (out / f"{case_id}_probabilities.nii.gz").is_file()


# class 7: model files. Mechanism: checkpoint.py verifies each zip entry's CRC before torch.load
# reads it, and the SHA-256 of the weights every checkpoint carries (weights_sha256) once read.


def flip_a_weight_byte(path: Path) -> None:
    """Change one byte inside the largest stored tensor of a torch.save zip, leaving the zip whole."""
    with zipfile.ZipFile(path) as archive:
        entry = max((e for e in archive.infolist() if "/data/" in e.filename), key=lambda e: e.file_size)
        header = entry.header_offset
    data = bytearray(path.read_bytes())
    name_length, extra_length = (
        int.from_bytes(data[header + at : header + at + 2], "little") for at in (26, 28)
    )
    middle = header + 30 + name_length + extra_length + entry.file_size // 2
    data[middle] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("model", ["packed", "bundled", "best"])
def test_a_model_file_with_a_changed_byte_is_refused(run_copy, case, tmp_path, capsys, model):
    from tumorseg.inference.bundle import BUNDLED_MODELS

    path = tmp_path / "model.pt"
    if model == "packed":
        assert run(["pack", run_copy, "--out", path], capsys)[0] == 0
    elif model == "bundled":
        shutil.copy(BUNDLED_MODELS[0], path)
    else:
        path = run_copy / "best.pt"
    flip_a_weight_byte(path)
    command = ["predict", "--model", path, case, "--out", tmp_path / "seg.nii.gz", "--engine", "torch"]
    assert_clean_failure(*run(command, capsys), path.name, "fails its checksum")
    assert not (tmp_path / "seg.nii.gz").exists()


@pytest.mark.parametrize("change", ["weight", "no digest"])
def test_an_onnx_export_changed_since_it_was_made_is_refused(case, tmp_path, capsys, change):
    """An export carries the digest of its graph (nodes and weights): one changed weight byte, or an
    export that carries none, is refused before it runs."""
    import onnx

    from tumorseg.inference.bundle import BUNDLED_MODELS
    from tumorseg.inference.onnx import onnx_path

    path = tmp_path / "model.pt"
    shutil.copy(BUNDLED_MODELS[0], path)
    graph = onnx.load(str(onnx_path(BUNDLED_MODELS[0], int8=True)))
    if change == "weight":
        weights = next(t for t in graph.graph.initializer if len(t.raw_data) > 100)
        raw = bytearray(weights.raw_data)
        raw[len(raw) // 2] ^= 0x01
        weights.raw_data = bytes(raw)
    else:
        kept = [p for p in graph.metadata_props if p.key != "graph_sha256"]
        del graph.metadata_props[:]
        graph.metadata_props.extend(kept)
    onnx.save(graph, str(onnx_path(path, int8=True)))
    command = ["predict", "--model", path, case, "--out", tmp_path / "seg.nii.gz", "--engine", "onnx-int8"]
    words = "does not match the digest it carries" if change == "weight" else "carries no digest of its graph"
    assert_clean_failure(*run(command, capsys), "model.int8.onnx", words)
    assert not (tmp_path / "seg.nii.gz").exists()


def test_a_checkpoint_rewritten_with_other_weights_is_refused_by_its_digest(run_copy, case, tmp_path, capsys):
    state = torch.load(run_copy / "last.pt", weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 1  # a whole, valid zip: only the digest tells
    torch.save(state, run_copy / "last.pt")
    assert_clean_failure(*run(["train", "--resume", run_copy], capsys), "last.pt", "do not match the digest")
    shutil.copy(run_copy / "last.pt", tmp_path / "rewritten.pt")
    command = ["predict", "--model", tmp_path / "rewritten.pt", case, "--out", tmp_path / "s.nii.gz"]
    assert_clean_failure(*run(command, capsys), "rewritten.pt", "do not match the digest")
