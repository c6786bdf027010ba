import numpy as np
import pytest

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


def contrast(image, label, channel, value):
    """Mean of a tumor class over mean of normal brain, in one modality (gains differ per modality)."""
    normal = (image[0] > 0) & (label == 0)
    return image[channel][label == value].mean() / image[channel][normal].mean()


@pytest.mark.parametrize("seed", range(4))
def test_tumor_contrast_follows_mri(seed):
    """Edema bright on FLAIR and T2, enhancing rim bright only on T1ce, tumor inside the brain."""
    image, label = phantom(np.random.default_rng(seed), (64, 64, 40))
    assert (label[image[0] == 0] == 0).all()
    assert set(np.unique(label)) <= {0, 1, 2, 4} and (label == 2).any()
    flair, t1, t1ce, t2 = range(4)
    assert contrast(image, label, flair, 2) > 1.3
    assert contrast(image, label, t2, 2) > 1.1
    assert abs(contrast(image, label, t1ce, 2) - contrast(image, label, t1, 2)) < 0.1
    if (label == 4).any():
        assert contrast(image, label, t1ce, 4) > 1.3 * contrast(image, label, t1, 4)
