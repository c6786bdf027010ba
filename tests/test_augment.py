import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tumorseg.training.augment import BatchAugmentation, blur, sampling_grid, slab_operator


def blobs(batch: int, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with a box of each class per sample, and an image whose channels draw the labels."""
    rng = np.random.default_rng(seed)
    label = np.zeros((batch, *shape), np.int64)
    for b in range(batch):
        for value in (1, 2, 3):
            corner = [rng.integers(2, s // 2) for s in shape]
            box = tuple(slice(c, c + s // 3) for c, s in zip(corner, shape, strict=True))
            label[(b, *box)] = value
    image = np.stack([label == value for value in (1, 2, 3, 0)], axis=1).astype(np.float32)
    return torch.from_numpy(image), torch.from_numpy(label)


@pytest.mark.parametrize("shape", [(48, 64), (12, 40, 32)])
def test_a_label_drawn_into_the_image_stays_on_the_label(shape):
    image, label = blobs(12, shape)
    augment = BatchAugmentation(7, probability=0.9, max_intensity=0.0)
    moved_image, moved_label = augment(image, label)
    assert not torch.equal(moved_label, label)  # it did move
    drawn = moved_image[:, :3].argmax(dim=1) + 1
    drawn[moved_image[:, :3].max(dim=1).values < 0.5] = 0
    # bilinear (image) against nearest (label) may differ on a box's rim, nowhere else
    assert (drawn == moved_label).float().mean() > 0.97
    for value in (1, 2, 3):
        inside = moved_label == value
        assert moved_image[:, value - 1][inside].mean() > 0.9


def test_seeded_reproducible_and_leaves_its_inputs_alone():
    image, label = blobs(8, (32, 32))
    before = image.clone(), label.clone()
    first = BatchAugmentation(3, modality_dropout=0.3)(image, label)
    again = BatchAugmentation(3, modality_dropout=0.3)(image, label)
    other = BatchAugmentation(4, modality_dropout=0.3)(image, label)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert torch.equal(image, before[0]) and torch.equal(label, before[1])
    augment = BatchAugmentation(3, modality_dropout=0.3)
    augment(image, label)
    reseeded = augment.reseed(3)(image, label)
    assert torch.equal(reseeded[0], first[0])


def test_flips_through_the_resampling_are_exact_flips():
    image, label = blobs(4, (20, 30))
    certain = BatchAugmentation(0, probability=1.0, max_degrees=0, max_scaling=0, max_intensity=0)
    moved_image, moved_label = certain(image, label)  # every axis flipped, inside the affine
    torch.testing.assert_close(moved_image, image.flip((2, 3)), atol=1e-5, rtol=0)
    assert torch.equal(moved_label, label.flip((1, 2)))
    never = BatchAugmentation(0, probability=0.0)
    assert torch.equal(never(image, label)[0], image) and torch.equal(never(image, label)[1], label)


def test_intensity_is_one_scale_and_one_shift_per_sample():
    image = torch.rand(16, 4, 8, 8)
    label = torch.zeros(16, 8, 8, dtype=torch.long)
    augment = BatchAugmentation(1, probability=1.0, max_degrees=0, max_scaling=0)
    augment.move = lambda image, label: (image, label)  # intensity alone
    moved, _ = augment(image, label)
    for b in range(16):  # moved = image * a + c with one (a, c) per sample
        a, c = np.polyfit(image[b].flatten().numpy(), moved[b].flatten().numpy(), 1)
        assert 0.9 - 1e-4 <= a <= 1.1 + 1e-4 and abs(c) <= 0.1 + 1e-4
        torch.testing.assert_close(moved[b], image[b] * float(a) + float(c), atol=1e-4, rtol=0)


def test_per_sequence_intensity_scales_and_shifts_each_sequence_alike_in_every_neighbour():
    image = torch.rand(16, 12, 8, 8)  # 2.5D: channel k is sequence k % 4
    label = torch.zeros(16, 8, 8, dtype=torch.long)
    augment = BatchAugmentation(1, probability=1.0, max_intensity=0.3, per_sequence=True)
    augment.move = lambda image, label: (image, label)  # intensity alone
    moved, _ = augment(image, label)
    for b in range(16):
        fits = [np.polyfit(image[b, k].flatten(), moved[b, k].flatten(), 1) for k in range(12)]
        for k, (a, c) in enumerate(fits):
            assert 0.7 - 1e-4 <= a <= 1.3 + 1e-4 and abs(c) <= 0.3 + 1e-4
            np.testing.assert_allclose(fits[k % 4], (a, c), atol=1e-4)
        assert len({round(float(a), 4) for a, _ in fits[:4]}) == 4  # the sequences' own factors


def test_dropout_zeroes_sequences_at_its_rate_and_never_all():
    augment = BatchAugmentation(5, spatial=False, modality_dropout=0.4)
    image, label = torch.ones(4000, 4, 2, 2), torch.zeros(4000, 2, 2, dtype=torch.long)
    kept = augment(image, label)[0][:, :, 0, 0].numpy()
    assert set(np.unique(kept)) == {0.0, 1.0}
    assert kept.sum(axis=1).min() >= 1  # never all four
    # P(dropped) = 0.4, less the draws that would drop all four and keep one instead
    np.testing.assert_allclose(1 - kept.mean(axis=0), 0.4 - 0.4**4 / 4, atol=0.03)


def test_a_dropped_sequence_is_dropped_in_every_neighbour():
    augment = BatchAugmentation(3, spatial=False, modality_dropout=0.5)
    image = augment(torch.ones(50, 12, 2, 2), torch.zeros(50, 2, 2, dtype=torch.long))[0]
    kept = image[:, :, 0, 0].reshape(50, 3, 4)
    assert (kept == kept[:, :1]).all() and kept[:, 0].any(dim=1).all()


@pytest.mark.parametrize("shape", [(6, 10), (5, 7, 9)])
def test_sampling_grid_is_affine_grid_without_translation(shape):
    linear = torch.randn(3, len(shape), len(shape))
    theta = torch.cat([linear, torch.zeros(3, len(shape), 1)], dim=2)
    expected = F.affine_grid(theta, [3, 1, *shape], align_corners=False)
    torch.testing.assert_close(sampling_grid(linear, torch.Size(shape)), expected, atol=1e-5, rtol=0)


def test_scanner_effects_keep_the_background_and_z_score_what_they_touch():
    image = torch.randn(16, 8, 48, 40) + 3  # 2.5D: sequence k is channels k and k + 4
    image[..., :6, :] = 0  # outside the brain
    changed = BatchAugmentation(3, scanner=True).scanner_effects(image)
    assert torch.equal(changed[..., :6, :], image[..., :6, :])  # the background stays 0
    brain = image[:, :1] != 0
    touched = (changed != image).flatten(2).any(dim=2)
    assert touched.any() and not touched.all()  # each effect is drawn, not always
    assert torch.equal(touched[:, :4], touched[:, 4:])  # a sequence alike in every neighbouring slice
    for b, c in touched.nonzero().tolist():
        values = changed[b, c][brain[b, 0]]
        assert abs(values.mean()) < 1e-3 and abs(values.std(unbiased=False) - 1) < 1e-3


def test_scanner_effects_are_seeded_and_blur_is_a_normalized_gaussian_per_axis():
    image = torch.randn(4, 4, 32, 32)
    one = BatchAugmentation(5, scanner=True).scanner_effects(image)
    assert torch.equal(one, BatchAugmentation(5, scanner=True).scanner_effects(image))
    assert not torch.equal(one, BatchAugmentation(6, scanner=True).scanner_effects(image))
    point = torch.zeros(1, 1, 21, 21)
    point[0, 0, 10, 10] = 1
    spread = blur(point, torch.tensor([[[1.2, 0.8]]]))
    assert spread.sum().item() == pytest.approx(1.0, abs=1e-5)
    across_rows, across_columns = spread[0, 0, :, 10], spread[0, 0, 10, :]
    rows = torch.arange(21.0) - 10
    assert (across_rows * rows**2).sum() / across_rows.sum() == pytest.approx(1.2**2, rel=0.05)
    assert (across_columns * rows**2).sum() / across_columns.sum() == pytest.approx(0.8**2, rel=0.05)


def test_enhancement_strength_changes_only_the_t1ce_where_it_outshines_the_t1():
    image = torch.randn(64, 8, 24, 24)  # 2.5D: sequence k is channels k and k + 4
    image[..., :4, :] = 0  # outside the brain
    image[:3, 1::4] = 0  # three samples without a T1
    changed = BatchAugmentation(2, enhancement=True).enhancement_strength(image)
    t1ce = [2, 6]
    others = [c for c in range(8) if c not in t1ce]
    assert torch.equal(changed[:, others], image[:, others])
    assert torch.equal(changed[:3], image[:3])  # no T1, nothing to compare the T1ce with
    assert torch.equal(changed[..., :4, :], image[..., :4, :])
    touched = (changed != image).flatten(1).any(dim=1)
    assert touched.any() and not touched.all()
    assert torch.equal(BatchAugmentation(2, enhancement=True).enhancement_strength(image), changed)
    brain = image[:, :1] != 0
    for b in touched.nonzero()[:, 0].tolist():
        for c in t1ce:
            before, after = image[b, c][brain[b, 0]], changed[b, c][brain[b, 0]]
            assert after.mean() == pytest.approx(before.mean().item(), abs=1e-4)
            assert after.std() == pytest.approx(before.std().item(), rel=1e-4)
            # where the T1ce is not brighter than the T1, only the slice's rescaling acts: an affine map
            dull = (image[b, c] <= image[b, c - 1])[brain[b, 0]]
            slope = torch.linalg.lstsq(
                torch.stack([before[dull], torch.ones(int(dull.sum()))], 1), after[dull, None]
            ).solution
            assert torch.allclose(before[dull] * slope[0] + slope[1], after[dull], atol=1e-4)


@pytest.mark.parametrize(("size", "thickness", "phase"), [(12, 3.0, 0.0), (40, 4.3, 0.7), (9, 2.0, 0.5)])
def test_slab_operator_averages_slabs_and_interpolates_back(size, thickness, phase):
    operator = slab_operator(size, thickness, phase)
    torch.testing.assert_close(operator.sum(dim=1), torch.ones(size, dtype=torch.float64))
    assert (operator >= 0).all()
    # a ramp stays one inside, where no slab is cut by an edge (to within the partial voxels a slab
    # of a fractional thickness takes whole)
    ramp = torch.arange(size, dtype=torch.float64)
    inner = slice(int(thickness) + 2, size - int(thickness) - 2)
    torch.testing.assert_close((operator @ ramp)[inner], ramp[inner], atol=0.05, rtol=0)
    step = (ramp >= size // 2).to(torch.float64)
    blurred = operator @ step
    assert ((blurred > 0) & (blurred < 1)).sum() >= int(thickness) - 1  # an edge smeared over a slab
    torch.testing.assert_close(slab_operator(size, 1.0, 0.0), torch.eye(size, dtype=torch.float64))


def test_thick_slices_touch_whole_sequences_and_keep_their_slices_moments():
    image = torch.randn(32, 8, 24, 20)  # 2.5D: sequence k is channels k and k + 4
    image[..., :4, :] = 0  # outside the brain
    changed = BatchAugmentation(4, thick_slices=True).thick_slices(image)
    assert torch.equal(changed, BatchAugmentation(4, thick_slices=True).thick_slices(image))
    assert torch.equal(changed[..., :4, :], image[..., :4, :])
    touched = (changed != image).flatten(2).any(dim=2)
    assert touched.any() and not touched.all()
    assert torch.equal(touched[:, :4], touched[:, 4:])
    brain = image[:, 0] != 0
    for b, c in touched.nonzero().tolist():
        before, after = image[b, c][brain[b]], changed[b, c][brain[b]]
        assert after.mean() == pytest.approx(before.mean().item(), abs=1e-4)
        assert after.std() == pytest.approx(before.std().item(), rel=1e-4)
        # white noise averaged over slabs: neighbours along one axis now correlate
        along_rows = torch.corrcoef(torch.stack([changed[b, c, 5:-1].flatten(), changed[b, c, 6:].flatten()]))
        along_cols = torch.corrcoef(
            torch.stack([changed[b, c, 4:, :-1].flatten(), changed[b, c, 4:, 1:].flatten()])
        )
        assert max(along_rows[0, 1], along_cols[0, 1]) > 0.3
