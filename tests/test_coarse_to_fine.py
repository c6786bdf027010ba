"""Coarse-to-fine search: near the tumor it gives the scores of a full pass, and it skips only what
lies far from tumor."""

import numpy as np
import pytest

from tumorseg.errors import TumorsegError
from tumorseg.geometry import widened_span
from tumorseg.inference.segmenter import Segmenter
from tumorseg.inference.sliding_window import (
    Search,
    segment_coarse_to_fine,
    segment_volume,
    segment_within_brain,
)
from tumorseg.labels import Target

OPTIONS = {"batch_size": 8, "multiple": 4}
BACKGROUND = np.zeros(3, np.float32)  # no region
WHOLE = {"margin": 12, "background": BACKGROUND, **OPTIONS}  # the fine box: the whole slice


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
    scores = segment_coarse_to_fine(forward, volume, step=4, tumor=tumor, margin=2, background=BACKGROUND,
                                    **OPTIONS)  # fmt: skip
    full = segment_volume(CountingForward(), volume, **OPTIONS)
    box = (slice(2, 10), slice(2, 10))
    assert np.array_equal(scores[6:14, :, box[0], box[1]], full[6:14, :, box[0], box[1]])
    assert np.array_equal(found(scores), found(full))
    assert np.array_equal(scores[7, :, :2], full[8, :, :2])  # outside the box: the nearest first-pass slice


def test_a_step_below_one_is_refused_by_name():
    with pytest.raises(TumorsegError, match="--coarse-step must be at least 1"):
        Segmenter(None, search=Search(step=0))


class ShapeForward(CountingForward):
    """CountingForward that also records the in-plane shape of each batch."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape[2:])
        return super().__call__(batch)


def brain_volume() -> np.ndarray:
    """(6, 4, 24, 24): 0 outside a brain that grows from nothing (slice 0) to rows and columns
    4..19 (slice 5); a 'tumor' of +1 in slice 3."""
    volume = np.zeros((6, 4, 24, 24), np.float32)
    for z in range(1, 6):
        volume[z, :, 12 - 2 * z : 12 + 2 * z, 12 - 2 * z : 12 + 2 * z] = -1.0
    volume[3, 0, 10:14, 10:14] = 1.0
    return volume


def test_first_pass_slices_are_segmented_within_their_brain_and_margin():
    volume, forward = brain_volume(), ShapeForward()
    scores = segment_within_brain(forward, volume, z=np.arange(6), background=BACKGROUND, brain_margin=2,
                                  **OPTIONS)  # fmt: skip
    full = segment_volume(CountingForward(), volume, **OPTIONS)
    # slice z's brain spans 4z pixels; +2 either side, on to a multiple of 4 (slice 0: no brain, skipped)
    assert forward.shapes == [(8, 8), (12, 12), (16, 16), (20, 20), (24, 24)]
    assert np.array_equal(scores[0], np.zeros((3, 24, 24)))
    for z in range(1, 6):
        box = widened_span(12 - 2 * z, 12 + 2 * z, 24, 2, 4)
        # CountingForward scores a pixel by its own input: within the box, as the whole slice
        assert np.array_equal(scores[z, :, box, box], full[z, :, box, box])
        outside = np.ones((24, 24), bool)
        outside[box, box] = False
        assert (scores[z][:, outside] == 0).all()  # background, where the whole slice scores 0.1
    assert np.array_equal(found(scores), found(full))


def test_with_context_a_slice_is_cropped_to_its_neighbours_brain_too():
    forward = ShapeForward()
    segment_within_brain(forward, brain_volume(), z=np.array([0, 3]), background=BACKGROUND, brain_margin=0,
                         context=1, **OPTIONS)  # fmt: skip
    assert forward.shapes == [(4, 4), (16, 16)]  # slice 0 comes with slice 1's brain; 3 with 4's


@pytest.mark.parametrize(
    ("start", "stop", "size", "margin", "multiple", "expected"),
    [
        (5, 9, 20, 2, 4, (3, 11)),  # widened, already a multiple
        (5, 8, 20, 1, 4, (4, 12)),  # 5 pixels with the margin, on to 8
        (15, 19, 20, 2, 4, (12, 20)),  # at the edge: grown towards the other side
        (0, 3, 6, 0, 16, (0, 6)),  # a side shorter than the multiple: all of it (segment pads)
    ],
)
def test_a_box_is_widened_and_grown_to_the_multiple_within_the_slice(start, stop, size, margin, multiple,
                                                                      expected):  # fmt: skip
    box = widened_span(start, stop, size, margin, multiple)
    assert (box.start, box.stop) == expected


@pytest.mark.parametrize("target", ["regions", "labels"])
def test_background_scores_decode_to_background(target):
    spec = Target(target)
    assert spec.background.shape == (spec.channels,)
    assert spec.decode(spec.background[None, :, None, None]).item() == 0
