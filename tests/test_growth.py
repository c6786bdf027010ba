import numpy as np
import pytest

from tumorseg.errors import TumorsegError
from tumorseg.postprocessing import PostProcessing, growth
from tumorseg.postprocessing.choice import OutOfFoldMap, choose_postprocessing


def patient(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A predicted ball of tumor (radius 5) whose true edema reaches 2 voxels further on one side,
    where FLAIR is bright, and not on the other: (classes, regions, volume, reference)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((24, 24, 24)) - 12
    radius = np.sqrt(z**2 + y**2 + x**2)
    classes = np.where(radius <= 5, 2, 0).astype(np.uint8)
    reference = classes.copy()
    reference[(radius > 5) & (radius <= 7) & (x > 0)] = 2
    volume = rng.normal(0, 0.2, (24, 4, 24, 24)).astype(np.float32)
    volume[:, 0] += np.where(reference > 0, 2.0, 0.0)  # FLAIR
    volume[:, :, :2] = 0  # outside the brain
    regions = np.zeros((24, 3, 24, 24), np.float32)
    regions[:, 0] = np.where(classes > 0, 0.95, 0.02)
    return classes, regions, volume, reference


def test_growth_learns_the_bright_rim_and_adds_it_as_edema_within_its_reach():
    samples = []
    for seed in range(4):
        classes, regions, volume, reference = patient(seed)
        box, rim, features = growth.rim_features(classes > 0, regions, volume)
        assert features.shape == (np.count_nonzero(rim), len(growth.FEATURES))
        samples.append((features, reference[box][rim] > 0))
    weights = growth.fit(samples)
    assert len(weights) == growth.WEIGHTS and weights == growth.fit(samples)  # deterministic
    classes, regions, volume, reference = patient(9)
    grown = growth.grow(classes, regions, volume, weights)
    added = (grown > 0) & (classes == 0)
    assert set(np.unique(grown[added])) == {2}
    assert np.count_nonzero(added & (reference > 0)) > 0.9 * np.count_nonzero(
        (reference > 0) & (classes == 0)
    )
    assert np.count_nonzero(added & (reference == 0)) < 0.05 * np.count_nonzero(added)
    z, y, x = np.indices(classes.shape) - 12
    assert np.sqrt(z**2 + y**2 + x**2)[added].max() <= 5 + growth.RIM  # never beyond the rim
    assert np.array_equal(
        growth.grow(np.zeros_like(classes), regions, volume, weights), np.zeros_like(classes)
    )


def test_growth_is_kept_only_where_it_helps_the_folds_it_was_not_fitted_on():
    maps = []
    for seed in range(6):
        classes, regions, volume, reference = patient(seed)
        maps.append(OutOfFoldMap(classes, regions[:, 1], reference, 0.001, seed % 3, (regions, volume)))
    choice = choose_postprocessing(maps)
    assert len(choice.chosen.tumor_growth) == growth.WEIGHTS
    assert choice.nested[", with growth fitted on them"][0] > choice.nested[""][0]
    assert "tumor grown into its 4-voxel rim" in choice.table()
    assert all(rule.tumor_growth for rule in choice.nested_rules)
    # where the reference ends where the prediction does, there is nothing to learn: growth stays off
    exact = [OutOfFoldMap(m.classes, m.core_probability, m.classes, 0.001, m.fold, m.evidence) for m in maps]
    assert choose_postprocessing(exact).chosen == PostProcessing()


def test_a_rule_with_growth_survives_its_file_and_needs_the_evidence():
    rule = PostProcessing(min_island_ml=2.0, tumor_growth=tuple(float(i) for i in range(growth.WEIGHTS)))
    assert PostProcessing.from_mapping(rule.to_dict(), "rule") == rule
    classes, regions, volume, _ = patient(0)
    with pytest.raises(ValueError, match="growth needs"):
        rule.apply(classes, 0.001)
    for weights in ([1.0], ["1"] * growth.WEIGHTS, [float("nan")] * growth.WEIGHTS, "1"):
        with pytest.raises(TumorsegError, match="tumor_growth must be"):
            PostProcessing.from_mapping({"tumor_growth": weights}, "rule")


def test_the_choice_grows_a_patient_within_its_box_as_predict_grows_the_whole_volume():
    """Growth is applied in one place: the choice on folds, which keeps each patient cropped to
    its tumor, adds the same voxels as predict does on the whole volume."""
    from tumorseg.postprocessing.choice import keep, tumor_box

    samples = []
    for seed in range(3):
        classes, regions, volume, reference = patient(seed)
        box, rim, features = growth.rim_features(classes > 0, regions, volume)
        samples.append((features, reference[box][rim] > 0))
    weights = growth.fit(samples)
    classes, regions, volume, reference = patient(5)
    classes, reference = np.pad(classes, 6), np.pad(reference, 6)  # the tumor far from the edges
    volume = np.pad(volume, ((6, 6), (0, 0), (6, 6), (6, 6)))
    regions = np.pad(regions, ((6, 6), (0, 0), (6, 6), (6, 6)), constant_values=0.02)
    kept = keep(OutOfFoldMap(classes, regions[:, 1], reference, 0.001, 0, (regions, volume)))
    whole = growth.grow(classes, regions, volume, weights)
    assert not np.array_equal(whole, classes)
    box = tumor_box(classes, reference, margin=int(np.ceil(growth.RIM)))
    assert np.array_equal(kept.grown(weights), whole[box])
    features, tumor = kept.growth_sample()
    assert (
        len(features) == len(tumor) == np.count_nonzero(growth.rim_features(classes > 0, regions, volume)[1])
    )
