"""Property-based tests of the input invariant, for every kind of file tumorseg reads.

For any generated NIfTI header, Kaggle slice file, YAML config, model file (pack) or fold split
(cv), the command either succeeds with a correct result (exit 0) or fails with exactly one
``tumorseg: error:`` line naming the file (exit 1); it never raises, never changes an input, and
its peak memory stays bounded (traced allocations, NumPy's included).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil
import tracemalloc
from pathlib import Path
from struct import error as struct_error

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tumorseg.cli import main
from tumorseg.data.store import Store
from tumorseg.data.synth import synthesize

CASE = "Phantom_001"
SHAPE = (24, 24, 10)
PEAK_MB = 256  # a hostile header honoured would take gigabytes
EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    synthesize(root / "cases", 1, shape=SHAPE, seed=3, progress=False)
    synthesize(root / "kaggle", 1, shape=SHAPE, seed=3, layout="kaggle", progress=False)
    return root


def invoke(args: list) -> tuple[int, str, float]:
    """Run the command line in this process: exit code, stderr, peak traced memory in MB."""
    err = io.StringIO()
    tracemalloc.start()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in args])
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return code, err.getvalue(), peak


def assert_invariant(code: int, err: str, peak: float, names: str) -> None:
    event(f"exit {code}")  # hypothesis --hypothesis-show-statistics: both outcomes are reached
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"
    if code == 0:
        return
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("tumorseg: error: "), err
    assert names in lines[0], lines[0]
    assert len(lines[0]) < 400


def fresh(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


DTYPES = [np.int16, np.uint8, np.int64, np.float32, np.float64, np.complex64,
          np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])]  # fmt: skip
AFFINE_VALUES = st.sampled_from([0.0, 1.0, -1.0, 2.5, 1e-12, 1e30, float("nan"), float("inf")])


#: What ``write_nifti`` makes a header declare (``affine``: 12 values of its first three rows, or
#: None for the case's own).
NIFTI_HEADERS = {
    "shape": st.lists(st.integers(1, 3000), min_size=1, max_size=5).map(tuple) | st.just(SHAPE),
    "dtype": st.sampled_from(DTYPES),
    "affine": st.lists(AFFINE_VALUES, min_size=12, max_size=12) | st.none(),
    "whole": st.booleans(),
}


def declared_affine(affine: list[float] | None, case: Path) -> np.ndarray:
    """The 4 x 4 affine of ``NIFTI_HEADERS``' draw: its 12 values, or the case's own (None)."""
    if affine is None:
        return nib.load(case / f"{CASE}_flair.nii.gz").affine
    return np.vstack([np.reshape(affine, (3, 4)), [0, 0, 0, 1]])


def write_nifti(path: Path, shape: tuple[int, ...], dtype, affine: np.ndarray, whole: bool) -> None:
    """A NIfTI declaring ``shape``/``dtype``/``affine``, written byte by byte (so that any header can
    be made): with all its voxels when ``whole`` (and small), else with a few bytes of them, as a
    truncated or forged file has."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_sform(affine, code=1)
    header["vox_offset"] = 352
    dtype = np.dtype(dtype)
    payload = b"\1" * 512
    if whole and int(np.prod(shape)) * dtype.itemsize < 200_000:
        payload = (np.ones(shape, dtype) if dtype.fields is None else np.zeros(shape, dtype)).tobytes(
            order="F"
        )
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + payload))


@EXAMPLES
@given(
    **NIFTI_HEADERS,
    modality=st.sampled_from(["flair", "t1", "t1ce", "t2", "seg"]),
)
def test_any_nifti_header(sources, tmp_path, shape, dtype, affine, whole, modality):
    work = fresh(tmp_path / "work")
    case = work / CASE
    shutil.copytree(sources / "cases" / CASE, case)
    matrix = declared_affine(affine, case)
    target = case / f"{CASE}_{modality}.nii.gz"
    write_nifti(target, shape, dtype, matrix, whole)
    before = target.read_bytes()
    code, err, peak = invoke(["prepare", case, "--out", work / "s.h5"])
    assert_invariant(code, err, peak, CASE)
    assert target.read_bytes() == before
    if code == 0:
        with Store(work / "s.h5") as store:
            assert store.case_ids == [CASE]
            image, label = store.read_volume(CASE)
            assert np.isfinite(image).all() and set(np.unique(label)) <= {0, 1, 2, 3}
    else:
        assert not (work / "s.h5").exists()


def write_slice(path: Path, image: dict, mask: dict) -> None:
    """A Kaggle slice file whose 'image' and 'mask' are described, never filled (chunked, empty)."""
    with h5py.File(path, "w") as handle:
        for key, spec in (("image", image), ("mask", mask)):
            if spec["kind"] == "missing":
                continue
            if spec["kind"] == "group":
                handle.create_group(key)
                continue
            shape = spec["shape"]
            chunks = tuple(min(s, 64) for s in shape) if shape else None
            dataset = handle.create_dataset(key, shape=shape, dtype=spec["dtype"], chunks=chunks)
            if int(np.prod(shape)) <= 24 * 24 * 4:
                dataset[()] = np.ones(shape, dtype=spec["dtype"]) if spec["dtype"] != "S1" else b"x"


def dataset_specs() -> st.SearchStrategy:
    shapes = st.lists(st.integers(1, 40000), min_size=1, max_size=4).map(tuple) | st.sampled_from(
        [(24, 24, 4), (24, 24, 3), (24, 24)]
    )
    return st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["dataset", "dataset", "dataset", "group", "missing"]),
            "shape": shapes,
            "dtype": st.sampled_from(["f8", "f4", "u1", "i2", "c8", "S1"]),
        }
    )


@EXAMPLES
@given(image=dataset_specs(), mask=dataset_specs(), index=st.integers(0, 9))
def test_any_kaggle_slice_file(sources, tmp_path, image, mask, index):
    work = fresh(tmp_path / "work")
    folder = work / "kaggle"
    shutil.copytree(sources / "kaggle", folder)
    target = folder / f"volume_1_slice_{index}.h5"
    write_slice(target, image, mask)
    before = target.read_bytes()
    code, err, peak = invoke(["prepare", folder, "--out", work / "s.h5"])
    assert_invariant(code, err, peak, str(folder))
    assert target.read_bytes() == before
    assert (code == 0) == (work / "s.h5").exists()


CONFIG_KEYS = ["lr", "epochs", "channels", "size", "target", "model", "norm", "seed", "warmup_epochs",
               "batch_size", "amp", "device", "folds", "fold", "unknown", "batch-size", "split"]  # fmt: skip
LEAVES = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.booleans()
    | st.none()
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@EXAMPLES
@given(
    mapping=st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=12), VALUES, max_size=6),
    raw=st.none() | st.text(max_size=200),
)
def test_any_yaml_config(tmp_path, mapping, raw):
    work = fresh(tmp_path / "work")
    config = work / "c.yaml"
    config.write_text(yaml.safe_dump(mapping) if raw is None else raw)
    code, err, peak = invoke(
        ["train", "--data", work / "missing.h5", "--out", work / "r", "--config", config]
    )
    assert_invariant(code, err, peak, "")  # the store never exists: it must fail, naming what is wrong
    assert code == 1 and ("c.yaml" in err or "missing.h5: store does not exist" in err), err
    assert not (work / "r").exists()


@pytest.fixture(scope="module")
def packed(trained_run, tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("packed") / "model.pt"
    assert main(["pack", str(trained_run), "--out", str(model)]) == 0
    return model


@EXAMPLES
@given(
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=4),
    cut=st.none() | st.floats(0, 1),
    tail=st.binary(max_size=64),
)
def test_any_model_file_given_to_pack(packed, tmp_path, flips, cut, tail):
    """A model file with any bytes changed, cut short or grown is packed whole and right, or named."""
    from tumorseg.checkpoint import load_network

    work = fresh(tmp_path / "work")
    data = bytearray(packed.read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    data = data[: int(cut * len(data))] if cut is not None else data
    (work / "model.pt").write_bytes(bytes(data) + tail)
    code, err, peak = invoke(["pack", work / "model.pt", "--out", work / "out.pt"])
    assert_invariant(code, err, peak, "model.pt")
    if code == 0:  # whatever changed, the weights that come out are the ones packed
        original, repacked = load_network(packed)["model"], load_network(work / "out.pt")["model"]
        assert original.keys() == repacked.keys()
        assert all(torch.equal(original[name], repacked[name]) for name in original)
    else:
        assert not (work / "out.pt").exists()


SPLIT_VALUES = st.none() | st.integers() | st.text(max_size=6) | st.lists(st.text(max_size=6), max_size=4)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)  # fmt: skip
@given(
    split=st.dictionaries(
        st.sampled_from(["train", "val", "test", "provenance", "x"]), SPLIT_VALUES, max_size=5
    )
)
def test_any_split_in_a_fold_given_to_cv(trained_run, cohort, tmp_path, split):
    """A fold run whose split.json holds anything is cross-validated with the other, or named."""
    work = fresh(tmp_path / "work")
    for fold in ("fold-0", "fold-1"):
        shutil.copytree(
            trained_run, work / "cv" / fold, ignore=shutil.ignore_patterns("*.onnx", "evaluation-*")
        )
    (work / "cv" / "fold-1" / "split.json").write_text(json.dumps(split))
    code, err, peak = invoke(["cv", work / "cv", "--data", cohort])
    assert_invariant(code, err, peak, "")
    assert code == 1 and "fold-" in err, err  # two folds validating the same patients never pass


@EXAMPLES
@given(**NIFTI_HEADERS)
def test_any_label_map_given_to_compare(sources, tmp_path, shape, dtype, affine, whole):
    work = fresh(tmp_path / "work")
    case = sources / "cases" / CASE
    matrix = declared_affine(affine, case)
    seg = work / "followup_seg.nii.gz"
    write_nifti(seg, shape, dtype, matrix, whole)
    code, err, peak = invoke(
        ["compare", case, case, "--out", work / "out", "--seg", case / f"{CASE}_seg.nii.gz", seg]
    )
    assert_invariant(code, err, peak, "followup_seg.nii.gz")
    if code == 0:
        record = json.loads((work / "out" / "comparison.json").read_text())
        assert set(record["visits"]) == {"baseline", "followup"}
    else:
        assert not (work / "out").exists()


#: What a forged DICOM file declares: a header element of one image of a series, and its value.
DICOM_FIELDS = {
    "Rows": st.integers(0, 70000),
    "Columns": st.integers(0, 70000),
    "BitsAllocated": st.sampled_from([0, 1, 7, 8, 12, 16, 32, 64]),
    "PixelRepresentation": st.integers(0, 3),
    "SamplesPerPixel": st.integers(0, 4),
    "NumberOfFrames": st.integers(0, 10**9).map(str),
    "ImagePositionPatient": st.lists(st.sampled_from(["0", "-1e30", "nan", "inf", "1e400", "x"]), max_size=4),
    "ImageOrientationPatient": st.lists(st.sampled_from(["0", "1", "-1", "nan", "0.5"]), max_size=7),
    "PixelSpacing": st.lists(st.sampled_from(["0", "-1", "1e-30", "1e30", "nan", "1"]), max_size=3),
    "SeriesDescription": st.text(max_size=80),
    "PixelData": st.sampled_from([b"", b"\0", b"\1" * 100, b"\0" * 4096]),
}


@EXAMPLES
@given(field=st.sampled_from(sorted(DICOM_FIELDS)), data=st.data())
def test_any_dicom_header_given_to_convert(tmp_path, field, data):
    """A series of which one image declares anything is converted, or the study is named."""
    import SimpleITK as sitk
    from pydicom import dcmread

    from tumorseg.raw import dicom

    work = fresh(tmp_path / "work")
    volume = sitk.GetImageFromArray(np.random.default_rng(0).integers(1, 900, (12, 16, 16)).astype(np.int16))
    dicom.write_series(volume, work / "study" / "s", "t1_mprage_sag")
    path = sorted((work / "study" / "s").iterdir())[5]
    image = dcmread(path)
    value = data.draw(DICOM_FIELDS[field])
    try:
        setattr(image, field, value)
        image.save_as(path)
    except (ValueError, TypeError, OverflowError, struct_error):
        event("value the DICOM writer refuses")
        return
    before = {p: p.read_bytes() for p in (work / "study" / "s").iterdir()}
    code, err, peak = invoke(["convert", work / "study", "--out", work / "out"])
    assert_invariant(code, err, peak, "study")
    assert {p: p.read_bytes() for p in (work / "study" / "s").iterdir()} == before
    if code == 0:
        assert nib.load(work / "out" / "t1.nii.gz").shape[:2] == (16, 16)
    else:
        assert not (work / "out").exists()
