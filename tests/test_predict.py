import json
import threading

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import tampered, tumorseg
from tumorseg.cli import main
from tumorseg.data.store import Store
from tumorseg.data.synth import synthesize
from tumorseg.errors import TumorsegError
from tumorseg.inference.predict import files_from_paths, predict
from tumorseg.inference.segmenter import Segmenter


@pytest.fixture(scope="module")
def new_patients(tmp_path_factory):
    root = tmp_path_factory.mktemp("new")
    synthesize(root, 2, shape=(32, 32, 12), seed=21, progress=False)
    return root


def run_predict(model, inputs, out, **options):
    return predict(inputs, out, lambda: Segmenter(model), progress=False, **options)


def test_label_map_on_the_input_grid(trained_run, new_patients, tmp_path):
    case = new_patients / "Phantom_001"
    out = tmp_path / "seg.nii.gz"
    result = run_predict(trained_run, case, out, probabilities=True)
    source = nib.load(case / "Phantom_001_flair.nii.gz")
    written = nib.load(out)
    assert written.shape == source.shape
    np.testing.assert_array_equal(written.affine, source.affine)
    assert written.header["sform_code"] == source.header["sform_code"]
    assert written.header["qform_code"] == source.header["qform_code"]
    np.testing.assert_array_equal(written.header.get_zooms(), source.header.get_zooms())
    assert written.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1, 2, 4}
    probabilities = nib.load(tmp_path / "seg_probabilities.nii.gz")
    assert probabilities.shape == (*source.shape, 3)
    volumes = json.loads((tmp_path / "seg_volumes.json").read_text())["Phantom_001"]
    labels = np.asarray(written.dataobj)
    assert volumes["WT"] == pytest.approx(np.isin(labels, (1, 2, 4)).sum() / 1000)
    assert result.volumes["Phantom_001"] == volumes


def test_orientation_does_not_change_the_answer(trained_run, new_patients, tmp_path):
    """The same patient stored in another axis order and direction gets the same labels."""
    case = new_patients / "Phantom_002"
    ornt = np.array([[1, -1], [0, 1], [2, -1]])  # swap the first two axes, flip two of them
    for modality in ("flair", "t1", "t1ce", "t2"):
        image = nib.load(case / f"Phantom_002_{modality}.nii.gz")
        nib.save(image.as_reoriented(ornt), tmp_path / f"R_{modality}.nii.gz")
    run_predict(trained_run, case, tmp_path / "plain.nii.gz")
    reoriented = files_from_paths(*(tmp_path / f"R_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")))
    run_predict(trained_run, reoriented, tmp_path / "turned.nii.gz")
    plain, turned = nib.load(tmp_path / "plain.nii.gz"), nib.load(tmp_path / "turned.nii.gz")
    np.testing.assert_array_equal(turned.affine, nib.load(tmp_path / "R_flair.nii.gz").affine)
    io = nib.orientations.io_orientation
    back = turned.as_reoriented(nib.orientations.ornt_transform(io(turned.affine), io(plain.affine)))
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(plain.dataobj))


def test_batch_goes_on_past_a_bad_case_and_skips_finished_ones(trained_run, new_patients, tmp_path):
    cases = tmp_path / "cases"
    for folder in new_patients.iterdir():
        (cases / folder.name).mkdir(parents=True)
        for path in folder.iterdir():
            if "seg" not in path.name:
                (cases / folder.name / path.name).write_bytes(path.read_bytes())
    (cases / "Broken_1").mkdir()
    (cases / "Broken_1" / "Broken_1_flair.nii.gz").write_bytes(b"")
    out = tmp_path / "out"
    result = run_predict(trained_run, cases, out)
    assert sorted(p.name for p in result.written) == ["Phantom_001.nii.gz", "Phantom_002.nii.gz"]
    assert len(result.failed) == 1 and "T1, T1CE, T2 missing" in result.failed[0][1]
    stamp = (out / "Phantom_001.nii.gz").stat().st_mtime_ns
    again = run_predict(trained_run, cases, out)
    assert len(again.skipped) == 2 and not again.written
    assert (out / "Phantom_001.nii.gz").stat().st_mtime_ns == stamp
    assert sorted(json.loads((out / "volumes.json").read_text())) == ["Phantom_001", "Phantom_002"]
    # a batch killed between a label map and volumes.json: the re-run fills the entry in from the file
    volumes = json.loads((out / "volumes.json").read_text())
    (out / "volumes.json").write_text(json.dumps({"Phantom_002": volumes["Phantom_002"]}))
    run_predict(trained_run, cases, out)
    assert json.loads((out / "volumes.json").read_text()) == volumes
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_labels_2023_and_tta(trained_run, new_patients, tmp_path):
    run_predict(trained_run, new_patients / "Phantom_001", tmp_path / "a.nii.gz", labels="brats2023")
    labels = np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3}
    tta = predict(
        new_patients / "Phantom_001",
        tmp_path / "b.nii.gz",
        lambda: Segmenter(trained_run, tta=True),
        progress=False,
    )
    assert tta.written


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda t, c: (t / "seg.nii.gz").write_bytes(b"old"), "exists; pass --overwrite"),
        (lambda t, c: (c / "Phantom_001_t1ce.nii.gz").unlink(), "T1CE missing, and .* trained on all four"),
        (
            lambda t, c: (c / "Phantom_001_t2.nii.gz").write_bytes(
                (c / "Phantom_001_t2.nii.gz").read_bytes()[:99]
            ),
            "not a readable NIfTI",
        ),
    ],
)
def test_bad_predict_requests(trained_run, new_patients, tmp_path, setup, message):
    case = tmp_path / "Phantom_001"
    case.mkdir()
    for path in (new_patients / "Phantom_001").iterdir():
        (case / path.name).write_bytes(path.read_bytes())
    setup(tmp_path, case)
    before = (tmp_path / "seg.nii.gz").read_bytes() if (tmp_path / "seg.nii.gz").exists() else None
    with pytest.raises(TumorsegError, match=message):
        run_predict(trained_run, case, tmp_path / "seg.nii.gz")
    after = (tmp_path / "seg.nii.gz").read_bytes() if (tmp_path / "seg.nii.gz").exists() else None
    assert after == before


def test_checkpoints_that_do_not_fit(trained_run, tmp_path):
    import torch

    state = torch.load(trained_run / "best.pt", weights_only=True)
    state["model_config"]["channels"] = [8, 16]
    torch.save(tampered(state), tmp_path / "other.pt")
    with pytest.raises(TumorsegError, match="weights do not fit"):
        Segmenter(tmp_path / "other.pt")
    state = torch.load(trained_run / "best.pt", weights_only=True)
    state["model"][7] = torch.zeros(1)  # a key of another type: named, not a TypeError
    torch.save(tampered(state), tmp_path / "extra.pt")
    with pytest.raises(TumorsegError, match=r"\(7: \[1\] in the file, none in the model\)"):
        Segmenter(tmp_path / "extra.pt")
    state = torch.load(trained_run / "best.pt", weights_only=True)
    state["model_config"]["modalities"] = ["t1", "t2"]
    torch.save(tampered(state), tmp_path / "two.pt")
    with pytest.raises(TumorsegError, match="trained on modalities"):
        Segmenter(tmp_path / "two.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TumorsegError, match="no best.pt or last.pt"):
        Segmenter(tmp_path / "empty")


def test_cli_predict_with_four_files(trained_run, new_patients, tmp_path):
    case = new_patients / "Phantom_002"
    files = [f"--{m}={case / f'Phantom_002_{m}.nii.gz'}" for m in ("flair", "t1", "t1ce", "t2")]
    run = tumorseg("predict", "--model", trained_run, *files, "--out", tmp_path / "s.nii.gz")
    assert run.returncode == 0, run.stderr
    assert "Phantom_002 " in run.stdout and "WT mL" in run.stdout  # the case, named by its files
    refused = tumorseg("predict", "--model", trained_run, *files, "--out", tmp_path / "s.nii.gz")
    assert refused.returncode == 1 and "--overwrite" in refused.stderr and "Traceback" not in refused.stderr


def test_onnx_export_agrees_with_pytorch(trained_run, new_patients, tmp_path):
    from tumorseg.cli import main
    from tumorseg.data.store import Store

    assert main(["export", str(trained_run), "--format", "onnx"]) == 0
    assert (trained_run / "best.onnx").exists()
    assert main(["export", str(trained_run)]) == 1  # an export exists: kept
    assert main(["export", str(trained_run), "--overwrite"]) == 0  # ... unless asked to replace it
    torch_engine, onnx_engine = Segmenter(trained_run), Segmenter(trained_run, engine="onnx")
    with Store(json.loads((trained_run / "run.json").read_text())["store"]) as store:
        volume, _ = store.read_volume(store.case_ids[0])
    np.testing.assert_allclose(
        onnx_engine.probabilities(volume), torch_engine.probabilities(volume), atol=1e-4
    )
    for engine in ("torch", "onnx"):
        segmenter = Segmenter(trained_run, engine=engine)
        predict(
            new_patients / "Phantom_001", tmp_path / f"{engine}.nii.gz", lambda s=segmenter: s, progress=False
        )
    a, b = (np.asarray(nib.load(tmp_path / f"{e}.nii.gz").dataobj) for e in ("torch", "onnx"))
    assert (a != b).mean() < 1e-3  # only voxels within 1e-4 of probability 0.5 could differ


def test_stale_or_missing_onnx_is_refused(trained_run, tmp_path):
    import shutil

    import torch

    from tumorseg.inference.export import export_onnx

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("*.onnx"))
    with pytest.raises(TumorsegError, match="no ONNX model; run `tumorseg export"):
        Segmenter(run, engine="onnx")
    export_onnx(Segmenter(run), run / "best.onnx")
    state = torch.load(run / "best.pt", weights_only=True)
    state["epoch"] += 1  # as if training had saved a newer best since the export
    torch.save(tampered(state), run / "best.pt")
    with pytest.raises(TumorsegError, match="exported from another checkpoint"):
        Segmenter(run, engine="onnx")


def test_an_8_bit_export_predicts_like_the_model_and_says_what_it_is(trained_run, cohort, tmp_path):
    import shutil

    import onnx

    run = tmp_path / "copy"  # the export in a copy: "auto" elsewhere keeps finding none beside trained_run
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("*.onnx"))
    assert Segmenter(run, engine="auto").engine == "torch"  # no 8-bit export yet
    assert main(["export", str(run), "--int8", str(cohort)]) == 0
    exported = run / "best.int8.onnx"
    metadata = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert metadata["quantized"].startswith("int8, calibrated on") and "checkpoint_sha256" in metadata
    graph_ops = {node.op_type for node in onnx.load(str(exported)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= graph_ops
    volume, _ = Store(cohort).read_volume(Store(cohort).case_ids[0])
    full, int8 = Segmenter(run), Segmenter(run, engine="onnx-int8")
    agree = (full.classes(full.probabilities(volume)) == int8.classes(int8.probabilities(volume))).mean()
    assert agree > 0.97
    np.testing.assert_allclose(int8.probabilities(volume), full.probabilities(volume), atol=0.15)
    automatic = Segmenter(run, engine="auto")  # on this CPU, with the export beside the model
    assert automatic.engine == "onnx-int8" and "8-bit ONNX Runtime" in automatic.description
    assert Segmenter([run, run], engine="auto").engine == "onnx-int8"  # each member has its export
    assert Segmenter([run, trained_run], engine="auto").engine == "torch"  # one lacks it


def test_auto_is_the_cpu_without_asking_pytorch_where_no_gpu_driver_is(monkeypatch, tmp_path):
    """predict's engine follows the device; learning that "auto" is the CPU must not import PyTorch
    (longer than segmenting a patient), so PyTorch is asked only where a GPU driver is."""
    from tumorseg import devices

    monkeypatch.setattr(devices, "GPU_DRIVERS", (tmp_path / "no-driver",))
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    monkeypatch.setattr(devices, "resolve_device", lambda name: pytest.fail("PyTorch was asked"))
    assert devices.runs_on_cpu("auto") and devices.runs_on_cpu("cpu") and not devices.runs_on_cpu("cuda:1")
    monkeypatch.setattr(devices, "GPU_DRIVERS", (tmp_path,))  # a driver is there: PyTorch decides
    monkeypatch.setattr(devices, "resolve_device", lambda name: torch.device("cuda"))
    assert not devices.runs_on_cpu("auto")


def test_an_existing_companion_output_is_refused_before_any_model_is_read(new_patients, tmp_path, capsys):
    """What predict writes beside the label map (here the volumes JSON) is claimed before the model
    files are read (seconds for the bundled ensemble): the model named here does not even exist."""
    out = tmp_path / "seg.nii.gz"
    (tmp_path / "seg_volumes.json").write_text("{}")
    case = sorted(p for p in new_patients.iterdir() if p.is_dir())[0]
    code = main(["predict", "--model", str(tmp_path / "nowhere.pt"), str(case), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "seg_volumes.json: exists; pass --overwrite" in err, err
    assert not out.exists() and (tmp_path / "seg_volumes.json").read_text() == "{}"


def test_the_first_case_is_read_while_the_model_loads(trained_run, new_patients, tmp_path, monkeypatch):
    """Loading the models and reading a case each leave a core idle (docs/how-to/predict.md, "Fast
    by default"): predict does both at once. Here the model loads only once the case is being read."""
    from tumorseg.inference import predict as predicting

    reading, read = threading.Event(), predicting.read_inputs
    monkeypatch.setattr(predicting, "read_inputs", lambda files: reading.set() or read(files))

    def load() -> Segmenter:
        assert reading.wait(timeout=20), "the model was loaded before the case was read"
        return Segmenter(trained_run)

    assert predict(new_patients / "Phantom_001", tmp_path / "seg.nii.gz", load, progress=False).written


def test_a_model_that_does_not_load_is_named_before_a_case_that_does_not_read(new_patients, tmp_path):
    case = tmp_path / "Phantom_001"
    case.mkdir()
    for path in (new_patients / "Phantom_001").iterdir():
        (case / path.name).write_bytes(path.read_bytes()[:99] if "t2" in path.name else path.read_bytes())
    with pytest.raises(TumorsegError, match="nowhere.pt"):
        run_predict(tmp_path / "nowhere.pt", case, tmp_path / "seg.nii.gz")
