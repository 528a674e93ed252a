"""Loaders on the real data in ../shared/data (skipped with a reason where it is absent)."""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.realdata


def test_flickr8k_local_counts(shared_data):
    from training.datasets import LoadReport, load_captions

    root = os.path.join(shared_data, "flickr8k")
    sizes = {}
    for split in ("train", "dev", "test"):
        report = LoadReport()
        examples = load_captions(root, split, report)
        sizes[split] = len(examples)
        assert all(len(e.captions) == 5 for e in examples)
        assert report.skipped == {}
    assert sizes == {"train": 6000, "dev": 1000, "test": 1000}


def test_flickr8k_photo_loads(shared_data):
    from caption_core.images import load_image
    from training.datasets import load_captions

    ex = load_captions(os.path.join(shared_data, "flickr8k"), "test")[0]
    assert load_image(ex.image).size == (224, 224)


def test_cifar10_counts(shared_data, tmp_path):
    from training.datasets import load_cifar10

    root = os.path.join(shared_data, "cifar10")
    x, y = load_cifar10(root, "test", str(tmp_path))
    assert x.shape == (10000, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    x2, _ = load_cifar10(root, "test", str(tmp_path))  # from the .npy cache
    assert np.array_equal(x, x2)
    from training.datasets import CIFAR10_CLASSES

    train_counts = [len(os.listdir(os.path.join(root, "train", c))) for c in CIFAR10_CLASSES]
    assert sum(train_counts) == 50000 and set(train_counts) == {5000}
