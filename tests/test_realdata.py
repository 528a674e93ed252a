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


def test_coco_mini_the_out_of_domain_dev_set(shared_data):
    from training.coco import category_words, load_coco

    photos = load_coco(os.path.join(shared_data, "coco-mini"))
    assert len(photos) == 80 and sum(len(p.captions) for p in photos) == 400
    mains = [p.main_object for p in photos]
    assert all(mains) and set(mains) <= set(category_words()) and mains.count("person") == 20


@pytest.mark.slow
def test_the_default_bundle_keeps_the_dog_out_of_a_bathroom(shared_data):
    """The shipped default on a coco-mini photo of a toilet (the classifier: toilet seat, no animal): its default
    decoding (guided, veto alone) bans "dog" and requires the toilet. (The default before the object-word member,
    `ensemble3-attention-flickr8k`, put a dog in it with beam search.)"""
    from caption_core.bundle import best_first, list_bundles
    from caption_core.captioner import Captioner
    from caption_core.images import load_image
    from training.coco import load_coco

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
    bundles = {b["name"]: b for b in list_bundles(root) if "manifest" in b}
    default = best_first({n: b["manifest"] for n, b in bundles.items()})[0]
    captioner = Captioner.from_bundle(bundles[default]["path"], {"precision": "float32"})
    photo = next(p for p in load_coco(os.path.join(shared_data, "coco-mini")) if p.main_object == "toilet")
    own = captioner.caption(load_image(photo.path))[0]
    assert captioner.default_strategy == "guided" and own.guidance and "dog" in own.guidance["banned_words"]
    words = own.captions[0].text.split()
    assert "dog" not in words and "toilet" in words
