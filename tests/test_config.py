import argparse
from pathlib import Path

import h5py
import pytest
import torch

from tumorseg.errors import TumorsegError
from tumorseg.training.config import (
    TrainConfig,
    add_arguments,
    from_mapping,
    load_config,
    overrides,
    save_config,
)
from tumorseg.training.sampling import EpochData


def test_defaults_are_valid_and_round_trip(tmp_path):
    config = TrainConfig().validate()
    save_config(config, tmp_path / "c.yaml")
    assert from_mapping(load_config(tmp_path / "c.yaml"), "c.yaml") == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"learning_rate": 1}, "unknown config key 'learning_rate'"),
        ({"batch-size": 4}, "did you mean batch_size"),
        ({"lr": -1}, "lr = -1.0 is out of range"),
        ({"target": "voxels"}, "target = 'voxels' is out of range .expected regions or labels"),
        ({"epochs": 2.5}, "epochs must be int"),
        ({"amp": "yes"}, "amp must be true or false"),
        ({"channels": 16}, "channels must be a list"),
        ({"folds": 3, "fold": 3}, "fold = 3 is out of range"),
        ({"size": [8, 8]}, "size = .8, 8. is out of range"),
        ({"augment_scaling": 1.0}, "augment_scaling = 1.0 is out of range"),
        (
            {"model": "monai_attention_unet", "deep_supervision": True},
            "deep_supervision needs model attention_unet",
        ),
    ],
)
def test_bad_values_are_named(values, message):
    with pytest.raises(TumorsegError, match=message):
        from_mapping(values, "my.yaml")


def test_bad_files(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(TumorsegError, match="a config file is a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("lr: [\n")
    with pytest.raises(TumorsegError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(TumorsegError, match="does not exist"):
        load_config(tmp_path / "none.yaml")


def test_flags_override_the_file_and_only_when_given(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--batch-size", "4", "--no-amp", "--channels", "8", "16"])
    assert overrides(args) == {"batch_size": 4, "amp": False, "channels": [8, 16]}
    base = from_mapping({"batch_size": 32, "lr": 0.01}, "file")
    merged = from_mapping(overrides(args), "flags", base)
    assert (merged.batch_size, merged.lr, merged.amp, merged.channels) == (4, 0.01, False, [8, 16])
    assert overrides(parser.parse_args([])) == {}


def test_the_augmentation_ranges_reach_the_augmentation(store):
    ranges = {"augment_rotation": 30, "augment_scaling": 0.25, "augment_intensity": 0.2}
    config = from_mapping({**ranges, "augment_per_sequence": True}, "recipe.yaml")
    with h5py.File(store) as f:
        cases = sorted(f["cases"])[:2]
    augmentation = EpochData(store, cases, config, 1, torch.device("cpu")).augmentation
    assert (augmentation.max_degrees, augmentation.max_scaling) == (30, 0.25)
    assert (augmentation.max_intensity, augmentation.per_sequence) == (0.2, True)


RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_every_recipe_file_is_a_valid_config(recipe):
    config = from_mapping(load_config(recipe), recipe.name)
    assert config.model.name == "attention_unet" and config.epochs >= 1


def test_a_config_on_a_base_overrides_it_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model:\n  channels: [8, 16]\n  deep_supervision: true\nepochs: 3\nlr: 0.01\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/recipe.yaml").write_text(
        "base: ../base.yaml\nmodel:\n  channels: [4, 8]\nmodality_dropout: 0.2\nepochs: 5\n"
    )
    config = from_mapping(load_config(tmp_path / "sub/recipe.yaml"), "recipe.yaml")
    assert (config.channels, config.deep_supervision, config.modality_dropout) == ([4, 8], True, 0.2)
    assert (config.epochs, config.lr) == (5, 0.01)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "b.yaml: base files nest in a loop"),
        ({"a.yaml": "base: a.yaml\n"}, "a.yaml: base files nest in a loop"),
        ({"a.yaml": "base: none.yaml\n"}, "a.yaml: its base 'none.yaml' is not a file"),
        ({"a.yaml": "base: 5\n"}, "a.yaml: base must name a config file"),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "- 1\n"}, "b.yaml: a config file is a mapping"),
    ],
)
def test_bad_bases_are_named(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(TumorsegError, match=message):
        load_config(tmp_path / "a.yaml")
