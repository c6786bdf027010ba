"""Coarse-to-fine search: near the tumor it gives the scores of a full pass, and it skips only what
lies far from tumor."""

import numpy as np
import pytest

from tumorseg.errors import TumorsegError
from tumorseg.inference.segmenter import Segmenter, segment_coarse_to_fine, segment_volume

OPTIONS = {"batch_size": 8, "multiple": 4}
WHOLE = {"margin": 12, **OPTIONS}  # a box the size of the slices: in-plane, everything is segmented


def tumor_volume(depth: int, slices: range) -> np.ndarray:
    """(Z, 4, 12, 12) background -1, a 4x4 'tumor' of +1 on ``slices``, a distinct pattern per slice."""
    volume = np.full((depth, 4, 12, 12), -1.0, np.float32)
    volume[list(slices), :, 4:8, 4:8] = 1.0
    volume[:, 1] += np.arange(depth, dtype=np.float32)[:, None, None] / depth  # tells slices apart
    return volume


class CountingForward:
    """Scores (B, 3, H, W): 0.9 where channel 0 is positive (tumor), else 0.1 (plus a per-slice
    pattern from channel 1); counts the slices it is given."""

    def __init__(self):
        self.slices = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.slices += len(batch)
        tumor = (batch[:, :1] > 0) * np.float32(0.8) + np.float32(0.1)
        return np.repeat(tumor + np.float32(0.01) * batch[:, 1:2], 3, axis=1)


def tumor(scores: np.ndarray) -> np.ndarray:
    return scores[:, 0] > 0.5


def found(scores: np.ndarray) -> np.ndarray:
    return tumor(scores).any((1, 2))


@pytest.mark.parametrize("step", [2, 3, 4, 6])
def test_tumor_slices_as_a_full_pass_none_made_up_elsewhere(step):
    volume = tumor_volume(40, range(13, 22))
    full = segment_volume(CountingForward(), volume, **OPTIONS)
    forward = CountingForward()
    scores = segment_coarse_to_fine(forward, volume, step=step, tumor=tumor, **WHOLE)
    assert scores.shape == full.shape
    assert np.array_equal(scores[13:22], full[13:22])  # the tumor, thicker than the step, whole
    assert np.array_equal(found(scores), found(full))  # no tumor lost, none made up
    assert forward.slices < 40  # and it skipped slices


def test_a_skipped_slice_takes_the_scores_of_the_nearest_segmented_one():
    volume = tumor_volume(20, range(0))  # no tumor: only every 4th slice (and the last) is segmented
    forward = CountingForward()
    scores = segment_coarse_to_fine(forward, volume, step=4, tumor=tumor, **WHOLE)
    full = segment_volume(CountingForward(), volume, **OPTIONS)
    assert forward.slices == len([0, 4, 8, 12, 16, 19])
    for z, nearest in [(1, 0), (2, 0), (3, 4), (17, 16), (18, 19)]:
        assert np.array_equal(scores[z], full[nearest])


def test_what_it_can_miss_a_tumor_thinner_than_the_step_between_two_searched_slices():
    volume = tumor_volume(20, range(5, 7))  # slices 5 and 6: between the searched 4 and 8
    assert not found(segment_coarse_to_fine(CountingForward(), volume, step=4, tumor=tumor, **WHOLE)).any()
    assert found(segment_coarse_to_fine(CountingForward(), volume, step=2, tumor=tumor, **WHOLE)).any()


def test_with_context_the_neighbours_are_those_of_the_full_pass():
    volume = tumor_volume(30, range(10, 15))
    full = segment_volume(CountingForward(), volume, context=1, **OPTIONS)
    scores = segment_coarse_to_fine(CountingForward(), volume, step=3, tumor=tumor, context=1, **WHOLE)
    with_tumor = found(full)
    assert with_tumor.sum() >= 5 and np.array_equal(found(scores), with_tumor)
    assert np.array_equal(scores[with_tumor], full[with_tumor])


def test_fine_slices_are_segmented_within_the_tumor_box_and_margin():
    volume = tumor_volume(20, range(6, 14))  # tumor at rows and columns 4..7 of 12
    forward = CountingForward()
    scores = segment_coarse_to_fine(forward, volume, step=4, tumor=tumor, margin=2, **OPTIONS)
    full = segment_volume(CountingForward(), volume, **OPTIONS)
    box = (slice(2, 10), slice(2, 10))
    assert np.array_equal(scores[6:14, :, box[0], box[1]], full[6:14, :, box[0], box[1]])
    assert np.array_equal(found(scores), found(full))
    assert np.array_equal(scores[7, :, :2], full[8, :, :2])  # outside the box: the nearest first-pass slice


def test_a_step_below_one_is_refused_by_name():
    with pytest.raises(TumorsegError, match="--coarse-step must be at least 1"):
        Segmenter(None, step=0)
