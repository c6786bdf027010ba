import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from tumorseg.checkpoint import load_checkpoint, save_checkpoint
from tumorseg.cli import main
from tumorseg.errors import TumorsegError
from tumorseg.inference.segmenter import Segmenter
from tumorseg.metrics import region_dice
from tumorseg.postprocessing import PostProcessing, growth
from tumorseg.postprocessing.choice import OutOfFoldMap, choose_postprocessing

SURE = np.ones((20, 20, 20), np.float32)  # core probabilities under which the core rule drops nothing


def blobs() -> np.ndarray:
    """A 1000-voxel tumor (edema around an enhancing core of 27) and a 1-voxel and an 8-voxel island."""
    classes = np.zeros((20, 20, 20), np.uint8)
    classes[2:12, 2:12, 2:12] = 2
    classes[5:8, 5:8, 5:8] = 3
    classes[18, 18, 18] = 2
    classes[15:17, 15:17, 15:17] = 1
    return classes


def test_islands_smaller_than_the_threshold_go_but_never_the_largest_component():
    classes = blobs()
    assert np.array_equal(PostProcessing().apply(classes, 0.001), classes)
    cleaned = PostProcessing(min_island_ml=0.005).apply(classes, 0.001)  # 1 and 8 voxels of 1 uL
    assert cleaned[18, 18, 18] == 0 and (cleaned[15:17, 15:17, 15:17] == 1).all()
    assert np.array_equal(cleaned[:13, :13, :13], classes[:13, :13, :13])
    only = PostProcessing(min_island_ml=1e6).apply(classes, 0.001)
    assert np.count_nonzero(only) == 1000  # the largest stays, however small
    assert np.array_equal(PostProcessing(min_island_ml=0.005).apply(classes, 1.0), classes)  # 1 mL voxels


def doubtful_core() -> tuple[np.ndarray, np.ndarray]:
    """``blobs`` with a second piece of core inside the edema, and core probabilities: 0.95 on the
    enhancing core, 0.88 on the necrotic island, 0.7 on the new piece (the largest core of all)."""
    classes = blobs()
    classes[3:11, 9:11, 3:11] = 1  # 128 voxels, larger than the enhancing core's 27
    probability = np.zeros(classes.shape, np.float32)
    probability[classes == 3] = 0.95
    probability[15:17, 15:17, 15:17] = 0.88
    probability[3:11, 9:11, 3:11] = 0.7
    return classes, probability


def test_doubtful_pieces_of_core_become_edema_but_never_the_largest():
    classes, probability = doubtful_core()
    assert np.array_equal(
        PostProcessing(min_core_probability=0.7).apply(classes, 0.001, probability), classes
    )
    cored = PostProcessing(min_core_probability=0.92).apply(classes, 0.001, probability)
    assert (cored[15:17, 15:17, 15:17] == 2).all()  # the island's mean 0.88 < 0.92: edema
    assert np.array_equal(cored[:13, :13, :13], classes[:13, :13, :13])  # the largest piece stays
    assert np.array_equal(cored > 0, classes > 0)  # the whole tumor is untouched
    classes[3:11, 9:11, 3:11] = 2  # without the large piece, the enhancing core is the largest
    cored = PostProcessing(min_core_probability=0.99).apply(classes, 0.001, probability)
    assert (cored[5:8, 5:8, 5:8] == 3).all() and not (cored == 1).any()
    with pytest.raises(ValueError, match="core probabilities"):
        PostProcessing(min_core_probability=0.5).apply(classes, 0.001)


def test_the_core_rule_is_chosen_where_the_doubtful_pieces_are_false():
    classes, probability = doubtful_core()
    reference = classes.copy()
    reference[15:17, 15:17, 15:17] = 2  # the confident-enough island is false, the rest true
    choice = choose_postprocessing([OutOfFoldMap(classes, probability, reference, 0.001, 0)])
    assert choice.chosen == PostProcessing(min_core_probability=0.9)  # the smallest that drops 0.88
    assert "core pieces of mean probability < 0.9 to edema" in choice.table()


def test_a_small_enhancing_tumor_in_total_becomes_necrosis():
    classes = blobs()
    assert np.array_equal(PostProcessing(min_et_ml=0.027).apply(classes, 0.001), classes)  # 27 uL: kept
    relabeled = PostProcessing(min_et_ml=0.028).apply(classes, 0.001)
    assert not (relabeled == 3).any() and (relabeled[5:8, 5:8, 5:8] == 1).all()
    assert np.array_equal(relabeled != 0, classes != 0)


@pytest.mark.parametrize(
    "mapping",
    [
        [],
        {"min_island_ml": -1},
        {"min_et_ml": "1"},
        {"min_et_ml": True},
        {"islands": 1},
        {"min_core_probability": 1},
        {"tumor_growth": [0.5]},
    ],
)
def test_a_malformed_rule_is_refused(mapping, tmp_path):
    (tmp_path / "rule.json").write_text(json.dumps(mapping))
    with pytest.raises(TumorsegError, match="rule.json: post-processing"):
        PostProcessing.from_file(tmp_path / "rule.json")


def test_thresholds_are_chosen_only_when_they_raise_the_mean_dice():
    reference = blobs()
    reference[reference == 3] = 1  # a patient without enhancing tumor ...
    reference[18, 18, 18] = reference[15:17, 15:17, 15:17] = 0  # ... and without the islands
    choice = choose_postprocessing([OutOfFoldMap(blobs(), SURE, reference, 0.001, 0)] * 3)
    assert choice.chosen == PostProcessing(min_island_ml=0.1, min_et_ml=0.05)  # the smallest that work
    assert {row["dice_ET"] for row in choice.rows if row["min_et_ml"] >= 0.05} == {1.0}
    assert "chosen: tumor islands < 0.1 mL removed; enhancing tumor < 0.05 mL" in choice.table()
    unchanged = choose_postprocessing([OutOfFoldMap(reference, SURE, reference, 0.001, 0)])
    assert unchanged.chosen == PostProcessing()
    assert not choice.nested and "other folds" not in choice.table()  # one fold: nothing nested


def test_each_fold_is_also_scored_with_the_rule_the_other_folds_choose():
    """Fold 0's islands are false positives, fold 1's are real tumor: chosen on all patients, the
    island rule flatters itself; fold by fold, each gets the other's choice and pays for it."""
    islands = blobs()
    clean = islands.copy()
    clean[18, 18, 18] = clean[15:17, 15:17, 15:17] = 0
    patients = [OutOfFoldMap(islands, SURE, clean, 0.001, 0)] * 3 + [
        OutOfFoldMap(islands, SURE, islands, 0.001, 1)
    ] * 2
    choice = choose_postprocessing(patients)
    assert choice.chosen == PostProcessing(min_island_ml=0.1)  # 3 patients gain more than 2 lose
    assert choice.nested_rules == [PostProcessing(), PostProcessing(min_island_ml=0.1)]
    fold_0 = region_dice(islands, clean)  # kept the islands fold 1 chose to keep
    fold_1 = region_dice(PostProcessing(min_island_ml=0.1).apply(islands, 0.001), islands)
    assert np.allclose(choice.nested[""], (3 * fold_0 + 2 * fold_1) / 5)
    best = next(
        r
        for r in choice.rows
        if (r["min_island_ml"], r["min_core_probability"], r["min_et_ml"]) == (0.1, 0, 0)
    )
    assert choice.nested[""].mean() < best["dice_mean"]
    assert "each fold: chosen on the other folds" in choice.table()


def test_the_rule_is_read_from_the_model_file(segmenting_run, cohort, tmp_path):
    """One model packed with three rules: predict applies each file's own."""
    assert main(["pack", str(segmenting_run), "--out", str(tmp_path / "model.pt")]) == 0
    state = load_checkpoint(tmp_path / "model.pt")
    state["model"]["head.bias"][2] += 6  # an enhancing tumor in every case, for the rule to act on
    case, labels = cohort.parent / "cases" / "Phantom_003", {}
    grow_all = [50.0] + [0.0] * (growth.WEIGHTS - 1)  # every rim voxel in the brain is tumor
    rules = {
        "none": {},
        "no-et": {"min_et_ml": 1e5},
        "largest": {"min_island_ml": 1e5},
        "grown": {"tumor_growth": grow_all},
    }
    for name, rule in rules.items():
        save_checkpoint({**state, "postprocessing": rule}, tmp_path / f"{name}.pt")
        assert Segmenter(tmp_path / f"{name}.pt").postprocessing == PostProcessing.from_mapping(rule, name)
        out = tmp_path / f"{name}.nii.gz"
        assert main(["predict", "--model", str(tmp_path / f"{name}.pt"), str(case), "--out", str(out)]) == 0
        labels[name] = np.asarray(nib.load(out).dataobj)
    assert (labels["none"] == 4).any() and not (labels["no-et"] == 4).any()
    assert np.array_equal(labels["no-et"] > 0, labels["none"] > 0)
    assert ndimage.label(labels["largest"] > 0, np.ones((3, 3, 3)))[1] == 1
    added = (labels["grown"] > 0) & (labels["none"] == 0)
    assert added.any() and set(np.unique(labels["grown"][added])) == {2}  # the rim, as edema
    assert np.array_equal(labels["grown"][labels["none"] > 0], labels["none"][labels["none"] > 0])
    raw = tmp_path / "raw.nii.gz"
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "no-et.pt"),
                str(case),
                "--out",
                str(raw),
                "--no-postprocessing",
            ]
        )
        == 0
    )
    assert np.array_equal(np.asarray(nib.load(raw).dataobj), labels["none"])


def test_a_packed_model_is_half_the_size_and_segments_the_same(segmenting_run, cohort, tmp_path):
    assert main(["pack", str(segmenting_run), "--out", str(tmp_path / "half.pt")]) == 0
    assert main(["pack", str(segmenting_run), "--out", str(tmp_path / "full.pt"), "--fp32"]) == 0
    half, full = load_checkpoint(tmp_path / "half.pt"), load_checkpoint(tmp_path / "full.pt")
    assert {t.dtype for t in half["model"].values() if t.is_floating_point()} == {torch.float16}
    assert "optimizer" not in full and full["postprocessing"] == PostProcessing().to_dict()
    assert (half["training"]["epochs"], half["training"]["lr"]) == (3, 0.02)  # how it learned (conftest)
    weights = [sum(t.numel() * t.element_size() for t in c["model"].values()) for c in (half, full)]
    assert weights[0] < 0.51 * weights[1]  # the file's own overhead is what a tiny model mostly is
    from tumorseg.data.store import Store

    with Store(cohort) as store:
        volume, _ = store.read_volume(store.case_ids[0])
    original = Segmenter(segmenting_run).probabilities(volume)
    packed = Segmenter(tmp_path / "half.pt").probabilities(volume)
    assert np.abs(packed - original).max() < 0.02
    assert main(["pack", str(segmenting_run), "--out", str(tmp_path / "half.pt")]) == 1  # exists


def test_the_nested_choice_says_its_gain_patient_by_patient_with_its_standard_error():
    islands = blobs()
    clean = islands.copy()
    clean[18, 18, 18] = clean[15:17, 15:17, 15:17] = 0
    patients = [OutOfFoldMap(islands, SURE, clean, 0.001, fold % 2) for fold in range(4)]
    choice = choose_postprocessing(patients)
    gain, error = choice.nested_gain[""]
    removed = region_dice(PostProcessing(min_island_ml=0.1).apply(islands, 0.001), clean).mean()
    assert gain == pytest.approx(removed - region_dice(islands, clean).mean()) and gain > 0
    assert error == pytest.approx(0.0, abs=1e-12)  # every patient gains the same
    assert "against none, patient by patient: +" in choice.table()


def test_the_rule_a_fold_is_scored_with_never_depends_on_that_folds_own_patients():
    """Nested: whatever the held-out fold's references say (islands that are tumor, or not), the
    rule it gets is the one the other folds chose; only the other folds' references move it."""
    islands = blobs()
    clean = islands.copy()
    clean[18, 18, 18] = clean[15:17, 15:17, 15:17] = 0

    def fold_rules(fold_0: np.ndarray, others: np.ndarray) -> list[PostProcessing]:
        patients = [OutOfFoldMap(islands, SURE, fold_0, 0.001, 0)] * 2
        patients += [OutOfFoldMap(islands, SURE, others, 0.001, k) for k in (1, 2) for _ in range(2)]
        return choose_postprocessing(patients).nested_rules

    assert fold_rules(clean, clean)[0] == fold_rules(islands, clean)[0]  # fold 0's truth: no say
    assert fold_rules(clean, clean)[0] != fold_rules(clean, islands)[0]  # the other folds': all of it
