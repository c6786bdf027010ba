import json

import pytest

from tumorseg.data.splits import load_split, save_split, site_of, split_cases
from tumorseg.errors import TumorsegError

IDS = [f"case_{i:02d}" for i in range(20)]


def test_split_is_by_patient_complete_and_seeded():
    split = split_cases(IDS, val_fraction=0.2, test_fraction=0.25, seed=3)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (11, 4, 5)
    assert sorted(split["train"] + split["val"] + split["test"]) == IDS
    assert split == split_cases(list(reversed(IDS)), val_fraction=0.2, test_fraction=0.25, seed=3)
    assert split != split_cases(IDS, val_fraction=0.2, test_fraction=0.25, seed=4)


def test_kfold_shares_the_test_set_and_covers_the_rest_once():
    folds = [split_cases(IDS, test_fraction=0.2, seed=1, folds=4, fold=k) for k in range(4)]
    assert len({tuple(f["test"]) for f in folds}) == 1
    vals = [c for f in folds for c in f["val"]]
    assert sorted(vals) == sorted(set(IDS) - set(folds[0]["test"]))
    for f in folds:
        assert not set(f["val"]) & set(f["train"])


def test_tiny_cohorts_still_get_every_part():
    split = split_cases(IDS[:3], val_fraction=0.1, test_fraction=0.1)
    assert [len(split[p]) for p in ("train", "val", "test")] == [1, 1, 1]
    with pytest.raises(TumorsegError, match="too few"):
        split_cases(IDS[:2])


def test_save_and_load(tmp_path):
    split = split_cases(IDS, seed=0)
    save_split(tmp_path / "s.json", split, seed=0)
    assert load_split(tmp_path / "s.json") == split
    assert json.loads((tmp_path / "s.json").read_text())["provenance"] == {"seed": 0}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a JSON split"),
        ('{"train": []}', "needs lists"),
        ('{"train": ["a"], "val": ["a"], "test": []}', "both train and val"),
    ],
)
def test_bad_split_files(tmp_path, content, message):
    (tmp_path / "s.json").write_text(content)
    with pytest.raises(TumorsegError, match=message):
        load_split(tmp_path / "s.json")


SITED = [
    f"Brats18_{site}_{i:03d}_1"
    for site, n in (("CBICA", 7), ("2013", 3), ("TCIA01", 2), ("TCIA02", 2))
    for i in range(n)
]


def test_folds_grouped_by_site_hold_whole_sites_and_every_patient_once():
    folds = [split_cases(SITED, test_fraction=0, folds=3, fold=k, group_by="site") for k in range(3)]
    for split in folds:  # no fold model sees a site it is scored on
        assert split["val"] and not {site_of(c) for c in split["val"]} & {site_of(c) for c in split["train"]}
    assert sorted(c for split in folds for c in split["val"]) == sorted(SITED)
    assert [len(split["val"]) for split in folds] == [7, 3, 4]  # the largest site alone, the rest balanced
    assert folds == [split_cases(SITED, test_fraction=0, folds=3, fold=k, group_by="site") for k in range(3)]
    with pytest.raises(TumorsegError, match="4 groups .sites. are too few for 5 grouped folds"):
        split_cases(SITED, test_fraction=0, folds=5, fold=0, group_by="site")
    assert site_of("Brats18_TCIA10_637_1") == "TCIA10" and site_of("BraTS2021_00000") == "BraTS2021_00000"
