import numpy as np
import torch
from torch.utils.data import DataLoader

from tumorseg.data.dataset import SliceDataset, tumor_weights
from tumorseg.data.store import Store


def test_items_have_fixed_size_and_match_the_store(store):
    with Store(store) as opened:
        ids = opened.case_ids
        total = sum(opened.info(c).num_slices for c in ids[:2])
        image, label = opened.read_slice(ids[1], 3)
    dataset = SliceDataset(store, ids[:2], size=(40, 36))
    assert len(dataset) == total
    item = dataset[dataset.index.index((ids[1], 3))]
    assert item["image"].shape == (4, 40, 36) and item["image"].dtype == torch.float32
    assert item["label"].shape == (40, 36) and item["label"].dtype == torch.int64
    # padding is symmetric zeros around the stored slice
    h, w = image.shape[1:]
    top, left = (40 - h) // 2, (36 - w) // 2
    np.testing.assert_array_equal(item["image"][:, top : top + h, left : left + w].numpy(), image)
    np.testing.assert_array_equal(item["label"][top : top + h, left : left + w].numpy(), label)
    assert item["image"][:, :top].abs().sum() == 0


def test_workers_open_their_own_store(store):
    dataset = SliceDataset(store, Store(store).case_ids, size=(32, 32))
    serial = torch.cat([b["image"] for b in DataLoader(dataset, batch_size=8)])
    parallel = torch.cat([b["image"] for b in DataLoader(dataset, batch_size=8, num_workers=2)])
    torch.testing.assert_close(serial, parallel)


def test_tumor_weights_oversample_tumor_slices(store):
    from tumorseg.training.distributed import EpochSampler

    dataset = SliceDataset(store, Store(store).case_ids, size=(32, 32))
    natural = dataset.has_tumor.mean()
    assert 0 < natural < 0.8
    weights = tumor_weights(dataset.has_tumor, 0.8)
    drawn = dataset.has_tumor[list(EpochSampler(len(dataset), 4000, seed=0, epoch=1, weights=weights))].mean()
    assert abs(drawn - 0.8) < 0.03
    assert tumor_weights(dataset.has_tumor, 0) is None
    assert tumor_weights(np.ones(5, bool), 0.5) is None
