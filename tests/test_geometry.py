"""Boxes, margins and voxel volumes: the one geometry every stage uses."""

import numpy as np

from tumorseg.geometry import bounding_box, box_around, shifted_into, voxel_ml, widened


def test_a_bounding_box_holds_exactly_the_true_voxels_and_none_is_none():
    mask = np.zeros((6, 7, 8), bool)
    mask[1, 2, 3] = mask[4, 5, 6] = True
    box = bounding_box(mask)
    assert box == (slice(1, 5), slice(2, 6), slice(3, 7))
    assert mask[box].sum() == mask.sum()
    assert bounding_box(np.zeros((3, 3), bool)) is None


def test_a_box_widens_within_the_array_and_to_a_multiple():
    assert widened((slice(1, 5), slice(2, 6)), (6, 7), 2) == (slice(0, 6), slice(0, 7))
    mask = np.zeros((32, 32), bool)
    mask[10:13, 20:21] = True
    rows, columns = box_around(mask, 1, multiple=8)
    assert (rows.stop - rows.start) % 8 == 0 and rows.start <= 9 and rows.stop >= 14
    assert (columns.stop - columns.start) % 8 == 0 and columns.stop <= 32


def test_a_box_inside_another_is_shifted_into_it():
    outer, inner = (slice(2, 10), slice(3, 9)), (slice(4, 6), slice(3, 5))
    array = np.arange(200).reshape(10, 20)
    assert np.array_equal(array[outer][shifted_into(inner, outer)], array[inner])


def test_a_voxel_volume_is_the_same_from_the_spacing_or_from_any_rotation_of_its_affine():
    spacing = (0.9, 0.9, 5.0)
    assert np.isclose(voxel_ml(spacing), 0.9 * 0.9 * 5.0 / 1000)
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = (10, -20, 30)
    assert np.isclose(voxel_ml(affine), voxel_ml(spacing))
