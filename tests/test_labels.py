import numpy as np
import pytest

from tumorseg.labels import to_brats, to_internal


def test_round_trip_both_conventions():
    brats = np.array([0, 1, 2, 4, 4, 0])
    internal = to_internal(brats)
    assert internal.tolist() == [0, 1, 2, 3, 3, 0]
    assert to_brats(internal).tolist() == brats.tolist()
    assert to_brats(internal, "brats2023").tolist() == [0, 1, 2, 3, 3, 0]
    assert to_internal(np.array([3, 1]), "brats2023").tolist() == [3, 1]


@pytest.mark.parametrize(("values", "convention"), [([0, 3], "brats"), ([0, 4], "brats2023"), ([7], "brats")])
def test_unknown_values_are_refused(values, convention):
    with pytest.raises(ValueError, match="unknown label values"):
        to_internal(np.array(values), convention)
