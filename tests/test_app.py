"""The app's handlers, called directly: captions, references, options, compare, explain, cards."""

import json
import os

import numpy as np
import pytest
from PIL import Image

os.environ["CAPTION_APP_NO_DEMO"] = "1"  # import app without building the default page

import gradio as gr  # noqa: E402

import app  # noqa: E402
from caption_core.references import References  # noqa: E402
from caption_core.serving import CaptionService, ServiceConfig  # noqa: E402


def test_page_lists_bundles_and_missing_encoders(app_setup):
    demo, _, _ = app_setup
    service = demo.service
    assert service.bundles.names == ["tiny-a", "tiny-b"]
    missing = dict(service.bundles.missing_encoders())
    assert set(missing) == {"xception", "vit_pretrained", "dinov2", "efficientnet_lite0", "efficientnet_lite1",
                            "efficientnet_lite2"}  # concat is made from other bundles, never "missing"
    assert missing["xception"] == "python -m training build --encoder xception"
    table = app.encoder_table(service)
    assert "not built" in table and "python -m training build --encoder efficientnet_lite0" in table
    assert len(demo.example_paths) == 3
    # the Encoders tab's bar charts: each bundle's test scores beside the language-only baseline
    rows = service.score_rows()
    assert [(r["model"], r["kind"]) for r in rows] == [("tiny-a", "bundle"), ("tiny-b", "bundle"),
                                                       ("language-only baseline", "baseline")]
    assert rows[-1]["CIDEr"] == 0.07 and rows[0]["BLEU-4"] == 0.1


def test_caption_handler_with_references_matched_by_content(app_setup, tmp_path):
    demo, data, _ = app_setup
    h = demo.handlers
    photo = demo.example_paths[0]
    copy = tmp_path / "renamed_upload.png"  # a re-encoded copy under another name
    Image.open(photo).save(copy)
    md, refs_md, details = h.caption(str(copy), "tiny-a", "beam", {"beam_width": 2, "max_length": 10, "num_return": 2})
    assert details["captions"][0]["caption"] and len(details["captions"]) == 2
    assert details["reference_image"] == os.path.basename(photo)
    assert "Reference captions" in refs_md and "BLEU-4" in details["captions"][0] and "CIDEr" in details["captions"][0]
    assert md.startswith("### ")
    unknown = np.full((30, 30, 3), 77, np.uint8)
    _, refs_md, details = h.caption(unknown, "tiny-a", "greedy")
    assert details["reference_image"] is None and "Not a Flickr8k photo" in refs_md


def test_consensus_through_the_page_reorders_the_beams_captions(app_setup):
    """The page's "Consensus of the beams" control: the same captions as beam search's n-best, in the order of their
    expected agreement (each caption's, from consensus_order, highest first)."""
    demo, _, _ = app_setup
    h = demo.handlers
    opts = {"beam_width": 4, "max_length": 10, "num_return": 4}
    plain = h.caption(demo.example_paths[0], "tiny-a", "beam", opts)[2]
    agreed = h.caption(demo.example_paths[0], "tiny-a", "beam", {**opts, "consensus": True,
                                                                   "consensus_temperature": 0.0})[2]
    assert agreed["options"]["consensus"] is True and agreed["options"]["consensus_temperature"] == 0.0
    assert sorted(c["caption"] for c in agreed["captions"]) == sorted(c["caption"] for c in plain["captions"])
    from caption_core.decoding import Hypothesis, consensus_order

    ids = {c["caption"]: c["caption"].split() for c in plain["captions"]}
    vocab = {w: i + 4 for i, w in enumerate(sorted({w for v in ids.values() for w in v}))}
    pool = [Hypothesis([vocab[w] for w in ids[c["caption"]]], 0.0, 0.0) for c in plain["captions"]]
    want = [" ".join(sorted(vocab, key=vocab.get)[t - 4] for t in h_.tokens) for h_ in consensus_order(pool, 0.0)]
    assert [c["caption"] for c in agreed["captions"]] == want  # equal weights: the order from the words alone
    assert want != [c["caption"] for c in plain["captions"]]  # (this tiny decoder's beams: consensus reorders them)
    agreements = [c["agreement"] for c in agreed["captions"]]  # what ordered them, in the API's details
    assert agreements == sorted(agreements, reverse=True) and all(0 < a <= 1 for a in agreements)
    assert "agreement" not in plain["captions"][0]


def test_sampling_options_and_seed(app_setup):
    demo, _, _ = app_setup
    h = demo.handlers
    opts = {"temperature": 0.8, "top_k": 5, "top_p": 0.9, "no_repeat_ngram_size": 2, "max_length": 8, "num_return": 3,
            "seed": 42, "beam_width": 3}  # the page sends every control; sampling ignores beam_width
    a = h.caption(demo.example_paths[1], "tiny-b", "sample", opts)[2]
    b = h.caption(demo.example_paths[1], "tiny-b", "sample", opts)[2]
    assert a["captions"] == b["captions"] and len(a["captions"]) == 3
    assert a["options"]["top_k"] == 5 and a["options"]["seed"] == 42 and "beam_width" not in a["options"]
    assert h.caption(demo.example_paths[1], "tiny-b", "sample", {**opts, "seed": -1})[2]["options"]["seed"] is None
    with pytest.raises(gr.Error, match="top_p must be in"):
        h.caption(demo.example_paths[1], "tiny-b", "sample", {"top_p": 3})
    with pytest.raises(gr.Error, match="unknown decoding options"):
        h.caption(demo.example_paths[1], "tiny-b", "beam", {"beams": 3})
    with pytest.raises(gr.Error, match="unknown decoding strategy"):
        h.caption(demo.example_paths[1], "tiny-b", "nucleus")


def test_controls_come_from_the_strategy_registry(app_setup):
    """Every registered option has a control on the page, shown exactly for the strategies that read it."""
    from caption_core.decoding import ALL_OPTIONS, STRATEGIES

    demo, _, _ = app_setup
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert {o.title for o in ALL_OPTIONS.values()} <= labels
    radio = [b for b in demo.blocks.values() if getattr(b, "label", None) == "Decoding strategy"][0]
    assert [c[1] for c in radio.choices] == list(STRATEGIES)
    for name, s in STRATEGIES.items():
        assert app.visible_options(name) == {o.name for o in s.options}


def test_compare_and_explain_and_card(app_setup):
    demo, _, _ = app_setup
    h = demo.handlers
    table, refs_md, details = h.compare(demo.example_paths[0])
    assert [r["bundle"] for r in details["rows"]] == ["tiny-a", "tiny-b"] and all(r["caption"] for r in details["rows"])
    assert all("CIDEr" in r and "BLEU-4" in r for r in details["rows"]) and "Reference captions" in refs_md
    assert table.count("<tr>") == 3 and "tiny-b" in table
    gallery, caption = h.explain(demo.example_paths[0], "tiny-a", "a red dog")
    assert caption == "a red dog" and [label.split()[0] for _, label in gallery] == ["a", "red", "dog"]
    assert all(isinstance(img, Image.Image) for img, _ in gallery)
    assert "# tiny-b" in h.card("tiny-b")


@pytest.mark.parametrize("bad, message", [
    (None, "Upload a photo"),
    (b"definitely not an image", "not an image"),
])
def test_bad_inputs_give_clear_errors(app_setup, tmp_path, bad, message):
    demo, _, _ = app_setup
    src = bad
    if isinstance(bad, bytes):
        src = tmp_path / "bad.jpg"
        src.write_bytes(bad)
        src = str(src)
    with pytest.raises(gr.Error, match=message):
        demo.handlers.caption(src, "tiny-a")
    with pytest.raises(gr.Error, match="No bundle named"):
        demo.handlers.caption(demo.example_paths[0], "nope")


def test_a_caption_does_not_wait_for_a_slow_reference_index(app_setup, monkeypatch, tmp_path):
    """While the index builds (a first start), lookup gives up after `wait` seconds instead of
    holding the caption; once built, the same photo is found."""
    import threading
    import time

    _, data, _ = app_setup
    release = threading.Event()
    original = References._built

    def slow(self):
        release.wait(30)
        return original(self)

    monkeypatch.setattr(References, "_built", slow)
    refs = References(data, 3, cache_dir=str(tmp_path))
    img = Image.open(refs.examples[0]).convert("RGB")
    t = time.perf_counter()
    assert refs.lookup(img, wait=0.2) is None
    assert time.perf_counter() - t < 2
    release.set()
    assert refs.ready.wait(30)
    assert refs.lookup(img) is not None


def test_messages_never_show_server_paths(tiny_parts, tmp_path):
    """A damaged bundle and an unreadable upload are reported by name: no folder of the server in the text."""
    from caption_core.bundle import save_bundle

    enc, dec, vocab = tiny_parts
    folder = save_bundle(str(tmp_path / "weights" / "broken"), encoder=enc, decoder=dec, vocab=vocab)
    with open(os.path.join(folder, "vocab.json"), "a") as f:
        f.write(" ")
    handlers = app.Handlers(CaptionService(ServiceConfig(weights_dir=str(tmp_path / "weights"))))
    blank = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(gr.Error) as err:
        handlers.caption(blank, "broken")
    assert "broken" in str(err.value) and str(tmp_path) not in str(err.value) and "checksum" in str(err.value)
    assert handlers.service.bundles.state("broken") == "failed"
    upload = tmp_path / "gradio" / "0123abcd" / "holiday.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"not a photo at all")
    with pytest.raises(gr.Error) as err:
        handlers.caption(str(upload), "broken")
    assert "'holiday.jpg'" in str(err.value) and str(tmp_path) not in str(err.value)


def test_the_encoders_tab_shows_the_probes_with_the_speeds(tmp_path):
    (tmp_path / "probes.json").write_text(json.dumps({
        "subset": {"train_images": 500, "test_images": 500, "train": "first 50 photos per class"},
        "rows": [{"encoder": "xception", "weights": "pretrained", "accuracy": 0.716},
                 {"encoder": "xception", "weights": "random init", "accuracy": 0.301},
                 {"encoder": "vit_pretrained", "weights": "pretrained", "error": "OfflineError: ..."}]}))
    (tmp_path / "encoder_speed.json").write_text(json.dumps({"rows": [{"encoder": "xception", "images_per_second": 10.4}]}))
    table = app.probe_table(str(tmp_path))
    assert "| xception | 71.6% | 30.1% | 10.4 |" in table
    assert "| vit_pretrained | not available here | - | - |" in table
    assert app.probe_table(str(tmp_path / "none")) == ""


def test_compare_uses_each_bundles_own_default_and_says_which(app_setup, tmp_path):
    """Without a strategy, each bundle captions with its own default decoding; a row says which one it used; a
    photo that is not a dataset photo gets no empty score columns."""
    from app import compare_html

    demo, _, _ = app_setup
    h = demo.handlers
    own_table, _, own = h.compare(demo.example_paths[0], "", {})
    assert [r["strategy"] for r in own["rows"]] == ["beam", "beam"] and all(r["decoding"] for r in own["rows"])
    assert "<th>decoding</th>" in own_table and "beam" in own_table
    picked_table, _, picked = h.compare(demo.example_paths[0], "greedy", {"max_length": 8})
    assert [r["decoding"] for r in picked["rows"]] == ["greedy", "greedy"]
    photo = tmp_path / "mine.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo)
    table, refs_md, a = h.compare(str(photo), "", {})
    assert a["reference_image"] is None and not any("CIDEr" in r for r in a["rows"])
    assert "CIDEr" not in table and "BLEU-4" not in table and "Not a Flickr8k photo" in refs_md
    assert "CIDEr" in compare_html([{**own["rows"][0], "CIDEr": 0.5}])


def test_the_page_draws_the_detectors_boxes_and_says_who_guided(app_setup):
    """After a caption the photo is shown with the detector's labelled boxes (in the photo's pixels); the caption
    marks the words guidance required, and says whether the detector or the classifier required them."""
    from caption_core.formatting import caption_md, describe_objects, guidance_md

    import skimage.data

    demo, _, _ = app_setup
    h = demo.handlers
    photo = skimage.data.chelsea()  # a cat the detector sees
    _, _, details = h.caption(photo, "tiny-a", "greedy")
    if details["objects"] is None:
        pytest.skip("no COCO detector here (its carrier is not installed)")
    assert details["objects"]["main"] == "cat" and details["detect_ms"] > 0
    shown, boxes = h.service.object_boxes(photo, details["objects"])
    assert shown.size[0] <= 480 and len(boxes) == len(details["objects"]["detections"]) >= 1
    w, h_ = shown.size
    for ((x0, y0, x1, y1), label), d in zip(boxes, details["objects"]["detections"]):
        assert label.startswith(d["category"]) and 0 <= x0 <= x1 <= w + 1 and 0 <= y0 <= y1 <= h_ + 1
    update = h.boxes(photo, details)
    assert getattr(update, "visible", None) is True and "What the detector sees: cat" in update.label
    assert describe_objects({"counts": {"person": 2, "dog": 1}}) == "person x2, dog"
    g = {"word": "dogs", "probability": 0.91, "top_class": "ski", "class_probability": 0.4, "required_words": ["dogs"],
         "banned_words": [], "source": "detector", "category": "dog", "count": 2, "met": True}
    md = caption_md({"captions": [{"caption": "two dogs run in the snow", "score": -1.0}], "reference_image": None,
                     "imagenet_top5": [], "strategy": "guided", "guidance": g, "options": {"guide_threshold": 1.0},
                     "bundle": "b", "encode_ms": 1.0, "decode_ms": 1.0, "detect_ms": 1.0,
                     "objects": {"counts": {"dog": 2}}})
    assert "### two **dogs** run in the snow" in md and "detect 1 ms" in md
    assert "Guided by the detector: **dogs** required (the detector's main object: dog, 2 of them" in md
    both = guidance_md({**g, "source": "both", "word": "cat", "category": "cat", "count": 1}, {})
    assert both.startswith("*Guided by the detector and the classifier: **cat**") and "the classifier agrees: ski" in both
