"""Caption text without photos (issue 33's first part): the readers, the held-out photos, the vocabulary; no caption
of a Flickr8k dev or test photo, and none of a coco-mini photo, reaches training, by photo id."""

import json
import os

import pytest

from training.text_corpus import (corpus_vocabulary, coco_photo_id, flickr_photo_id, held_out_ids, load_corpus,
                                  read_flickr_tokens)


def make_corpus(root):
    (root / "coco").mkdir(parents=True)
    (root / "flickr30k").mkdir()
    (root / "coco" / "captions_part.json").write_text(json.dumps({
        "images": [{"id": 30752, "file_name": "000000030752.jpg"}, {"id": 9, "file_name": "000000000009.jpg"}],
        "annotations": [{"image_id": 30752, "id": 1, "caption": "A man skiing with his dog."},  # a coco-mini photo
                        {"image_id": 9, "id": 2, "caption": "A giraffe standing next to a tree."},
                        {"image_id": 9, "id": 3, "caption": "  "}]}))
    (root / "flickr30k" / "Flickr30k.token.txt").write_text(
        "1000268201.jpg#0\tA child in a pink dress is climbing up stairs .\n"  # a Flickr8k dev photo, as Flickr30k names it
        "1000092795.jpg#0\tTwo young guys with shaggy hair look at their hands .\n")
    return str(root)


def make_held_out(root):
    flickr = root / "flickr8k"
    flickr.mkdir()
    (flickr / "Flickr_8k.devImages.txt").write_text("1000268201_693b08cb0e.jpg\n")
    (flickr / "Flickr_8k.testImages.txt").write_text("1001773457_577c3a7d70.jpg\n")
    coco = root / "coco-mini"
    coco.mkdir()
    (coco / "captions.json").write_text(json.dumps({"images": [{"id": 30752, "file_name": "000000030752.jpg"}],
                                                    "annotations": []}))
    return str(flickr), str(coco)


def test_photo_ids_are_the_same_photo_across_corpora():
    assert flickr_photo_id("1000268201_693b08cb0e.jpg") == flickr_photo_id("1000268201.jpg#3") == "flickr:1000268201"
    assert coco_photo_id("30752") == coco_photo_id(30752) == "coco:30752"


def test_no_caption_of_a_held_out_photo_reaches_training(tmp_path):
    flickr, coco = make_held_out(tmp_path)
    held = held_out_ids(flickr, [coco])
    assert held == {"flickr:1000268201", "flickr:1001773457", "coco:30752"}
    kept, report = load_corpus(make_corpus(tmp_path / "text"), held)
    assert [c.caption for c in kept] == ["A giraffe standing next to a tree.",
                                         "Two young guys with shaggy hair look at their hands ."]
    assert report == {"coco": {"read": 2, "held_out": 1}, "flickr30k": {"read": 2, "held_out": 1}}
    assert not {c.photo_id for c in kept} & held
    vocab, missing = corpus_vocabulary(["a dog runs"], kept, min_count=1, must_have=["giraffe", "zebra"])
    assert "giraffe" in vocab and "dog" in vocab and missing == ["zebra"]
    with pytest.raises(FileNotFoundError, match="split lists"):
        held_out_ids(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="caption-text folder"):
        load_corpus(str(tmp_path / "nowhere"))


@pytest.mark.realdata
def test_the_shared_corpus_holds_no_caption_of_a_dev_or_test_photo(shared_data):
    """caption-text was made without them; the reader holds them out again, by id, whatever a corpus holds."""
    held = held_out_ids(os.path.join(shared_data, "flickr8k"), [os.path.join(shared_data, "coco-mini")])
    assert len(held) == 2000 + 80
    kept, report = load_corpus(os.path.join(shared_data, "caption-text"), held)
    assert len(kept) == 168_053 and sum(r["held_out"] for r in report.values()) == 0
    assert not {c.photo_id for c in kept} & held
    flickr30k = read_flickr_tokens(os.path.join(shared_data, "caption-text", "flickr30k", "Flickr30k.token.txt"),
                                   "flickr30k")
    assert len(flickr30k) == 118_115
