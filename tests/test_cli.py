import json
import subprocess
import sys

import pytest

from tumorseg.cli import main

COMMANDS = (
    "synth",
    "prepare",
    "inspect",
    "split",
    "train",
    "evaluate",
    "cv",
    "report",
    "predict",
    "export",
    "pack",
    "view",
    "demo",
)


def test_help_teaches_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text
    assert "tumorseg prepare phantoms --out store.h5" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert len(capsys.readouterr().out.splitlines()) > 5


def test_predict_help_states_the_defaults_inference_uses(capsys):
    """The command line spells out engines and coarse-search figures without importing PyTorch to read
    them, so this ties the two together."""
    from tumorseg.data.preprocess import MIN_BACKGROUND
    from tumorseg.inference.members import ENGINES
    from tumorseg.inference.sliding_window import BRAIN_MARGIN, COARSE_STEP, FINE_MARGIN

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(("auto", *ENGINES)) + "}" in text
    assert f"widened by {FINE_MARGIN} pixels" in text
    assert f"within its brain's box, widened by {BRAIN_MARGIN} pixels" in text
    assert f"({COARSE_STEP}, predict's default" in text
    assert f"fewer than {MIN_BACKGROUND * 100:g} % of voxels are 0 is refused" in text


def test_pipeline_through_the_cli(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "ph"), "--cases", "3", "--shape", "32x32x16"]) == 0
    assert (
        main(["synth", str(tmp_path / "kg"), "--cases", "1", "--shape", "32x32x16", "--layout", "kaggle"])
        == 0
    )
    store = tmp_path / "store.h5"
    assert main(["prepare", str(tmp_path / "ph"), str(tmp_path / "kg"), "--out", str(store)]) == 0
    assert "added 4 cases" in capsys.readouterr().out
    assert main(["inspect", str(store), "--cases"]) == 0
    out = capsys.readouterr().out
    assert "cases         4 (4 labeled)" in out and "volume_1" in out and "Phantom_003" in out
    assert main(["inspect", str(store), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["cases"]) == 4
    assert (
        main(["split", str(store), "--out", str(tmp_path / "split.json"), "--val", "0.25", "--test", "0.25"])
        == 0
    )
    split = json.loads((tmp_path / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == [
        "Phantom_001",
        "Phantom_002",
        "Phantom_003",
        "volume_1",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "{tmp}/nowhere", "--out", "{tmp}/s.h5"], "nowhere: does not exist"),
        (["prepare", "{tmp}", "--out", "{tmp}/s.h5"], "no BraTS case folders or Kaggle slice files"),
        (["inspect", "{tmp}/missing.h5"], "store does not exist"),
        (["split", "{tmp}/missing.h5", "--out", "{tmp}/x.json"], "store does not exist"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, capsys, args, message):
    code = main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("tumorseg: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_real_process_prints_no_traceback(tmp_path):
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "X_flair.nii.gz").write_bytes(b"\x1f\x8b broken")
    for name in ("t1", "t1ce", "t2", "seg"):
        (tmp_path / "case" / f"X_{name}.nii.gz").write_bytes(b"")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tumorseg",
            "prepare",
            str(tmp_path / "case"),
            "--out",
            str(tmp_path / "s.h5"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "X_flair.nii.gz: not a readable NIfTI" in run.stderr
    assert not (tmp_path / "s.h5").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.h5.tmp")] == []


def test_prepare_reports_each_case_without_a_terminal(tmp_path):
    from conftest import tumorseg

    assert main(["synth", str(tmp_path / "ph"), "--cases", "2", "--shape", "24x24x8"]) == 0
    run = tumorseg("prepare", tmp_path / "ph", "--out", tmp_path / "s.h5")
    assert run.returncode == 0, run.stderr
    assert "prepare 1/2: Phantom_001" in run.stdout and "prepare 2/2: Phantom_002" in run.stdout
