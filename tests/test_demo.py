"""The README's demo sample is what the demo prints: same lines, same format, numbers aside."""

import re
from dataclasses import replace

import pytest

from conftest import REPO
from tumorseg import demo
from tumorseg.errors import TumorsegError

NUMBER = re.compile(r"\d+(\.\d+)?")


def readme_sample() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text[text.index("\ndone in ") + 1 :]
    return block[: block.index("```")].rstrip().splitlines()


def shape(lines: list[str]) -> list[str]:
    return [NUMBER.sub("N", line.rstrip()) for line in lines]


def test_the_demo_prints_what_the_readme_shows(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_SHAPE", (24, 24, 12))
    monkeypatch.setattr(demo, "DEMO_TRAINING", replace(demo.DEMO_TRAINING, epochs=1, size=[24, 24]))
    out = tmp_path / "demo-output"
    demo.run_demo(out)
    printed = capsys.readouterr().out.splitlines()
    tail = printed[printed.index(next(line for line in printed if line.startswith("done in "))) :]
    expected = [line.replace("demo-output", str(out)) for line in readme_sample()]
    assert shape([line.replace(str(out), "OUT") for line in tail]) == shape(
        [line.replace(str(out), "OUT") for line in expected]
    )
    # the folder is marked as the demo's (a re-run replaces its outputs); one it did not make is refused
    assert (out / demo.MARKER).exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(TumorsegError, match="not made by the demo"):
        demo.run_demo(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
