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


def test_which_regions_a_set_of_sequences_cannot_show():
    """T1 alone shows none; without T1ce no core or enhancing tumor; without FLAIR and T2 no edema."""
    from tumorseg.data.case import MODALITIES
    from tumorseg.labels import REGION_NAMES, SHOWN_BY, unseen_regions

    assert set(SHOWN_BY) == set(REGION_NAMES)
    assert {m for shown_by in SHOWN_BY.values() for m in shown_by} <= set(MODALITIES)
    assert unseen_regions(()) == ()
    assert unseen_regions(("flair", "t1ce", "t2")) == ("WT", "TC", "ET")
    assert unseen_regions(("t1ce",)) == ("TC", "ET")
    assert unseen_regions(("flair", "t2")) == ("WT",)
    assert unseen_regions(("flair",)) == unseen_regions(("t2",)) == unseen_regions(("t1",)) == ()
