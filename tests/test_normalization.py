"""Intensity normalization that survives outliers: spikes and saturated voxels are no tissue
(``preprocess.despike``), and neither the int16 scale nor the z-scores follow them."""

import numpy as np

from tumorseg.data.case import Case, brats_affine
from tumorseg.data.preprocess import OUTLIER_SDS, despike, preprocess, robust_spread


def brain(rng: np.random.Generator) -> np.ndarray:
    """A 24^3 volume: background 0, a brain of about 500 +- 50, a bright tumor at 30 robust SDs."""
    volume = np.zeros((24, 24, 24))
    volume[2:22, 2:22, 2:22] = rng.normal(500, 50, (20, 20, 20))
    volume[8:12, 8:12, 8:12] = 500 + 30 * 50
    return np.round(volume).astype(np.int16)


def test_spikes_take_their_neighbours_median_and_tissue_stays():
    rng = np.random.default_rng(0)
    clean = brain(rng)
    assert despike(clean) is clean  # nothing beyond OUTLIER_SDS: the very array, bit for bit
    spiked = clean.copy()
    at = rng.choice(np.flatnonzero(clean), 40, replace=False)
    spiked.flat[at] = 32767
    spiked[15:18, 15:18, 15:18] = 32767  # a saturated patch: its centre has no usable neighbour
    spiked[3, 3, 3] = -32768
    out = despike(spiked)
    isolated = np.setdiff1d(
        at, np.ravel_multi_index(np.mgrid[15:18, 15:18, 15:18].reshape(3, -1), clean.shape)
    )
    assert np.all(np.abs(out.flat[isolated].astype(float) - 500) < 200)  # a neighbour's value, not a spike
    median, sd = robust_spread(spiked[spiked != 0])
    assert out[16, 16, 16] == np.floor(median + OUTLIER_SDS * sd)  # clipped at the bound it passed
    assert abs(out[3, 3, 3] - 500) < 200  # a lone low spike, too
    untouched = spiked != out
    assert not untouched[8:12, 8:12, 8:12].any()  # the tumor is tissue, however bright
    assert np.array_equal(out == 0, clean == 0)  # the background stays the background


def test_the_zscores_and_the_int16_scale_do_not_follow_a_spike():
    rng = np.random.default_rng(1)
    clean = np.stack([brain(rng) for _ in range(4)]).astype(np.float32) + 0.25  # float: scaled to int16
    clean[clean == 0.25] = 0
    spiked = clean.copy()
    spiked[0, 5, 5, 5] = 1e9  # one voxel would squash every other into a few int16 levels
    spiked[1].flat[rng.choice(np.flatnonzero(clean[1]), 80, replace=False)] = 32767
    a, b = (preprocess(Case("c", image, None, brats_affine(image.shape[1:]))) for image in (clean, spiked))
    np.testing.assert_allclose(b.norm_mean, a.norm_mean, rtol=0.01)
    np.testing.assert_allclose(b.norm_std, a.norm_std, rtol=0.02)
    assert b.intensity_scale[0] == a.intensity_scale[0]  # the same int16 resolution
    z_a, z_b = a.normalized(), b.normalized()
    assert np.mean(np.abs(z_a - z_b)[:, 2:]) < 0.01  # the other sequences' z-scores unchanged
