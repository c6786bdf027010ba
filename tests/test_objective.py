import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tumorseg.labels import Target
from tumorseg.metrics import dice_iou, overlap_counts
from tumorseg.training.objective import Objective


def decode(logits, target):
    """Logits -> classes, through the target's activation and decoding."""
    spec = Target(target)
    return spec.decode(spec.activate(logits))


LABELS = torch.tensor([[[0, 1, 2, 3], [0, 0, 2, 3]]])  # (1, 2, 4)


def test_regions_encode_nested_masks():
    wt, tc, et = Target("regions").encode(LABELS)[0]
    assert wt.tolist() == [[0, 1, 1, 1], [0, 0, 1, 1]]
    assert tc.tolist() == [[0, 1, 0, 1], [0, 0, 0, 1]]
    assert et.tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]


def test_decoding_regions_back_to_labels():
    regions = Target("regions").encode(LABELS)
    assert torch.equal(decode(regions * 20 - 10, "regions"), LABELS)
    # ET without WT still reads as enhancing: the innermost region wins
    logits = torch.full((1, 3, 1, 1), -5.0)
    logits[0, 2] = 5.0
    assert decode(logits, "regions").item() == 3


def test_a_region_threshold_moves_where_a_region_starts():
    probabilities = torch.tensor([0.4, 0.3, 0.2]).reshape(1, 3, 1, 1)  # WT 0.4, TC 0.3, ET 0.2
    regions = Target("regions")
    assert [regions.decode(probabilities, t).item() for t in (0.5, 0.35, 0.25, 0.1)] == [0, 2, 1, 3]


@pytest.mark.parametrize("target", ["regions", "labels"])
def test_numpy_and_pytorch_probabilities_decode_alike(target):
    """Validation decodes tensors, prediction with ONNX Runtime NumPy arrays: one rule for both."""
    spec = Target(target)
    probabilities = torch.rand(3, spec.channels, 9, 11, generator=torch.Generator().manual_seed(0))
    classes = spec.decode(probabilities)
    assert classes.dtype == torch.int64 and set(classes.unique().tolist()) == {0, 1, 2, 3}
    assert np.array_equal(spec.decode(probabilities.numpy()), classes.numpy())


def test_losses_are_small_for_right_and_large_for_wrong_predictions():
    for target in ("regions", "labels"):
        objective = Objective(Target(target))
        right = (
            objective.target.encode(LABELS) * 20 - 10
            if target == "regions"
            else F.one_hot(LABELS, 4).permute(0, 3, 1, 2).float() * 20
        )
        assert objective(right, LABELS) < 0.01
        assert objective(-right, LABELS) > 1.0
        deep = objective((right, -right), LABELS)  # the finest output weighs 2/3
        assert abs(deep - (2 * objective(right, LABELS) + objective(-right, LABELS)) / 3) < 1e-5


def test_dice_and_iou_by_hand():
    reference = torch.tensor([0, 2, 2, 3, 3, 0])
    prediction = torch.tensor([0, 2, 0, 3, 1, 3])
    counts = overlap_counts(prediction, reference)
    # WT: pred {1,3,4,5} ref {1,2,3,4}: tp 3, fp 1, fn 1; TC: pred {3,4,5} ref {3,4}: tp 2, fp 1, fn 0;
    # ET: pred {3,5} ref {3,4}: tp 1, fp 1, fn 1
    assert counts.tolist() == [[3, 1, 1], [2, 1, 0], [1, 1, 1]]
    dice, iou = dice_iou(counts)
    torch.testing.assert_close(torch.tensor(dice), torch.tensor([6 / 8, 4 / 5, 2 / 4], dtype=torch.float64))
    torch.testing.assert_close(torch.tensor(iou), torch.tensor([3 / 5, 2 / 3, 1 / 3], dtype=torch.float64))


def test_empty_regions():
    empty = torch.zeros(5, dtype=torch.long)
    dice, iou = dice_iou(overlap_counts(empty, empty))
    assert dice.tolist() == [1, 1, 1] and iou.tolist() == [1, 1, 1]
    dice, _ = dice_iou(overlap_counts(torch.tensor([0, 3, 0, 0, 0]), empty))
    assert dice.tolist() == [0, 0, 0]
