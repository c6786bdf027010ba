import numpy as np

from tumorseg.data.synth import phantom, synthesize


def test_phantoms_are_seeded_and_varied():
    a_image, a_label = phantom(np.random.default_rng([0, 1]), (32, 32, 16))
    b_image, b_label = phantom(np.random.default_rng([0, 1]), (32, 32, 16))
    c_image, c_label = phantom(np.random.default_rng([0, 2]), (32, 32, 16))
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_label, b_label)
    assert not np.array_equal(a_label, c_label)


def test_case_does_not_depend_on_how_many_are_written(tmp_path):
    synthesize(tmp_path / "a", 1, shape=(24, 24, 12), seed=5, start=2, progress=False)
    synthesize(tmp_path / "b", 2, shape=(24, 24, 12), seed=5, progress=False)
    name = "Phantom_002/Phantom_002_t2.nii.gz"
    assert (tmp_path / "a" / name).read_bytes()[-2000:] == (tmp_path / "b" / name).read_bytes()[-2000:]


def test_tumor_contrast_follows_mri():
    """Edema bright on FLAIR, enhancing rim bright only on T1ce, tumor nested in the brain."""
    for seed in range(4):
        image, label = phantom(np.random.default_rng(seed), (64, 64, 40))
        flair, t1, t1ce, t2 = (im.astype(float) for im in image)
        brain = image[0] > 0
        normal = brain & (label == 0)
        assert (label[~brain] == 0).all()
        assert set(np.unique(label)) <= {0, 1, 2, 4} and (label == 2).any()
        assert flair[label == 2].mean() > 1.3 * flair[normal].mean()
        assert t2[label == 2].mean() > t2[normal].mean()
        if (label == 4).any():
            assert t1ce[label == 4].mean() > 1.3 * t1[label == 4].mean()
            assert t1ce[label == 4].mean() > t1ce[normal].mean()
        # outside the enhancing rim, T1 and T1ce agree
        assert abs(t1ce[label == 2].mean() - t1[label == 2].mean()) < 0.1 * t1[label == 2].mean()
